# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Point-in-time recovery for real: a PostgreSQL 15 cluster whose
archive_command is ``drkit wal-push`` into SeaweedFS S3, physical base
backups, and PITR into new data directories started on free loopback ports.

PostgreSQL runs archive_command/restore_command as its own OS user
(``postgres`` when the tests run as root), so the commands name the test
venv's Python explicitly (bin/drkit's ``#!/usr/bin/env python3`` would find
a Python without our libraries) and the S3 credentials are in a 0600 config
file owned by that user -- never on the command line.
"""

import os
import shlex
import shutil
import sys
import time
import uuid

import pytest
from ansible_collections.drkit.backup.plugins.module_utils.repo import manifest as mf
from ansible_collections.drkit.backup.plugins.module_utils.pg import backup as pg_physical
from ansible_collections.drkit.backup.plugins.module_utils.pg.cluster import (default_os_user, os_user_ids,
                                                                              pidfile_live, read_log, stop_server)
from ansible_collections.drkit.backup.plugins.module_utils.pg.pitr import WAL_CONFIG_NAME, pg_pitr
from ansible_collections.drkit.backup.plugins.module_utils.pg.verify_physical import verify_physical
from ansible_collections.drkit.backup.plugins.module_utils.pg import verify as pg_verify
from ansible_collections.drkit.backup.plugins.module_utils.core.options import resolve
from ansible_collections.drkit.backup.plugins.module_utils.core.scratch import free_port, make_scratch_dir
from ansible_collections.drkit.backup.plugins.module_utils.pg.cluster import find_pg_bindir
from ansible_collections.drkit.backup.plugins.module_utils.pg.scratch import ScratchPostgres
from ansible_collections.drkit.backup.plugins.module_utils.storage import factory as storage
from ansible_collections.drkit.backup.plugins.module_utils.pg.wal_segments import list_timeline
from ansible_collections.drkit.backup.plugins.module_utils.repo.wal_layout import parse_lsn, segment_number, wal_key
from ansible_collections.drkit.backup.plugins.module_utils.core.errors import (ConfigError, IntegrityError, SafetyError,
                                                                               WaitTimeout)
from helpers import DRKIT, key_files, run_playbook, task

SCALE = 0.003


def drkit_command():
    return "%s %s" % (shlex.quote(sys.executable), shlex.quote(str(DRKIT)))


def write_wal_config(path, s3, owner="postgres"):
    """The 0600 config file restore/archive commands read their S3 options from."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write("endpoint_url: %s\naccess_key: %s\nsecret_key: %s\nregion: %s\n" % (
            s3.endpoint_url, s3.access_key, s3.secret_key, s3.region))
    if os.geteuid() == 0:
        import pwd
        pw = pwd.getpwnam(owner)
        os.chown(path, pw.pw_uid, pw.pw_gid)
    return path


def s3_params(s3, url):
    return {"storage_url": url, "endpoint_url": s3.endpoint_url, "access_key": s3.access_key,
            "secret_key": s3.secret_key, "region": s3.region}


class Cluster(object):
    """A scratch cluster archiving with drkit wal-push to ``url``."""

    def __init__(self, root, s3, bucket, prefix, archive_command=None, password="pitr-secret-pw"):
        self.s3 = s3
        self.url = "s3://%s/%s" % (bucket, prefix)
        self.config = write_wal_config(os.path.join(root, "wal-%s.yml" % prefix), s3)
        cmd = archive_command or "%s wal-push --config %s --storage-url %s %%p %%f" % (
            drkit_command(), shlex.quote(self.config), shlex.quote(self.url))
        self.pg = ScratchPostgres(os.path.join(root, "pg-%s" % prefix), password=password,
                                  settings={"wal_level": "replica", "archive_mode": "on",
                                            "archive_command": cmd, "archive_timeout": 60})
        self.pg.start()

    def params(self, **extra):
        p = s3_params(self.s3, self.url)
        p.update(login_host=self.pg.host, port=self.pg.port, login_user="postgres",
                 login_password=self.pg.password, mode="physical")
        p.update(extra)
        return p

    def storage(self, prefix=None):
        url = self.url if prefix is None else self.url.rsplit("/", 1)[0] + "/" + prefix
        return storage.open_storage(url, endpoint_url=self.s3.endpoint_url, access_key=self.s3.access_key,
                                    secret_key=self.s3.secret_key, region=self.s3.region)

    def switch_and_wait(self, timeout=60):
        """pg_switch_wal() and wait until that segment is archived."""
        seg = self.pg.psql("SELECT pg_walfile_name(pg_switch_wal())")
        deadline = time.time() + timeout
        while time.time() < deadline:
            last = self.pg.psql("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver")
            if last and last[:24] >= seg:
                return seg
            time.sleep(0.2)
        raise AssertionError("segment %s was not archived within %ss: %s" % (
            seg, timeout, self.pg.psql("SELECT * FROM pg_stat_archiver")))


