# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Verifying a physical backup (pg_verify dispatches pg_physical backups
here): ``checksum`` (every artifact and the WAL the backup needs are in the
archive), ``structure`` (extract into a scratch directory, pg_verifybackup
with that WAL fetched from the archive), ``restore`` (replay to consistency
in a ScratchPostgres on a free loopback port, SQL checks, stop, remove).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import shlex
import shutil
import time

from ..core.crypto import Keyring
from ..core.errors import DrkitError, IntegrityError, WaitTimeout
from ..core.options import Option
from ..core.osutil import atomic_write
from ..core.process import LocalRunner
from ..core.janitor import dir_prefix
from ..core.scratch import make_scratch_dir
from ..repo.verification import Verification, planned
from ..repo.wal_layout import backup_segments, backup_timelines
from ..storage.factory import open_storage, storage_options
from .backup_physical import ARTIFACT
from .base_restore import require_base_key, restore_base_backup
from .checks import failed_checks, normalise_checks, run_checks
from .client import find_tool
from .cluster import neutral_recovery_settings
from .scratch import ScratchPostgres
from .wal_archive import fetch_file
from .wal_segments import list_history, missing_segments

# Options only the physical test-restore reads; drkit config-file keys, not
# pg_verify module options (the module uses the defaults).
PHYSICAL_OPTIONS = (
    Option("timeout", "float", default=600, above=0, module=False,
           help="seconds the scratch server may take to replay to consistency"),
    Option("scratch_user", "str", default="postgres", module=False,
           help="superuser of the backed-up cluster, for the SQL checks"),
    Option("database", "str", default="postgres", module=False, help="database the SQL checks run in"),
)

# --------------------------------------------------------------------------
# verify_physical: pg_verify's physical twin


def verify_physical(p, entry, check_mode=False, runner=None, progress=None):
    """Verify a pg_physical backup at p['level'] (checksum | structure |
    restore); ``p``: pg_verify's resolved options. Writes a verification
    record like pg_verify. Returns (changed, result); raises
    VerificationFailed on failure."""
    runner = runner or LocalRunner()
    progress = progress or (lambda msg: None)
    level = p["level"]
    checks = normalise_checks(p["checks"])
    storage = open_storage(p["storage_url"], **storage_options(p))
    manifest = entry.manifest
    data = manifest["data"]
    keyring = Keyring(p["encryption_identity_file"])
    if level != "checksum":
        # an encrypted backup without its identity: before any scratch directory (check mode too)
        require_base_key(entry, keyring)
    if check_mode:
        return planned(entry, level, "physical backup")
    job = p["job_name"] or "pg_physical_%s" % manifest["source"].get("port", "unknown")
    check_results, facts = [], {}
    v = Verification(storage, p, entry, level, job, progress)
    with v:
        with v.timed("download_seconds"):
            # the base backup itself is read once below, while it is extracted
            v.check_artifacts(skip=[ARTIFACT] if level != "checksum" else [])
            needed = backup_segments(data, list_history(storage))
            missing = missing_segments(storage, needed)
            if missing:
                raise IntegrityError("WAL needed by the backup is missing from the archive: %s" % ", ".join(missing))
        if level != "checksum":
            check_results = _in_scratch(v, runner, needed, checks, facts, keyring)
    return v.finish(tables=[], checks=check_results, physical=facts)


