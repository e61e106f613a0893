# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The harness itself: real PostgreSQL, Redis and SeaweedFS S3 on loopback,
reachable with the right password, refused with a wrong one, and listening
nowhere but on loopback."""

import os
import pwd
import shutil
import stat
import subprocess
import sys

import boto3
import psycopg
import pytest
import redis
from ansible_collections.drkit.backup.plugins.module_utils.pg.scratch import ScratchPostgres
from support.redis_server import ScratchRedis
from ansible_collections.drkit.backup.plugins.module_utils.core.errors import ToolError
from botocore.exceptions import ClientError
from redis.backoff import NoBackoff
from redis.retry import Retry
from support import netcheck

IS_ROOT = os.geteuid() == 0


def _alive(pid):
    """Running (not gone, not a zombie waiting to be reaped)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def assert_loopback_only(pid):
    listeners = netcheck.listening_sockets(pid)
    assert listeners, "no listening socket found for pid %s" % pid
    assert netcheck.non_loopback(pid) == []
    for line in netcheck.ss_listeners(pid):  # cross-check with ss where it exists
        local = line.split()[4]
        assert local.startswith(("127.0.0.1:", "[::1]:", "[::ffff:127.0.0.1]:")), line


# ------------------------------------------------------------------ PostgreSQL


def test_pg_create_database_and_query(pg, pg_database):
    pg.psql("CREATE TABLE agents (id int PRIMARY KEY, name text); "
            "INSERT INTO agents SELECT g, 'a' || g FROM generate_series(1, 100) g;", dbname=pg_database)
    assert pg.psql("SELECT count(*) FROM agents", dbname=pg_database) == "100"
    assert pg.psql("SHOW server_version_num").startswith("15")
    assert pg.psql("SHOW listen_addresses") == "127.0.0.1"
    # the fixture's settings reach the server (fsync is off on the shared test server only)
    assert pg.psql("SHOW fsync") == "off"
    assert pg.psql("SHOW shared_buffers") == "128MB"
    assert pg.psql("SHOW max_wal_size") == "2GB"
    assert pg.psql("SELECT pg_encoding_to_char(encoding) FROM pg_database WHERE datname = current_database()") \
        == "UTF8"


def test_pg_password_auth_with_psycopg(pg, pg_database):
    with psycopg.connect(**pg.conninfo(pg_database)) as conn:
        assert conn.execute("SELECT current_user, current_database()").fetchone() == ("postgres", pg_database)
        assert conn.execute("SELECT inet_server_addr()::text").fetchone()[0] == "127.0.0.1/32"


def test_pg_wrong_password_is_refused(pg):
    info = dict(pg.conninfo(), password="not-" + pg.password)
    with pytest.raises(psycopg.OperationalError) as exc:
        psycopg.connect(**info).close()
    assert "password authentication failed" in str(exc.value)


def test_pg_no_password_is_refused_even_on_the_socket(pg):
    env = dict((k, v) for k, v in os.environ.items() if not k.startswith("PG"))
    env.update({"PGHOST": pg.socket_dir, "PGPORT": str(pg.port), "PGUSER": "postgres"})
    res = subprocess.run([os.path.join(pg.bin_dir, "psql"), "-X", "-w", "-c", "select 1"],
                         env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False)
    assert res.returncode != 0
    assert "password" in res.stderr


def test_pg_psql_error_raises_tool_error_with_stderr(pg):
    with pytest.raises(ToolError) as exc:
        pg.psql("SELECT * FROM no_such_table")
    assert "no_such_table" in str(exc.value)
    assert pg.password not in str(exc.value)


def test_pg_env_works_for_libpq_tools(pg, pg_database):
    env = dict((k, v) for k, v in os.environ.items() if not k.startswith("PG"))
    env.update(pg.env(pg_database))
    res = subprocess.run([os.path.join(pg.bin_dir, "pg_dump"), "--schema-only"], env=env,
                         capture_output=True, text=True, check=True)
    assert "PostgreSQL database dump" in res.stdout


def test_pg_listens_on_loopback_only(pg):
    assert_loopback_only(pg._proc.pid)


@pytest.mark.skipif(not IS_ROOT, reason="only root switches to the postgres OS user")
def test_pg_runs_as_the_postgres_os_user(pg):
    assert os.stat("/proc/%d" % pg._proc.pid).st_uid == pwd.getpwnam("postgres").pw_uid
    st = os.stat(pg.data_dir)
    assert stat.S_IMODE(st.st_mode) == 0o700
    assert st.st_uid == pwd.getpwnam("postgres").pw_uid
    # the initdb password file is gone
    assert not [n for n in os.listdir(os.path.dirname(pg.data_dir)) if n.startswith(".initdb-pw")]


