# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Role drkit.backup.postgresql_wal_archive (and module pg_wal_archive) on a
real PostgreSQL 15 cluster that does not archive yet: check mode changes
nothing; the real run sets the settings, restarts through the handler (here
a pg_ctl restart command instead of a service), proves archiving with
pg_switch_wal() and finds the segment in SeaweedFS; a second run changes
nothing and restarts nothing."""

import os
import pwd
import shlex
import shutil
import stat
import sys
import uuid

import pytest
from ansible_collections.drkit.backup.plugins.module_utils.core.scratch import make_scratch_dir
from ansible_collections.drkit.backup.plugins.module_utils.pg.scratch import ScratchPostgres
from ansible_collections.drkit.backup.plugins.module_utils.storage import factory as storage
from ansible_collections.drkit.backup.plugins.module_utils.repo import wal_layout as wal
from helpers import DRKIT, run_playbook

ROLE_TASK = {"name": "apply the role", "ansible.builtin.include_role": {"name": "drkit.backup.postgresql_wal_archive"}}


@pytest.fixture
def plain_cluster(scratch_root):
    base = make_scratch_dir(prefix="walrole-", parent=str(scratch_root))
    server = ScratchPostgres(os.path.join(base, "pg"), password="role-pw-%s" % uuid.uuid4().hex[:6])
    server.start()
    try:
        yield server
    finally:
        # the role restarted it with pg_ctl: stop whatever runs in its data directory
        pid_file = os.path.join(server.data_dir, "postmaster.pid")
        if os.path.exists(pid_file):
            os.system("runuser -u postgres -- %s stop -D %s -m immediate -w >/dev/null 2>&1" % (
                shlex.quote(os.path.join(server.bin_dir, "pg_ctl")), shlex.quote(server.data_dir)))
        server.destroy()
        shutil.rmtree(base, ignore_errors=True)


def entries(run, name):
    """Results of a role task (Ansible prefixes the role name)."""
    return [r for r in run.results if r["task"].split(" : ", 1)[-1] == name]


def role_vars(pg, s3, bucket, base):
    # the log goes to the socket directory: the server's OS user owns it
    restart = "runuser -u postgres -- %s restart -D %s -m fast -w -l %s" % (
        os.path.join(pg.bin_dir, "pg_ctl"), pg.data_dir, os.path.join(pg.socket_dir, "restart.log"))
    return {
        "postgresql_wal_archive_storage_url": "s3://%s/role" % bucket,
        "postgresql_wal_archive_storage_options": {"endpoint_url": s3.endpoint_url, "access_key": s3.access_key,
                                                   "secret_key": s3.secret_key, "region": s3.region},
        "postgresql_wal_archive_login_host": pg.host, "postgresql_wal_archive_login_port": pg.port,
        "postgresql_wal_archive_login_password": pg.password,
        "postgresql_wal_archive_install_runtime": False,
        "postgresql_wal_archive_drkit_command": "%s %s" % (sys.executable, DRKIT),
        "postgresql_wal_archive_config_file": os.path.join(base, "etc", "wal-archive.yml"),
        "postgresql_wal_archive_restart_command": restart,
        "postgresql_wal_archive_min_free_mb": 10,
        "postgresql_wal_archive_timeout": 30,
    }


def test_role_configures_restarts_once_and_proves_archiving(plain_cluster, s3, bucket, tmp_path):
    pg = plain_cluster
    base = os.path.dirname(pg.base_dir)
    variables = role_vars(pg, s3, bucket, base)
    metrics_dir = os.path.join(base, "metrics")
    os.mkdir(metrics_dir, 0o755)
    shutil.chown(metrics_dir, "postgres", "postgres")  # archive_command writes the metrics as postgres
    variables["postgresql_wal_archive_metrics_dir"] = metrics_dir
    # the WAL encrypted on the host, which holds only the public key
    import pyrage
    recipient = str(pyrage.x25519.Identity.generate().to_public())
    variables["postgresql_wal_archive_encryption_recipients"] = [recipient]
    assert pg.psql("SHOW archive_mode") == "off" and pg.psql("SHOW wal_log_hints") == "off"

    run = run_playbook([ROLE_TASK], extra_vars=variables, check=True, tmp_dir=tmp_path)
    assert run.rc == 0, run.describe()
    assert pg.psql("SHOW archive_mode") == "off"  # check mode changed nothing
    assert not os.path.exists(variables["postgresql_wal_archive_config_file"])

    run = run_playbook([ROLE_TASK], extra_vars=variables, tmp_dir=tmp_path)
    assert run.rc == 0, run.describe()
    assert s3.secret_key not in run.stdout and pg.password not in run.stdout
    configured = entries(run, "Configure archiving with ALTER SYSTEM")[-1]["result"]
    # wal_log_hints: pg_rewind's prerequisite, in the same single restart
    assert set(configured["changes"]) == {"archive_mode", "archive_command", "archive_timeout", "wal_log_hints"}
    assert configured["restart_required"] is True
    assert configured["changed"] is True
    assert entries(run, "Restart PostgreSQL for WAL archiving (custom command)")[-1]["result"]["changed"] is True
    proof = entries(run, "Prove archiving works (pg_switch_wal, pg_stat_archiver, the segment in the archive)")[-1]
    proof = proof["result"]
    segment = proof["test"]["segment"]
    st = storage.open_storage(variables["postgresql_wal_archive_storage_url"],
                              **variables["postgresql_wal_archive_storage_options"])
    assert st.stat(wal.wal_key(segment)) is not None
    assert st.get_bytes(wal.wal_key(segment)).startswith(b"drkit-age1 ")  # encrypted (docs/encryption.md)
    assert pg.psql("SHOW archive_mode") == "on" and pg.psql("SHOW archive_timeout") == "30s"
    assert pg.psql("SHOW wal_log_hints") == "on"
    assert "wal-push --config" in pg.psql("SHOW archive_command")
    assert variables["postgresql_wal_archive_storage_options"]["secret_key"] not in pg.psql("SHOW archive_command")
    st_cfg = os.stat(variables["postgresql_wal_archive_config_file"])
    assert oct(st_cfg.st_mode & 0o777) == oct(0o600)
    # the cluster's own metrics job: two clusters on one host keep theirs apart
    prom = os.path.join(metrics_dir, "drkit_wal_%d.prom" % pg.port)
    assert os.listdir(metrics_dir) == [os.path.basename(prom)], os.listdir(metrics_dir)
    with open(prom) as fh:
        assert 'drkit_job="wal_%d"' % pg.port in fh.read()

    again = run_playbook([ROLE_TASK], extra_vars=variables, tmp_dir=tmp_path)
    assert again.rc == 0, again.describe()
    assert entries(again, "Configure archiving with ALTER SYSTEM")[-1]["result"]["changed"] is False
    assert entries(again, "Restart PostgreSQL for WAL archiving (custom command)") == []
    assert not any(r["result"].get("changed") for r in again.results), again.describe()


def test_role_preflight_refuses_a_bad_storage_url(plain_cluster, s3, bucket, tmp_path):
    variables = role_vars(plain_cluster, s3, bucket, str(tmp_path))
    variables["postgresql_wal_archive_storage_url"] = "ftp://nowhere"
    run = run_playbook([ROLE_TASK], extra_vars=variables, tmp_dir=tmp_path)
    assert run.rc != 0
    assert "must be s3://bucket/prefix, az://container/prefix or file:///absolute/path" in run.text
    assert plain_cluster.psql("SHOW archive_mode") == "off"


@pytest.mark.parametrize("level", [0, 20])
def test_role_refuses_a_compression_level_out_of_range_before_setting_anything(plain_cluster, s3, bucket, tmp_path,
                                                                               level):
    """The role builds archive_command itself; pg_wal_archive still checks
    the level it puts there, so a wal-push that would fail on every segment
    is never configured."""
    variables = role_vars(plain_cluster, s3, bucket, str(tmp_path))
    variables["postgresql_wal_archive_compression_level"] = level
    run = run_playbook([ROLE_TASK], extra_vars=variables, tmp_dir=tmp_path)
    assert run.rc != 0
    assert "compression_level must be 1-19, got %d" % level in run.text, run.describe()
    assert plain_cluster.psql("SHOW archive_mode") == "off"
    assert plain_cluster.psql("SHOW archive_command") in ("(disabled)", "")


def test_role_with_file_storage_creates_the_archive_for_postgres_or_stops_before_archiving(plain_cluster, s3, bucket,
                                                                                           tmp_path):
    """file:// (issue 14): a directory postgres may not write stops the role
    with drkit probe's message before archive_command is set (it would fail
    on every segment); a missing one is created for postgres (0750), and
    archiving works into it."""
    pg = plain_cluster
    base = os.path.dirname(pg.base_dir)
    variables = role_vars(pg, s3, bucket, base)
    variables["postgresql_wal_archive_storage_options"] = {}
    closed = os.path.join(base, "root-owned")
    os.mkdir(closed, 0o755)  # root:root 0755
    variables["postgresql_wal_archive_storage_url"] = "file://" + closed
    run = run_playbook([ROLE_TASK], extra_vars=variables, tmp_dir=tmp_path)
    assert run.rc != 0
    assert "archive_command would fail on every WAL segment: as OS user postgres" in run.text, run.describe()
    assert "Cannot write to file://%s as user postgres" % closed in run.text
    assert pg.psql("SHOW archive_mode") == "off"
    assert os.listdir(closed) == []

    parent = os.path.join(base, "var-backups")
    os.mkdir(parent, 0o755)
    archive = os.path.join(parent, "wal-archive")
    variables["postgresql_wal_archive_storage_url"] = "file://" + archive
    run = run_playbook([ROLE_TASK], extra_vars=variables, tmp_dir=tmp_path)
    assert run.rc == 0, run.describe()
    info = os.stat(archive)
    assert pwd.getpwuid(info.st_uid).pw_name == "postgres" and stat.S_IMODE(info.st_mode) == 0o750
    segment = entries(run, "Prove archiving works (pg_switch_wal, pg_stat_archiver, the segment in the archive)")
    segment = segment[-1]["result"]["test"]["segment"]
    assert storage.open_storage("file://" + archive).stat(wal.wal_key(segment)) is not None
    assert not os.path.exists(os.path.join(archive, "probe"))