def _in_scratch(v, runner, needed, checks, facts, keyring):
    """structure and restore: extract into a scratch directory, pg_verifybackup
    against the archived WAL, then (restore) replay to consistency in a scratch
    server and run the checks there. Returns the check results."""
    p, storage, entry, progress = v.params, v.storage, v.entry, v.progress
    data = entry.manifest["data"]
    timeout = p["timeout"]
    scratch_root = make_scratch_dir(prefix=dir_prefix("verify-phys"), parent=p["work_dir"] or None)
    v.cleanup(shutil.rmtree, scratch_root, True)
    base = os.path.join(scratch_root, "pg")
    os.mkdir(base, 0o711)
    data_dir = os.path.join(base, "data")
    wal_dir = os.path.join(scratch_root, "wal")
    os.mkdir(wal_dir, 0o755)
    with v.timed("restore_seconds"):
        progress("extracting %s into scratch %s" % (entry.backup_id, data_dir))
        restore_base_backup(storage, entry, data_dir, None, progress, keyring=keyring)
        # plus the history files of the timelines the backup switched to (replay follows them)
        for name in needed + ["%08X.history" % t for t in backup_timelines(needed)]:
            fetch_file(storage, name, os.path.join(wal_dir, name), keyring=keyring)
    bin_dir = p["pg_bin_dir"] or os.path.dirname(
        find_tool("pg_verifybackup", data.get("server_version_num")))
    progress("pg_verifybackup against PostgreSQL's backup_manifest and the archived WAL")
    rc, out, err = runner.run([os.path.join(bin_dir, "pg_verifybackup"), "--wal-directory", wal_dir,
                               data_dir], timeout=3600)
    facts["pg_verifybackup"] = (out.decode("utf-8", "replace") + err).strip()[-2000:]
    if rc != 0:
        v.finding("pg_verifybackup failed: %s" % facts["pg_verifybackup"])
    if v.level != "restore" or not v.passed:
        return []
    for name in os.listdir(wal_dir):
        os.chmod(os.path.join(wal_dir, name), 0o644)
    # On the command line, so they override every recovery setting the
    # backup's own files may carry (an older drkit pitr left some in the
    # clusters it promoted: two targets make PostgreSQL refuse to start).
    settings = {"restore_command": "cp %s/%%f %%p" % shlex.quote(wal_dir), "recovery_target_action": "promote",
                "recovery_target_timeline": "current", "lc_messages": "C"}
    settings.update(neutral_recovery_settings("recovery_target", "immediate"))
    server = ScratchPostgres(base, password=None, bin_dir=bin_dir, initdb=False, data_dir=data_dir,
                             settings=settings)
    v.cleanup(_stop_quietly, server)
    atomic_write(os.path.join(data_dir, "recovery.signal"), "")
    if os.path.exists(os.path.join(data_dir, "standby.signal")):
        # A backup taken from a standby: replay from the archive only, never in
        # standby mode streaming from the primary_conninfo it was taken with.
        os.unlink(os.path.join(data_dir, "standby.signal"))
    progress("replaying to consistency in a scratch server")
    with v.timed("replay_seconds"):
        server.start(timeout=timeout)
        wait_promoted(server, timeout)
    sysid = server.psql("SELECT system_identifier FROM pg_control_system()").strip()
    facts["system_identifier"] = sysid
    if sysid != str(data["system_identifier"]):
        v.finding("the restored cluster has system identifier %s, the manifest says %s" % (
            sysid, data["system_identifier"]))
    facts["databases"] = int(server.psql("SELECT count(*) FROM pg_database WHERE datallowconn"))
    if not checks:
        return []
    cp = {"login_host": server.socket_dir, "port": server.port,
          "login_user": p["scratch_user"], "login_password": None, "ssl_mode": "disable", "connect_timeout": 10}
    results = run_checks(cp, p["database"], checks)
    for problem in failed_checks(results):
        v.finding(problem)
    return results


def _stop_quietly(server):
    try:
        server.stop(mode="immediate")
    except DrkitError:
        pass  # the directory goes next; the atexit registry stops a stray server


def wait_promoted(server, timeout):
    """ScratchPostgres.start() returns once hot standby accepts connections;
    the checks need the promoted (consistent, read-write) cluster."""
    deadline = time.time() + timeout
    while server.psql("SELECT pg_is_in_recovery()") != "f":
        if time.time() > deadline:
            raise WaitTimeout("The scratch server did not finish recovery within %s s" % timeout)
        time.sleep(0.2)