def test_pg_restart_keeps_data(scratch_dir):
    pg = ScratchPostgres(str(scratch_dir / "pg"), settings={"work_mem": "8MB", "cluster_name": "drkit's"})
    try:
        pg.start()
        assert pg.psql("SHOW work_mem") == "8MB"
        assert pg.psql("SHOW cluster_name") == "drkit's"
        pg.psql("CREATE TABLE t AS SELECT 42 AS x")
        pg.stop()
        assert not pg.is_running()
        pg.start()
        assert pg.psql("SELECT x FROM t") == "42"
    finally:
        pg.destroy()
    assert not os.path.exists(str(scratch_dir / "pg"))


def test_pg_existing_data_dir_like_a_restored_debian_backup(scratch_dir):
    """initdb=False on a copy of a stopped cluster that has no postgresql.conf
    nor pg_hba.conf (as a base backup of a Debian cluster): starts, forces
    archive_mode off, socket access without password, data intact."""
    src = ScratchPostgres(str(scratch_dir / "src"), settings={"archive_mode": "on",
                                                              "archive_command": "/bin/true"})
    with src:
        src.psql("CREATE TABLE agents AS SELECT g AS id FROM generate_series(1, 10) g")
        src.stop()
        restored = scratch_dir / "restored"
        restored.mkdir(mode=0o711)
        shutil.copytree(src.data_dir, str(restored / "data"), symlinks=True)
    for name in ("postgresql.conf", "pg_hba.conf", "pg_ident.conf"):
        os.unlink(str(restored / "data" / name))
    with ScratchPostgres(str(restored), initdb=False) as pg:
        assert pg.password is None
        assert pg.psql("SELECT count(*) FROM agents") == "10"
        assert pg.psql("SHOW archive_mode") == "off"
        assert pg.psql("SHOW listen_addresses") == "127.0.0.1"
        assert_loopback_only(pg._proc.pid)
    assert not restored.exists()


def test_pg_detach_and_adopt(scratch_dir):
    """A detached server outlives its object; a new object on the same
    base_dir sees it, learns its port, and can destroy it."""
    first = ScratchPostgres(str(scratch_dir / "pg"), password="pw-1")
    try:
        first.start()
        pid = first._proc.pid
        first.detach()
        assert first.is_running()  # through postmaster.pid
        second = ScratchPostgres(str(scratch_dir / "pg"), password="pw-1")
        assert second.is_running()
        second.start()  # adopts, does not start a second postmaster
        assert second.port == first.port
        assert second.psql("SELECT 1") == "1"
    finally:
        ScratchPostgres(str(scratch_dir / "pg"), password="pw-1").destroy()
    assert not _alive(pid)
    assert not os.path.exists(str(scratch_dir / "pg"))


def test_context_manager_leaves_nothing_running(scratch_dir):
    with ScratchPostgres(str(scratch_dir / "pg")) as pg:
        pid = pg._proc.pid
        assert pg.is_running()
    assert not _alive(pid)


# ------------------------------------------------------------------ Redis


def test_redis_set_get(redis_server):
    c = redis_server.client()
    c.set("drkit:test", "value")
    assert c.get("drkit:test") == b"value"
    assert redis_server.cli("GET", "drkit:test") == "value"
    assert redis_server.cli("SET", "drkit:cli", "x y") == "OK"
    assert c.get("drkit:cli") == b"x y"


def test_redis_wrong_or_missing_password_is_refused(redis_server):
    # redis-py 8 retries (with backoff, ~4 s) even an authentication error by default
    no_retry = Retry(NoBackoff(), 0)
    wrong = redis.Redis(host=redis_server.host, port=redis_server.port, password="not-" + redis_server.password,
                        retry=no_retry)
    with pytest.raises(redis.AuthenticationError):
        wrong.ping()
    anon = redis.Redis(host=redis_server.host, port=redis_server.port, retry=no_retry)
    with pytest.raises(redis.AuthenticationError):
        anon.get("drkit:test")


def test_redis_cli_error_raises(redis_server):
    with pytest.raises(ToolError) as exc:
        redis_server.cli("NOSUCHCOMMAND")
    assert "unknown command" in str(exc.value)


def test_redis_password_not_in_argv_and_loopback_only(redis_server):
    pid = redis_server._proc.pid
    with open("/proc/%d/cmdline" % pid, "rb") as f:
        assert redis_server.password.encode() not in f.read()
    assert_loopback_only(pid)
    assert redis_server.cli("CONFIG", "GET", "save") == "save\n"
    assert redis_server.cli("CONFIG", "GET", "dir") == "dir\n" + redis_server.dir


