# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The Ansible side of the modules: argument specs built from the engine's
option registry (core.options) and the one place where engine errors become
fail_json.  This is the only file under module_utils that imports Ansible;
the engine and the CLI never import it.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import importlib
import traceback

from ansible.module_utils.basic import env_fallback, missing_required_lib

from .container.client import DOCKER, DOCKER_ENGINE
from .core import janitor
from .core.crypto import DECRYPTION, ENCRYPTION
from .core.errors import DrkitError, Terminated
from .core.metrics import METRICS
from .core.progress import Progress
from .core.signing import SIGNING, VERIFYING
from .core.stream import COMPRESSION
from .pg import client as pg_client
from .pg.dump import SESSION_SETTINGS
from .redis import client as redis_client
from .repo.manifest import BACKUP_SELECTOR
from .storage.factory import STORAGE

try:
    from ansible.module_utils.common.text.converters import to_native
except ImportError:  # pragma: no cover
    to_native = str


def argument_spec(options):
    """An AnsibleModule argument_spec from engine options (core.options):
    type, default, choices, aliases, no_log, env fallback, elements and
    required, as the registry defines them. Ranges have no place in an
    argument_spec: the engine's resolve() checks them and fails the module
    through run_engine. Options with ``module=False`` are drkit config-file
    keys only."""
    spec = {}
    for opt in options:
        if not opt.module:
            continue
        s = {"type": opt.type}
        if opt.default is not None:
            s["default"] = opt.default_value()
        if opt.choices:
            s["choices"] = list(opt.choices)
        if opt.aliases:
            s["aliases"] = list(opt.aliases)
        if opt.no_log is not None:
            s["no_log"] = opt.no_log
        if opt.env:
            s["fallback"] = (env_fallback, list(opt.env))
        if opt.elements:
            s["elements"] = opt.elements
        if opt.required:
            s["required"] = True
        spec[opt.name] = s
    return spec


# One spec function per doc fragment (plugins/doc_fragments), for modules
# that compose their spec by hand; tests/unit/plugins/modules checks that
# each fragment documents exactly its function's options.


def postgres_argument_spec():
    """doc fragment drkit.backup.postgres"""
    return argument_spec(pg_client.CONNECTION)


def storage_argument_spec():
    """doc fragment drkit.backup.storage"""
    return argument_spec(STORAGE)


def redis_argument_spec():
    """doc fragment drkit.backup.redis"""
    return argument_spec(redis_client.CONNECTION)


def metrics_argument_spec():
    """doc fragment drkit.backup.storage.metrics"""
    return argument_spec(METRICS)


def compression_argument_spec():
    """doc fragment drkit.backup.compression"""
    return argument_spec(COMPRESSION)


def encryption_argument_spec():
    """doc fragment drkit.backup.encryption"""
    return argument_spec(ENCRYPTION)


def decryption_argument_spec():
    """doc fragment drkit.backup.encryption.decryption"""
    return argument_spec(DECRYPTION)


def signing_argument_spec():
    """doc fragment drkit.backup.signing"""
    return argument_spec(SIGNING)


def verify_argument_spec():
    """doc fragment drkit.backup.signing.verify"""
    return argument_spec(VERIFYING)


def backup_selector_argument_spec():
    """doc fragment drkit.backup.backup_selector"""
    return argument_spec(BACKUP_SELECTOR)


def restore_settings_argument_spec():
    """doc fragment drkit.backup.postgres.restore_settings"""
    return argument_spec([SESSION_SETTINGS])


def container_argument_spec():
    """doc fragment drkit.backup.container"""
    return argument_spec(DOCKER)


def container_engine_argument_spec():
    """doc fragment drkit.backup.container.engine"""
    return argument_spec(DOCKER_ENGINE)


def check_libraries(module, names):
    """Fail with Ansible's standard message when a Python library is missing
    on the managed host."""
    for name, pip_name in names:
        try:
            importlib.import_module(name)
        except ImportError:
            module.fail_json(msg=missing_required_lib(pip_name), exception=traceback.format_exc())


def run_engine(module, func, *args, **kwargs):
    """Call an engine function returning (changed, result) and exit the
    module with it; a DrkitError becomes a clean fail_json. A real run first
    removes the temp directories dead drkit processes of this host left
    (core/janitor.py), reported as ``leftovers_removed``. ``metered=True``:
    the function takes ``progress``; it gets a quiet one (a module prints
    nothing but its result) whose byte meters become the result's ``steps``."""
    removed = [] if module.check_mode else janitor.sweep(module.params)
    progress = Progress("quiet") if kwargs.pop("metered", False) else None
    if progress is not None:
        kwargs["progress"] = progress
    try:
        changed, result = func(*args, **kwargs)
    except (DrkitError, Terminated) as e:
        details = dict((k, v) for k, v in e.details.items() if k not in ("msg", "failed", "changed"))
        module.fail_json(msg=to_native(e), error=type(e).__name__, **details)
    except KeyboardInterrupt:
        module.fail_json(msg="Interrupted; nothing was recorded as a backup for this run")
    except Exception as e:  # pylint: disable=broad-except
        module.fail_json(msg="Unexpected error: %s" % to_native(e), exception=traceback.format_exc())
    result = dict(result)
    if progress is not None:
        result["steps"] = progress.steps()
    if removed:
        result["leftovers_removed"] = removed
    result["changed"] = changed
    module.exit_json(**result)
