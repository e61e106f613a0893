# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The Ansible side of the modules: shared argument specs and the one place
where engine errors become fail_json.  This is the only file under
module_utils that imports Ansible; the engine and the CLI never import it.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import importlib
import traceback

from ansible.module_utils.basic import env_fallback, missing_required_lib

from .core.errors import DrkitError

try:
    from ansible.module_utils.common.text.converters import to_native
except ImportError:  # pragma: no cover
    to_native = str


def postgres_argument_spec():
    return dict(
        login_host=dict(type="str", default="localhost", aliases=["host"]),
        port=dict(type="int", default=5432, aliases=["login_port"]),
        login_user=dict(type="str", default="postgres"),
        login_password=dict(type="str", no_log=True, fallback=(env_fallback, ["PGPASSWORD"])),
        ssl_mode=dict(type="str", default="prefer",
                      choices=["allow", "disable", "prefer", "require", "verify-ca", "verify-full"]),
        connect_timeout=dict(type="int", default=10),
        pg_bin_dir=dict(type="path"),
    )


def storage_argument_spec():
    return dict(
        storage_url=dict(type="str", required=True),
        endpoint_url=dict(type="str", fallback=(env_fallback, ["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"])),
        region=dict(type="str", fallback=(env_fallback, ["AWS_REGION", "AWS_DEFAULT_REGION"])),
        access_key=dict(type="str", no_log=True, aliases=["aws_access_key"],
                        fallback=(env_fallback, ["AWS_ACCESS_KEY_ID", "AWS_ACCESS_KEY"])),
        secret_key=dict(type="str", no_log=True, aliases=["aws_secret_key"],
                        fallback=(env_fallback, ["AWS_SECRET_ACCESS_KEY", "AWS_SECRET_KEY"])),
        session_token=dict(type="str", no_log=True, fallback=(env_fallback, ["AWS_SESSION_TOKEN"])),
        profile=dict(type="str", fallback=(env_fallback, ["AWS_PROFILE"])),
        ca_bundle=dict(type="path", fallback=(env_fallback, ["AWS_CA_BUNDLE"])),
        validate_certs=dict(type="bool", default=True),
    )


def redis_argument_spec():
    """Connection options of the Redis modules (doc fragment drkit.backup.redis)."""
    return dict(
        login_host=dict(type="str", default="localhost"),
        login_port=dict(type="int", default=6379),
        login_user=dict(type="str"),
        login_password=dict(type="str", no_log=True, fallback=(env_fallback, ["REDISCLI_AUTH"])),
        tls=dict(type="bool", default=False),
        tls_ca_cert=dict(type="path"),
        tls_cert=dict(type="path"),
        tls_key=dict(type="path", no_log=False),
        tls_validate_certs=dict(type="bool", default=True),
        connect_timeout=dict(type="int", default=10),
    )


def compression_argument_spec():
    """zstd options of the backup modules (doc fragment drkit.backup.compression)."""
    return dict(
        compression_level=dict(type="int", default=3),
        compression_threads=dict(type="int", default=0),
    )


def backup_selector_spec():
    """Which backup a restore or verify takes (doc fragment drkit.backup.backup_selector)."""
    return dict(
        backup_id=dict(type="str", default="latest"),
        before=dict(type="str"),
    )


def metrics_argument_spec():
    return dict(
        metrics_dir=dict(type="path"),
        job_name=dict(type="str"),
    )


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
    module with it; a DrkitError becomes a clean fail_json."""
    try:
        changed, result = func(*args, **kwargs)
    except DrkitError as e:
        details = dict((k, v) for k, v in e.details.items() if k not in ("msg", "failed", "changed"))
        module.fail_json(msg=to_native(e), error=type(e).__name__, **details)
    except KeyboardInterrupt:
        module.fail_json(msg="Interrupted; nothing was recorded as a backup for this run")
    except Exception as e:  # pylint: disable=broad-except
        module.fail_json(msg="Unexpected error: %s" % to_native(e), exception=traceback.format_exc())
    result = dict(result)
    result["changed"] = changed
    module.exit_json(**result)
