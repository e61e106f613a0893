# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Role drkit.backup.postgresql_wal_stream on a real PostgreSQL 15 that does
not archive at all (archive_mode off), supervised by cron (no systemd here):
the test plays cron, running the role's cron line as cron would. The role
writes the config (0600) and the line, waits until the archiver's metrics say
it streams, and a second run changes nothing. The line starts the archiver
only when none runs (flock -n), and starts it again after a kill -9."""

import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid

import pytest
from ansible_collections.drkit.backup.plugins.module_utils.core.scratch import make_scratch_dir
from ansible_collections.drkit.backup.plugins.module_utils.pg import cluster
from ansible_collections.drkit.backup.plugins.module_utils.pg.scratch import ScratchPostgres
from helpers import DRKIT, list_keys, run_playbook

ROLE_TASK = {"name": "apply the role", "ansible.builtin.include_role": {"name": "drkit.backup.postgresql_wal_stream"}}
CRON_LINE = re.compile(r"^\* \* \* \* \* (\S+) (.+)$", re.M)


@pytest.fixture
def quiet_cluster(scratch_root):
    base = make_scratch_dir(prefix="walstreamrole-", parent=str(scratch_root))
    server = ScratchPostgres(os.path.join(base, "pg"), password="role-pw-%s" % uuid.uuid4().hex[:6],
                             bin_dir=cluster.find_pg_bindir("15"),
                             settings={"wal_level": "replica", "archive_mode": "off", "fsync": "off"})
    server.start()
    for sub in ("etc", "spool", "metrics", "log", "lock"):  # the archive: the role creates it
        os.mkdir(os.path.join(base, sub), 0o750)
        shutil.chown(os.path.join(base, sub), "postgres", "postgres")
    try:
        yield server, base
    finally:
        subprocess.run(["pkill", "-KILL", "-f", "wal-stream --config %s" % os.path.join(base, "etc")], check=False)
        server.destroy()
        shutil.rmtree(base, ignore_errors=True)


def role_vars(pg, base):
    return {
        "postgresql_wal_stream_name": "pg15",
        "postgresql_wal_stream_storage_url": "file://%s/archive" % base,
        "postgresql_wal_stream_login_host": pg.host, "postgresql_wal_stream_login_port": pg.port,
        "postgresql_wal_stream_login_password": pg.password,
        "postgresql_wal_stream_partial_interval": 1,
        "postgresql_wal_stream_install_runtime": False,
        "postgresql_wal_stream_install_cron": False,
        "postgresql_wal_stream_supervisor": "cron",
        "postgresql_wal_stream_drkit_command": "%s %s" % (sys.executable, DRKIT),
        "postgresql_wal_stream_config_file": os.path.join(base, "etc", "wal-stream.yml"),
        "postgresql_wal_stream_spool_dir": os.path.join(base, "spool", "pg15"),
        "postgresql_wal_stream_metrics_dir": os.path.join(base, "metrics"),
        "postgresql_wal_stream_cron_file": os.path.join(base, "cron"),
        "postgresql_wal_stream_log_file": os.path.join(base, "log", "wal-stream.log"),
        "postgresql_wal_stream_lock_file": os.path.join(base, "lock", "wal-stream.lock"),
        "postgresql_wal_stream_prove_timeout": 90,
    }


def cron_line(path):
    with open(path) as fh:
        m = CRON_LINE.search(fh.read())
    assert m, "no every-minute line in %s" % path
    return m.group(1), m.group(2)


def run_cron_line(path):
    """What cron does with the line: run it as its user through /bin/sh."""
    user, command = cron_line(path)
    return subprocess.Popen(["runuser", "-u", user, "--", "/bin/sh", "-c", command], start_new_session=True)


def streaming(pg):
    return pg.psql("SELECT count(*) FROM pg_stat_replication WHERE application_name = 'drkit_wal_stream' "
                   "AND state = 'streaming'") == "1"


def wait_for(predicate, what, timeout=90):
    deadline = time.time() + timeout
    while not predicate():
        assert time.time() < deadline, what
        time.sleep(0.3)


def test_role_supervises_the_archiver_with_cron(quiet_cluster, tmp_path):
    pg, base = quiet_cluster
    variables = role_vars(pg, base)
    # the WAL encrypted on the host, which holds only the public key
    import pyrage
    variables["postgresql_wal_stream_encryption_recipients"] = [str(pyrage.x25519.Identity.generate().to_public())]
    cron_file = variables["postgresql_wal_stream_cron_file"]

    run = run_playbook([ROLE_TASK], extra_vars=variables, check=True, tmp_dir=tmp_path)
    assert run.rc == 0, run.describe()
    assert not os.path.exists(cron_file) and not os.path.exists(variables["postgresql_wal_stream_config_file"])

    # "cron": the first minute after the line is installed
    started = []

    def cron():
        deadline = time.time() + 120
        while not os.path.exists(cron_file) and time.time() < deadline:
            time.sleep(0.2)
        if os.path.exists(cron_file):
            started.append(run_cron_line(cron_file))
    ticker = threading.Thread(target=cron, daemon=True)
    ticker.start()
    run = run_playbook([ROLE_TASK], extra_vars=variables, tmp_dir=tmp_path)
    ticker.join(5)
    assert run.rc == 0, run.describe()
    assert pg.password not in run.stdout
    assert oct(os.stat(variables["postgresql_wal_stream_config_file"]).st_mode & 0o777) == oct(0o600)
    archive = os.stat(os.path.join(base, "archive"))  # created for the archiver's user
    assert (archive.st_uid, oct(archive.st_mode & 0o777)) == (pwd.getpwnam("postgres").pw_uid, oct(0o750))
    user, command = cron_line(cron_file)
    assert user == "postgres" and "flock -n" in command and pg.password not in command
    assert streaming(pg)

    # WAL reaches the archive without any archive_command
    pg.psql("CREATE TABLE t AS SELECT g FROM generate_series(1, 1000) g")
    wait_for(lambda: any(".stream.zst" in k or k.endswith(".zst") for k in list_keys(
        variables["postgresql_wal_stream_storage_url"])), "nothing reached the archive")
    stored = [k for k in list_keys(variables["postgresql_wal_stream_storage_url"]) if k.endswith(".zst")]
    root = variables["postgresql_wal_stream_storage_url"][len("file://"):]
    with open(os.path.join(root, stored[0]), "rb") as fh:
        assert fh.read(11) == b"drkit-age1 ", stored[0]  # encrypted (docs/encryption.md)

    # the next minute's line finds it running and exits at once
    again = run_cron_line(cron_file)
    assert again.wait(30) == 1
    assert streaming(pg)

    # converged: a second run and a check-mode run change nothing
    for check in (False, True):
        rerun = run_playbook([ROLE_TASK], extra_vars=variables, check=check, tmp_dir=tmp_path)
        assert rerun.rc == 0, rerun.describe()
        assert not any(r["result"].get("changed") for r in rerun.results), rerun.describe()

    # killed: the next minute's line brings it back, resuming from the slot
    archiver = started[0]
    os.killpg(archiver.pid, signal.SIGKILL)
    archiver.wait(30)
    wait_for(lambda: not streaming(pg), "the killed archiver still streams")
    revived = run_cron_line(cron_file)
    try:
        wait_for(lambda: streaming(pg), "cron's next line did not start the archiver again")
    finally:
        os.killpg(revived.pid, signal.SIGTERM)
        revived.wait(60)


def test_role_stops_with_a_clear_message_when_the_archiver_cannot_connect(quiet_cluster, tmp_path):
    pg, base = quiet_cluster
    variables = role_vars(pg, base)
    wrong = "not-the-pw-%s" % uuid.uuid4().hex[:8]
    variables["postgresql_wal_stream_login_password"] = wrong
    variables["postgresql_wal_stream_prove_timeout"] = 12
    cron_file = variables["postgresql_wal_stream_cron_file"]
    procs = []

    def cron():
        deadline = time.time() + 60
        while not os.path.exists(cron_file) and time.time() < deadline:
            time.sleep(0.2)
        if os.path.exists(cron_file):
            procs.append(run_cron_line(cron_file))
    ticker = threading.Thread(target=cron, daemon=True)
    ticker.start()
    run = run_playbook([ROLE_TASK], extra_vars=variables, tmp_dir=tmp_path)
    ticker.join(5)
    for p in procs:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait(30)
    assert run.rc != 0
    assert "did not start streaming within 12 s" in run.text
    assert variables["postgresql_wal_stream_log_file"] in run.text
    assert wrong not in run.stdout


def test_role_stops_when_the_archivers_user_cannot_write_the_archive(quiet_cluster, tmp_path):
    pg, base = quiet_cluster
    variables = role_vars(pg, base)
    locked = os.path.join(base, "locked")
    os.mkdir(locked, 0o700)  # root's: postgres cannot write into it
    variables["postgresql_wal_stream_storage_url"] = "file://%s" % locked
    run = run_playbook([ROLE_TASK], extra_vars=variables, tmp_dir=tmp_path)
    assert run.rc != 0
    assert "as OS user postgres" in run.text and locked in run.text, run.text
    assert not os.path.exists(variables["postgresql_wal_stream_cron_file"])  # nothing scheduled