def new_cluster(s3, scratch_root, name="pitr"):
    """(scratch root, Cluster) archiving into a new bucket's prefix main."""
    bucket = "drkit-%s-%s" % (name, uuid.uuid4().hex[:8])
    s3.create_bucket(bucket)
    root = make_scratch_dir(prefix="%s-" % name, parent=str(scratch_root))
    return root, Cluster(root, s3, bucket, "main")


@pytest.fixture(scope="module")
def cluster(s3, scratch_root):
    root, c = new_cluster(s3, scratch_root)
    try:
        from ansible_collections.drkit.backup.plugins.module_utils.demo import sample_data
        sample_data.generate(c.pg.conninfo("postgres"), scale=SCALE, seed=3, database="agentic_platform")
        yield c
    finally:
        c.pg.destroy()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def restore_dirs(scratch_root):
    """New data directories (not yet existing) for restores; servers in
    them are stopped and the directories removed afterwards."""
    made = []

    def new():
        base = make_scratch_dir(prefix="restore-", parent=str(scratch_root))
        made.append(base)
        return os.path.join(base, "data")
    yield new
    for base in made:
        data = os.path.join(base, "data")
        if pidfile_live(data):
            stop_server(find_pg_bindir("15"), data, os_user_ids(default_os_user({})),
                        mode="immediate")
        shutil.rmtree(base, ignore_errors=True)


def connect_restored(port, password, dbname="agentic_platform"):
    import psycopg
    return psycopg.connect(host="127.0.0.1", port=port, user="postgres", password=password, dbname=dbname,
                           autocommit=True, connect_timeout=10)


def socket_dir_for(data_dir):
    """A socket directory the server's OS user may write (the default
    /var/run/postgresql may not exist on a test machine)."""
    path = os.path.join(os.path.dirname(data_dir), "run")
    if not os.path.isdir(path):
        os.mkdir(path, 0o700)
        if os.geteuid() == 0:
            import pwd
            pw = pwd.getpwnam("postgres")
            os.chown(path, pw.pw_uid, pw.pw_gid)
    return path


def pitr_params(c, data_dir, **extra):
    p = s3_params(c.s3, c.url)
    p.update(data_directory=data_dir, port=free_port(), drkit_command=drkit_command(),
             settings={"unix_socket_directories": socket_dir_for(data_dir), "listen_addresses": "127.0.0.1"})
    p.update(extra)
    return p


# --------------------------------------------------------------------------
# the audit's Scenario 3