def test_redis_appendonly_and_bgsave(scratch_dir):
    with ScratchRedis(str(scratch_dir / "r"), appendonly=True) as r:
        r.cli("SET", "k", "v")
        assert r.cli("CONFIG", "GET", "appendonly") == "appendonly\nyes"
        assert os.path.isdir(os.path.join(r.dir, "appendonlydir"))
        r.cli("SAVE")
        assert os.path.getsize(r.rdb_path) > 0


# ------------------------------------------------------------------ SeaweedFS S3


def test_s3_put_get(s3, bucket):
    c = s3.client()
    c.put_object(Bucket=bucket, Key="dir/hello.txt", Body=b"hello drkit")
    assert c.get_object(Bucket=bucket, Key="dir/hello.txt")["Body"].read() == b"hello drkit"
    keys = [o["Key"] for o in c.list_objects_v2(Bucket=bucket, Prefix="dir/")["Contents"]]
    assert keys == ["dir/hello.txt"]


def test_s3_multipart_upload(s3, bucket):
    c = s3.client()
    part = os.urandom(5 * 1024 * 1024)
    up = c.create_multipart_upload(Bucket=bucket, Key="big")
    etags = []
    for n in (1, 2):
        r = c.upload_part(Bucket=bucket, Key="big", UploadId=up["UploadId"], PartNumber=n, Body=part)
        etags.append({"PartNumber": n, "ETag": r["ETag"]})
    c.complete_multipart_upload(Bucket=bucket, Key="big", UploadId=up["UploadId"],
                                MultipartUpload={"Parts": etags})
    assert c.head_object(Bucket=bucket, Key="big")["ContentLength"] == 2 * len(part)


def test_s3_bucket_fixture_is_fresh(s3, bucket):
    names = [b["Name"] for b in s3.client().list_buckets()["Buckets"]]
    assert bucket in names
    assert s3.client().list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0


def test_s3_wrong_secret_is_refused(s3, bucket):
    bad = boto3.session.Session().client("s3", endpoint_url=s3.endpoint_url, aws_access_key_id=s3.access_key,
                                         aws_secret_access_key="wrong-" + s3.secret_key, region_name=s3.region)
    with pytest.raises(ClientError) as exc:
        bad.put_object(Bucket=bucket, Key="x", Body=b"x")
    assert exc.value.response["Error"]["Code"] in ("SignatureDoesNotMatch", "AccessDenied", "InvalidAccessKeyId")
    unknown = boto3.session.Session().client("s3", endpoint_url=s3.endpoint_url, aws_access_key_id="nobody",
                                             aws_secret_access_key="nothing", region_name=s3.region)
    with pytest.raises(ClientError):
        unknown.list_objects_v2(Bucket=bucket)


def test_s3_env_is_enough_for_a_plain_boto3_client(s3, bucket):
    code = ("import boto3, sys; c = boto3.client('s3'); "
            "c.put_object(Bucket=sys.argv[1], Key='from-env', Body=b'ok'); "
            "print(c.get_object(Bucket=sys.argv[1], Key='from-env')['Body'].read().decode())")
    env = dict((k, v) for k, v in os.environ.items() if not k.startswith("AWS_"))
    env.update(s3.env())
    env["AWS_CONFIG_FILE"] = env["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull
    res = subprocess.run([sys.executable, "-c", code, bucket], env=env, capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "ok"


def test_s3_listens_on_loopback_only_and_no_telemetry(s3):
    assert_loopback_only(s3.pid)
    with open("/proc/%d/cmdline" % s3.pid, "rb") as f:
        argv = f.read().split(b"\0")
    assert b"-master.telemetry=false" in argv
    # every listener is a port we chose (nothing on a default such as 8333/9333/8181)
    chosen = set(s3.ports.values()) | {s3.ports["admin.port"] + 10000}
    ports = {p for _proto, _ip, p in netcheck.listening_sockets(s3.pid)}
    assert ports <= chosen, ports - chosen


# ------------------------------------------------------------------ the collection path


def test_collection_is_importable_the_ansible_way():
    import ansible_collections.drkit.backup.plugins.module_utils.core.errors as errors_mod

    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert os.path.realpath(errors_mod.__file__) == os.path.join(repo, "plugins", "module_utils", "core", "errors.py")
    paths = os.environ["ANSIBLE_COLLECTIONS_PATH"].split(os.pathsep)
    assert os.path.isdir(os.path.join(paths[0], "ansible_collections", "drkit", "backup", "plugins"))


def test_tmp_storage_url(tmp_storage_url, tmp_path):
    assert tmp_storage_url == "file://" + str(tmp_path / "storage")
    assert os.path.isdir(str(tmp_path / "storage"))
