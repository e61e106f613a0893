# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The drkit engine of this checkout (plugins/module_utils) as the package
``drkit_engine``, for scripts and benchmarks, without an installed collection
or Ansible::

    from _engine import load_engine
    load_engine()
    from drkit_engine.demo import sample_data

The loader itself is bin/drkit's load_engine() (one loader for the command
line, the scripts and the benchmarks; bin/drkit ships with the collection,
scripts/ does not), read here from that file.
"""

import importlib.machinery
import importlib.util
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN_DRKIT = os.path.join(ROOT, "bin", "drkit")
PACKAGE = "drkit_engine"
_BIN_MODULE = "_drkit_bin"


def _bin_drkit():
    """bin/drkit as a module (its code under ``if __name__ == "__main__"`` does not run)."""
    mod = sys.modules.get(_BIN_MODULE)
    if mod is None:
        loader = importlib.machinery.SourceFileLoader(_BIN_MODULE, BIN_DRKIT)
        mod = importlib.util.module_from_spec(importlib.util.spec_from_loader(_BIN_MODULE, loader))
        # no bin/__pycache__ in the checkout (bin/ ships whole)
        dont_write, sys.dont_write_bytecode = sys.dont_write_bytecode, True
        try:
            loader.exec_module(mod)
        finally:
            sys.dont_write_bytecode = dont_write
        sys.modules[_BIN_MODULE] = mod
    return mod


def load_engine():
    """Import plugins/module_utils as ``drkit_engine`` (once) and return it."""
    return _bin_drkit().load_engine()


def engine_module(name):
    """``engine_module("demo.sample_data")`` -> the drkit_engine.demo.sample_data module."""
    load_engine()
    return importlib.import_module("%s.%s" % (PACKAGE, name))