@pytest.fixture(scope="module")
def scenario(cluster):
    """Base backup, more writes, note the time T, DELETE FROM agents, more
    writes after it; everything archived. Returns the facts."""
    c = cluster
    pg = c.pg
    before = int(pg.psql("SELECT count(*) FROM mcp_documents.agents", "agentic_platform"))
    assert before > 0
    changed, res = pg_physical.pg_backup(c.params(wal_wait_timeout=60))
    assert changed and res["backup_id"]
    backup = res["manifest"]
    pg.psql("CREATE TABLE public.marks (id serial primary key, phase text, at timestamptz default clock_timestamp())",
            "agentic_platform")
    pg.psql("INSERT INTO public.marks (phase) SELECT 'before' FROM generate_series(1, 50)", "agentic_platform")
    c.switch_and_wait()  # more than one segment between the backup and T
    pg.psql("INSERT INTO public.marks (phase) SELECT 'before-2' FROM generate_series(1, 50)", "agentic_platform")
    c.switch_and_wait()
    time.sleep(1.1)
    noted = pg.psql("SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')")
    time.sleep(1.1)
    # The accident. The sample schema has foreign keys to agents; the
    # operator's "DELETE FROM agents" hit a table without them, so switch the
    # FK triggers off for this session to reproduce it.
    pg.psql("SET session_replication_role = replica; DELETE FROM mcp_documents.agents", "agentic_platform")
    assert pg.psql("SELECT count(*) FROM mcp_documents.agents", "agentic_platform") == "0"
    pg.psql("INSERT INTO public.marks (phase) SELECT 'after' FROM generate_series(1, 30)", "agentic_platform")
    last = c.switch_and_wait()
    return {"before": before, "noted": noted, "backup": backup, "last_segment": last}


def test_scenario3_pitr_to_noted_time_brings_agents_back(cluster, scenario, restore_dirs):
    c = cluster
    data_dir = restore_dirs()
    params = pitr_params(c, data_dir, target="time", target_value=scenario["noted"])
    changed, res = pg_pitr(params)
    assert changed and res["status"] == "promoted", res
    assert res["backup_id"] == scenario["backup"]["backup_id"]
    assert res.get("new_timeline") == 2, read_log(res["log_file"])
    assert "recovery stopping before commit" in res["recovered_to"], res
    conn = connect_restored(params["port"], c.pg.password)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM mcp_documents.agents")
            assert cur.fetchone()[0] == scenario["before"]
            cur.execute("SELECT phase, count(*) FROM public.marks GROUP BY 1 ORDER BY 1")
            assert dict(cur.fetchall()) == {"before": 50, "before-2": 50}  # 'after' rows are absent
            cur.execute("SELECT pg_is_in_recovery()")
            assert cur.fetchone()[0] is False
            cur.execute("SHOW archive_mode")
            assert cur.fetchone()[0] == "off"  # the copy never pushes into the original's archive
    finally:
        conn.close()
    # the generated credentials file is gone once recovery succeeded
    assert not os.path.exists(os.path.join(data_dir, WAL_CONFIG_NAME))
    assert res["restore_seconds"] > 0 and res["recovery_seconds"] > 0
    assert c.s3.secret_key not in res["restore_command"]


def test_pitr_latest_replays_everything(cluster, scenario, restore_dirs):
    c = cluster
    data_dir = restore_dirs()
    params = pitr_params(c, data_dir, target="latest")
    _changed, res = pg_pitr(params)
    assert res["status"] == "promoted"
    assert res["archive_last_segment"] >= scenario["last_segment"]
    conn = connect_restored(params["port"], c.pg.password)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM mcp_documents.agents")
            assert cur.fetchone()[0] == 0  # latest includes the accident
            cur.execute("SELECT count(*) FROM public.marks WHERE phase = 'after'")
            assert cur.fetchone()[0] == 30
    finally:
        conn.close()


def test_pitr_check_mode_plans_and_touches_nothing(cluster, scenario, restore_dirs):
    data_dir = restore_dirs()
    changed, res = pg_pitr(pitr_params(cluster, data_dir, target="time",
                                       target_value=scenario["noted"]), check_mode=True)
    assert changed and res["backup_id"] == scenario["backup"]["backup_id"]
    assert "Would restore" in res["msg"]
    assert not os.path.exists(data_dir)


def test_target_before_every_backup_is_refused(cluster, scenario, restore_dirs):
    with pytest.raises(Exception) as exc:
        pg_pitr(pitr_params(cluster, restore_dirs(), target="time", target_value="2001-01-01T00:00:00Z"))
    assert "older than the oldest base backup" in str(exc.value)


# --------------------------------------------------------------------------
# refusing to restore over something


def test_restore_into_running_servers_directory_is_refused(cluster, scenario):
    with pytest.raises(SafetyError) as exc:
        pg_pitr(pitr_params(cluster, cluster.pg.data_dir, target="latest"))
    assert "RUNNING PostgreSQL server" in str(exc.value)
    assert cluster.pg.psql("SELECT 1") == "1"  # untouched, still serving


