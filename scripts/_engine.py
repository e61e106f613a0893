# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Load the drkit engine (plugins/module_utils) from this checkout as the
package ``drkit_engine``, so scripts and benchmarks can use it without an
installed collection or Ansible::

    from _engine import load_engine
    load_engine()
    from drkit_engine.demo import sample_data

The engine's relative imports (``from .errors import ...``) resolve inside
that package.
"""

import importlib.util
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENGINE_DIR = os.path.join(ROOT, "plugins", "module_utils")
PACKAGE = "drkit_engine"


def load_engine():
    """Import plugins/module_utils as ``drkit_engine`` (once) and return it."""
    mod = sys.modules.get(PACKAGE)
    if mod is not None:
        return mod
    spec = importlib.util.spec_from_file_location(PACKAGE, os.path.join(ENGINE_DIR, "__init__.py"),
                                                  submodule_search_locations=[ENGINE_DIR])
    mod = importlib.util.module_from_spec(spec)
    sys.modules[PACKAGE] = mod
    try:
        spec.loader.exec_module(mod)
    except BaseException:
        del sys.modules[PACKAGE]
        raise
    return mod


def engine_module(name):
    """``engine_module("demo.sample_data")`` -> the drkit_engine.demo.sample_data module."""
    load_engine()
    return importlib.import_module("%s.%s" % (PACKAGE, name))
