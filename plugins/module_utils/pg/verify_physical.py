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

from ..core.errors import ConfigError, DrkitError, IntegrityError, ToolError, WaitTimeout
from ..core.osutil import atomic_write
from ..core.process import LocalRunner
from ..core.scratch import make_scratch_dir
from ..core.stream import read_stored
from ..repo import manifest as mf
from ..repo.verification import LEVELS, finish_verification
from ..repo.wal_layout import DEFAULT_SEGMENT_SIZE, segment_range
from ..storage.factory import open_storage, storage_options
from .backup_physical import ARTIFACT
from .base_restore import restore_base_backup
from .checks import normalise_checks, run_checks
from .client import find_tool
from .scratch import ScratchPostgres
from .wal_archive import fetch_file
from .wal_segments import missing_segments

# --------------------------------------------------------------------------
# verify_physical: pg_verify's physical twin


def verify_physical(params, entry, check_mode=False, runner=None, progress=None):
    """Verify a pg_physical backup at params['level'] (checksum | structure |
    restore); writes a verification record like pg_verify. Returns
    (changed, result); raises pg_verify.VerificationFailed on failure."""
    runner = runner or LocalRunner()
    progress = progress or (lambda msg: None)
    level = params.get("level") or "structure"
    if level not in LEVELS:
        raise ConfigError("level must be one of %s, got %r" % (", ".join(LEVELS), level))
    checks = normalise_checks(params.get("checks"))
    storage = open_storage(params.get("storage_url"), **storage_options(params))
    manifest = entry.manifest
    data = manifest["data"]
    if check_mode:
        return True, {"backup_id": entry.backup_id, "level": level, "passed": None,
                      "msg": "Would verify physical backup %s at level %s" % (entry.backup_id, level)}
    seg_size = int(data.get("wal_segment_size") or DEFAULT_SEGMENT_SIZE)
    job = params.get("job_name") or "pg_physical_%s" % manifest["source"].get("port", "unknown")
    started = mf.utcnow()
    t0 = time.time()
    findings, check_results, timings = [], [], {}
    passed = False
    scratch_root = None
    server = None
    facts = {}
    try:
        t1 = time.time()
        for art in manifest["artifacts"]:
            key = mf.artifact_key(entry.backup_id, art["name"])
            if art["name"] == ARTIFACT and level != "checksum":
                continue  # read once below, while it is extracted
            if storage.stat(key) is None:
                raise IntegrityError("Artifact %s of backup %s is missing" % (art["name"], entry.backup_id))
            read_stored(storage, key, art["size"], art["sha256"])
        needed = segment_range(data["wal_start_segment"], data["wal_stop_segment"], seg_size) \
            if data["wal_start_segment"][:8] == data["wal_stop_segment"][:8] else \
            [data["wal_start_segment"], data["wal_stop_segment"]]
        missing = missing_segments(storage, needed)
        if missing:
            raise IntegrityError("WAL needed by the backup is missing from the archive: %s" % ", ".join(missing))
        timings["download_seconds"] = round(time.time() - t1, 3)
        if level != "checksum":
            scratch_root = make_scratch_dir(prefix="drkit-verify-phys-", parent=params.get("work_dir") or None)
            base = os.path.join(scratch_root, "pg")
            os.mkdir(base, 0o711)
            data_dir = os.path.join(base, "data")
            wal_dir = os.path.join(scratch_root, "wal")
            os.mkdir(wal_dir, 0o755)
            t2 = time.time()
            progress("extracting %s into scratch %s" % (entry.backup_id, data_dir))
            restore_base_backup(storage, entry, data_dir, None, progress)
            for name in needed:
                fetch_file(storage, name, os.path.join(wal_dir, name))
            timings["restore_seconds"] = round(time.time() - t2, 3)
            bin_dir = params.get("pg_bin_dir") or os.path.dirname(
                find_tool("pg_verifybackup", data.get("server_version_num")))
            progress("pg_verifybackup against PostgreSQL's backup_manifest and the archived WAL")
            rc, out, err = runner.run([os.path.join(bin_dir, "pg_verifybackup"), "--wal-directory", wal_dir,
                                       data_dir], timeout=3600)
            facts["pg_verifybackup"] = (out.decode("utf-8", "replace") + err).strip()[-2000:]
            if rc != 0:
                findings.append("pg_verifybackup failed: %s" % facts["pg_verifybackup"])
            if level == "restore" and not findings:
                for name in os.listdir(wal_dir):
                    os.chmod(os.path.join(wal_dir, name), 0o644)
                server = ScratchPostgres(base, password=None, bin_dir=bin_dir, initdb=False, data_dir=data_dir,
                                         settings={"restore_command": "cp %s/%%f %%p" % shlex.quote(wal_dir),
                                                   "recovery_target": "immediate",
                                                   "recovery_target_action": "promote",
                                                   "recovery_target_timeline": "current",
                                                   "lc_messages": "C"})
                atomic_write(os.path.join(data_dir, "recovery.signal"), "")
                t3 = time.time()
                progress("replaying to consistency in a scratch server")
                server.start(timeout=float(params.get("timeout") or 600))
                wait_promoted(server, float(params.get("timeout") or 600))
                timings["replay_seconds"] = round(time.time() - t3, 3)
                sysid = server.psql("SELECT system_identifier FROM pg_control_system()").strip()
                facts["system_identifier"] = sysid
                if sysid != str(data["system_identifier"]):
                    findings.append("the restored cluster has system identifier %s, the manifest says %s" % (
                        sysid, data["system_identifier"]))
                facts["databases"] = int(server.psql("SELECT count(*) FROM pg_database WHERE datallowconn"))
                if checks:
                    cp = {"login_host": server.socket_dir, "port": server.port,
                          "login_user": params.get("scratch_user") or "postgres", "login_password": None,
                          "ssl_mode": "disable", "connect_timeout": 10}
                    check_results = run_checks(cp, params.get("database") or "postgres", checks)
                    findings.extend("check %r failed%s" % (
                        r["name"], (": " + r["error"]) if r.get("error") else " (value %r)" % (r.get("value"),))
                        for r in check_results if not r["ok"])
        passed = not findings
    except (IntegrityError, ToolError, WaitTimeout) as e:
        findings.append(str(e))
        passed = False
    finally:
        if server is not None:
            try:
                server.stop(mode="immediate")
            except DrkitError:
                pass
        if scratch_root:
            shutil.rmtree(scratch_root, ignore_errors=True)

    return finish_verification(storage, params, entry, job, level, passed, started, t0, timings, findings,
                               {"tables": [], "checks": check_results, "physical": facts})


def wait_promoted(server, timeout):
    """ScratchPostgres.start() returns once hot standby accepts connections;
    the checks need the promoted (consistent, read-write) cluster."""
    deadline = time.time() + timeout
    while server.psql("SELECT pg_is_in_recovery()") != "f":
        if time.time() > deadline:
            raise WaitTimeout("The scratch server did not finish recovery within %s s" % timeout)
        time.sleep(0.2)