def test_restore_into_non_empty_directory_is_refused(cluster, scenario, restore_dirs):
    data_dir = restore_dirs()
    os.makedirs(data_dir)
    with open(os.path.join(data_dir, "precious.txt"), "w") as fh:
        fh.write("keep me")
    with pytest.raises(SafetyError) as exc:
        pg_pitr(pitr_params(cluster, data_dir, target="latest"))
    assert "not empty" in str(exc.value)
    assert os.listdir(data_dir) == ["precious.txt"]


# --------------------------------------------------------------------------
# a missing WAL segment in the middle of the chain


def copy_archive(c, prefix):
    src, dst = c.storage(), c.storage(prefix)
    for info in src.list(""):
        dst.put_bytes(info.key, src.get_bytes(info.key))
    return dst


def test_missing_mid_chain_wal_makes_pitr_fail_loudly(cluster, scenario, restore_dirs):
    c = cluster
    gap = copy_archive(c, "gap")
    data = scenario["backup"]["data"]
    start = segment_number(data["wal_stop_segment"])
    archived = list_timeline(gap, 1)
    after = [n for n in archived if segment_number(n) > start]
    assert len(after) >= 3
    hole = after[0]  # right after the backup, well before the noted time
    gap.delete([wal_key(hole)])
    url = c.url.rsplit("/", 1)[0] + "/gap"

    # latest: refused before anything is restored (recovery would silently stop at the hole)
    data_dir = restore_dirs()
    with pytest.raises(IntegrityError) as exc:
        pg_pitr(pitr_params(c, data_dir, target="latest", storage_url=url,
                            backup_id=scenario["backup"]["backup_id"]))
    assert hole in str(exc.value) and "missing" in str(exc.value)
    assert not os.path.exists(data_dir)

    # a time past the hole: PostgreSQL stops at the hole, says FATAL, and we fail with it
    data_dir = restore_dirs()
    with pytest.raises(IntegrityError) as exc:
        pg_pitr(pitr_params(c, data_dir, target="time", target_value=scenario["noted"], storage_url=url))
    assert "recovery ended before configured recovery target was reached" in str(exc.value)
    assert not pidfile_live(data_dir)


# --------------------------------------------------------------------------
# base backup without its WAL


def test_base_backup_that_cannot_get_its_wal_fails(s3, scratch_root):
    bucket = "drkit-pitr-%s" % uuid.uuid4().hex[:8]
    s3.create_bucket(bucket)
    root = make_scratch_dir(prefix="pitr-broken-", parent=str(scratch_root))
    c = Cluster(root, s3, bucket, "broken", archive_command="/bin/false")
    try:
        t0 = time.time()
        with pytest.raises(WaitTimeout) as exc:
            pg_physical.pg_backup(c.params(wal_wait_timeout=3))
        assert time.time() - t0 < 60
        assert "archived" in str(exc.value)
        st = c.storage()
        assert mf.list_backups(st)[0] == []
        assert [i.key for i in st.list("backups/")] == []  # the streamed tar was removed too
        # the walsender that was waiting for the archive is gone
        assert c.pg.psql("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'walsender'") == "0"
    finally:
        c.pg.destroy()
        shutil.rmtree(root, ignore_errors=True)


def test_base_backup_preflight_needs_archiving(pg, s3, bucket):
    params = s3_params(s3, "s3://%s/x" % bucket)
    params.update(login_host=pg.host, port=pg.port, login_password=pg.password, mode="physical")
    with pytest.raises(ConfigError) as exc:
        pg_physical.pg_backup(params)
    assert "archive_mode is off" in str(exc.value)


# --------------------------------------------------------------------------
# the physical backup's manifest, and the physical verify


def test_manifest_records_what_rotation_and_pitr_need(cluster, scenario):
    data = scenario["backup"]["data"]
    for key in ("wal_start_segment", "wal_stop_segment", "timeline", "start_lsn", "stop_lsn",
                "system_identifier"):
        assert data[key], key
    sysid = cluster.pg.psql("SELECT system_identifier FROM pg_control_system()")
    assert data["system_identifier"] == sysid
    assert cluster.storage().get_bytes("wal/SYSTEM_IDENTIFIER").decode().strip() == sysid
    assert parse_lsn(data["stop_lsn"]) >= parse_lsn(data["start_lsn"])
    assert data["pg_manifest"]["files"] > 900 and data["pg_manifest"]["checksum"]
    names = [a["name"] for a in scenario["backup"]["artifacts"]]
    assert names == ["base.tar.zst", "backup_manifest.zst"]


def test_verify_physical_restore_level(cluster, scenario):
    entry = mf.resolve(cluster.storage(), scenario["backup"]["backup_id"])
    params = s3_params(cluster.s3, cluster.url)
    params.update(level="restore", database="agentic_platform",
                  checks=[{"name": "agents present", "sql": "SELECT count(*) FROM mcp_documents.agents",
                           "equals": scenario["before"]}])
    _changed, res = verify_physical(resolve(pg_verify.OPTIONS, params), entry)  # as pg_verify calls it
    assert res["passed"] and res["result"] == "pass", res
    assert res["physical"]["system_identifier"] == scenario["backup"]["data"]["system_identifier"]
    assert res["checks"][0]["ok"]
    assert cluster.storage().stat(res["record_key"]) is not None


# The engine as the pg_verify module runs it (no CLI around it to catch
# signals): SIGTERM arrives while the scratch server replays.
_SIGTERM_DURING_REPLAY = r"""
import json, os, signal, sys, time
sys.path.insert(0, sys.argv[1])
from ansible_collections.drkit.backup.plugins.module_utils.pg import verify_physical as vp
from ansible_collections.drkit.backup.plugins.module_utils.pg.verify import OPTIONS
from ansible_collections.drkit.backup.plugins.module_utils.core.options import resolve
from ansible_collections.drkit.backup.plugins.module_utils.repo import manifest as mf
from ansible_collections.drkit.backup.plugins.module_utils.storage.factory import open_storage, storage_options

def stopped_here(server, timeout):
    with open(os.path.join(server.data_dir, "postmaster.pid")) as fh:
        pid = int(fh.readline())
    with open(sys.argv[2], "w") as fh:
        json.dump({"pid": pid, "data_dir": server.data_dir}, fh)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(30)

vp.wait_promoted = stopped_here
params = json.load(sys.stdin)  # on stdin: the S3 secret in argv would show in every process listing
storage = open_storage(params["storage_url"], **storage_options(params))
try:
    vp.verify_physical(resolve(OPTIONS, params), mf.resolve(storage, params["backup_id"]))
except BaseException as e:  # Terminated is an interrupt (BaseException), as KeyboardInterrupt
    print("%s %s" % (type(e).__name__, getattr(e, "exit_code", "")))
    sys.exit(getattr(e, "exit_code", 1))
"""


def test_sigterm_during_physical_verify_stops_the_scratch_server(cluster, scenario, tmp_path):
    import json
    import subprocess
    from conftest import BUILD_COLLECTIONS
    params = s3_params(cluster.s3, cluster.url)
    params.update(level="restore", backup_id=scenario["backup"]["backup_id"])
    before = [o.key for o in cluster.storage().list(mf.backup_prefix(params["backup_id"]))]
    seen = tmp_path / "seen.json"
    proc = subprocess.run([sys.executable, "-c", _SIGTERM_DURING_REPLAY, str(BUILD_COLLECTIONS), str(seen)],
                          input=json.dumps(params), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          universal_newlines=True, timeout=300, check=False)
    assert proc.returncode == 143, proc.stdout  # without signal handling: killed by SIGTERM (-15)
    assert "Terminated 143" in proc.stdout
    info = json.loads(seen.read_text())
    deadline = time.time() + 30
    while os.path.exists("/proc/%d" % info["pid"]) and time.time() < deadline:
        time.sleep(0.1)
    assert not os.path.exists("/proc/%d" % info["pid"]), "the scratch server outlived the verifier"
    assert not os.path.exists(info["data_dir"]), "the scratch directory was left behind"
    after = [o.key for o in cluster.storage().list(mf.backup_prefix(params["backup_id"]))]
    assert after == before  # stopped: no verdict recorded


def test_pg_backup_module_physical_and_pg_pitr_module_check_mode(cluster, scenario, tmp_path, restore_dirs):
    c = cluster
    args = s3_params(c.s3, c.url)
    args.update(login_host=c.pg.host, port=c.pg.port, login_password="{{ pw }}", mode="physical",
                wal_wait_timeout=60)
    pitr = s3_params(c.s3, c.url)
    pitr.update(target="time", target_value=scenario["noted"], data_directory=restore_dirs(), port=5999)
    run = run_playbook([task("drkit.backup.pg_backup", register="b", _check_mode=True, name="check", **args),
                        task("drkit.backup.pg_backup", register="b", **args),
                        task("drkit.backup.pg_pitr", register="p", _check_mode=True, **pitr)],
                       extra_vars={"pw": c.pg.password}, tmp_dir=tmp_path)
    assert run.rc == 0, run.describe()
    assert run.result("check")["changed"] and run.result("check")["backup_id"] is None
    b = run.result("drkit.backup.pg_backup")
    assert b["changed"] and b["manifest"]["kind"] == "pg_physical"
    assert b["manifest"]["data"]["wal_start_segment"] >= scenario["backup"]["data"]["wal_stop_segment"]
    assert c.pg.password not in run.text and c.s3.secret_key not in run.text
    p = run.result("drkit.backup.pg_pitr")
    assert p["backup_id"] == scenario["backup"]["backup_id"]  # the new backup ended after the target
    assert not os.path.exists(pitr["data_directory"])


def run_collection_playbook(name, extra_vars, tmp_path, timeout=600):
    """ansible-playbook drkit.backup.<name> with extra vars from a 0600 file."""
    import json
    import subprocess

    from helpers import PlaybookRun, _ansible_bin, ansible_environment
    work = tmp_path / ("play-%s" % uuid.uuid4().hex[:6])
    work.mkdir()
    vars_file = work / "vars.json"
    fd = os.open(str(vars_file), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(dict(extra_vars, ansible_python_interpreter=sys.executable), fh)
    env = ansible_environment(str(work))
    env["DRKIT_TEST_RESULTS_FILE"] = str(work / "results.json")
    proc = subprocess.run([_ansible_bin("ansible-playbook"), "-i", "localhost,", "-c", "local",
                           "-e", "@%s" % vars_file, "drkit.backup.%s" % name], cwd=str(work), env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout, check=False)
    data = {}
    if (work / "results.json").exists():
        data = json.loads((work / "results.json").read_text())
    return PlaybookRun(proc.returncode, proc.stdout.decode("utf-8", "replace"),
                       proc.stderr.decode("utf-8", "replace"), data, name)


def test_pitr_restore_playbook_recovers_to_the_noted_time(cluster, scenario, tmp_path, restore_dirs):
    c = cluster
    data_dir = restore_dirs()
    port = free_port()
    run = run_collection_playbook("pitr_restore", {
        "pitr_storage_url": c.url,
        "pitr_storage_options": {"endpoint_url": c.s3.endpoint_url, "access_key": c.s3.access_key,
                                 "secret_key": c.s3.secret_key, "region": c.s3.region},
        "pitr_target": "time", "pitr_target_value": scenario["noted"],
        "pitr_data_directory": data_dir, "pitr_port": port, "pitr_drkit_command": drkit_command(),
        "pitr_settings": {"unix_socket_directories": socket_dir_for(data_dir), "listen_addresses": "127.0.0.1"},
    }, tmp_path)
    assert run.rc == 0, run.describe()
    plan = run.result("Plan the recovery (check mode)")
    assert plan["backup_id"] == scenario["backup"]["backup_id"]
    res = run.result("Restore and recover")
    assert res["changed"] and res["status"] == "promoted" and res["new_timeline"] >= 2
    assert c.s3.secret_key not in run.text
    conn = connect_restored(port, c.pg.password)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM mcp_documents.agents")
            assert cur.fetchone()[0] == scenario["before"]
            cur.execute("SELECT count(*) FROM public.marks WHERE phase = 'after'")
            assert cur.fetchone()[0] == 0
    finally:
        conn.close()


def test_pitr_restore_playbook_with_verify_keys_refuses_an_unsigned_backup(
        cluster, scenario, tmp_path, restore_dirs):
    """pitr_verify_keys reaches pg_pitr: a base backup no trusted key signed is refused in the plan, before
    anything is written (issue 15)."""
    c = cluster
    data_dir = restore_dirs()
    _key, pub, _key_id = key_files(tmp_path, "dr-site")
    run = run_collection_playbook("pitr_restore", {
        "pitr_storage_url": c.url,
        "pitr_storage_options": {"endpoint_url": c.s3.endpoint_url, "access_key": c.s3.access_key,
                                 "secret_key": c.s3.secret_key, "region": c.s3.region},
        "pitr_backup_id": scenario["backup"]["backup_id"], "pitr_verify_keys": [pub],
        "pitr_data_directory": data_dir, "pitr_port": free_port(), "pitr_drkit_command": drkit_command(),
    }, tmp_path)
    assert run.rc != 0
    msg = run.result("Plan the recovery (check mode)")["msg"]
    assert "is not signed" in msg and scenario["backup"]["backup_id"] in msg, msg
    assert not run.entries("Restore and recover")
    assert not os.path.exists(data_dir)


def test_pg_verify_dispatches_physical_backups(cluster, scenario):
    from ansible_collections.drkit.backup.plugins.module_utils.pg.verify import pg_verify
    params = s3_params(cluster.s3, cluster.url)
    params.update(backup_id=scenario["backup"]["backup_id"], level="structure")
    _changed, res = pg_verify(params)
    assert res["passed"] and res["level"] == "structure"
    assert "pg_verifybackup" in res["physical"]


# --------------------------------------------------------------------------
# what the run needs, checked by the plan


def test_pitr_restore_playbook_plan_names_a_missing_parent_directory(cluster, scenario, tmp_path, restore_dirs):
    """The plan (check mode) refuses a data_directory whose parent does not
    exist, naming it and the fix; it used to pass, and the run then failed
    with 'Unexpected error: [Errno 2] No such file or directory'."""
    c = cluster
    base = os.path.dirname(restore_dirs())
    parent = os.path.join(base, "no-such", "parent")
    data_dir = os.path.join(parent, "data")
    run = run_collection_playbook("pitr_restore", {
        "pitr_storage_url": c.url,
        "pitr_storage_options": {"endpoint_url": c.s3.endpoint_url, "access_key": c.s3.access_key,
                                 "secret_key": c.s3.secret_key, "region": c.s3.region},
        "pitr_target": "latest", "pitr_data_directory": data_dir, "pitr_port": free_port(),
        "pitr_drkit_command": drkit_command(),
    }, tmp_path)
    assert run.rc != 0
    assert run.failed("Plan the recovery (check mode)"), run.describe()
    msg = run.result("Plan the recovery (check mode)")["msg"]
    assert "The parent directory %s of data_directory %s does not exist" % (parent, data_dir) in msg, msg
    assert "mkdir -p %s" % parent in msg and "Unexpected error" not in msg
    assert not run.entries("Restore and recover")
    assert not os.path.exists(os.path.join(base, "no-such"))
    assert c.s3.secret_key not in run.text


def test_pitr_plan_refuses_a_parent_this_user_cannot_write(cluster, scenario, restore_dirs):
    """A read-only parent (EROFS stops root too): the plan says so, naming it."""
    import subprocess
    parent = os.path.join(os.path.dirname(restore_dirs()), "read-only")
    os.mkdir(parent)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", parent], check=True)
    try:
        with pytest.raises(ConfigError) as exc:
            pg_pitr(dict(s3_params(cluster.s3, cluster.url), data_directory=os.path.join(parent, "data"),
                         port=free_port(), target="latest"), check_mode=True)
    finally:
        subprocess.run(["umount", parent], check=True)
    assert "The parent directory %s of data_directory %s/data is not writable" % (parent, parent) in str(exc.value)
