# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The pre-flight probe for real (issue 14, item 1): ``--check`` of the
backup commands, run as the job's OS user (``postgres``, as the roles run
it), says "Would back up" only where the real run can write. On file:// it
writes and removes a probe object; on S3 (SeaweedFS) it leaves one under
probe/ and deletes nothing. A root the user cannot write is exit code 3
with a message naming the root, the user and the fix. ``drkit probe`` is
the same check on its own (the WAL archive role runs it as postgres)."""

import os
import subprocess
import sys
import uuid

import pytest
from ansible_collections.drkit.backup.plugins.module_utils.core.errors import StorageError
from ansible_collections.drkit.backup.plugins.module_utils.storage.factory import open_storage
from helpers import DRKIT, s3_module_args

USER = "postgres"


@pytest.fixture(autouse=True)
def _needs_root():
    if os.geteuid() != 0:
        pytest.fail("these tests run drkit as the postgres OS user: run them as root (CI does)")


def drkit_as(user, args, env=None):
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run(["runuser", "-u", user, "--", sys.executable, str(DRKIT)] + list(args), env=e,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, timeout=300,
                          check=False)


def pg_check(pg, url):
    return drkit_as(USER, ["pg-backup", "--check", "--host", pg.host, "--port", str(pg.port), "--user",
                           pg.superuser, "-d", "postgres", "--pg-bin-dir", pg.bin_dir, "--storage-url", url],
                    env={"PGPASSWORD": pg.password})


def owned_by(path, user, mode):
    path.mkdir(mode=mode)
    os.chmod(str(path), mode)
    subprocess.run(["chown", user, str(path)], check=True)
    return path


def test_pg_backup_check_as_the_job_user_fails_on_a_root_owned_directory(pg, scratch_dir):
    root = owned_by(scratch_dir / "drkit", "root", 0o755)  # `mkdir /var/backups/drkit` as root
    p = pg_check(pg, "file://%s" % root)
    assert p.returncode == 3, (p.returncode, p.stdout, p.stderr)
    assert "Would back up" not in p.stdout
    assert "Cannot write to file://%s as user postgres" % root in p.stderr
    assert "owned by root:root, mode 0755" in p.stderr and "chown postgres %s" % root in p.stderr
    assert pg.password not in p.stderr
    assert os.listdir(str(root)) == []


def test_pg_backup_check_as_the_job_user_fails_where_it_cannot_create_the_root(pg, scratch_dir):
    parent = owned_by(scratch_dir / "var-backups", "root", 0o755)
    p = pg_check(pg, "file://%s/drkit" % parent)
    assert p.returncode == 3, (p.returncode, p.stdout, p.stderr)
    assert "does not exist and postgres may not create it in %s" % parent in p.stderr
    assert "install -d -o postgres -m 0750 %s/drkit" % parent in p.stderr
    assert os.listdir(str(parent)) == []


def test_pg_backup_check_passes_where_the_job_user_can_write_and_leaves_nothing(pg, scratch_dir):
    root = owned_by(scratch_dir / "drkit", USER, 0o750)
    p = pg_check(pg, "file://%s" % root)
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("Would back up database postgres")
    assert os.listdir(str(root)) == []
    # and a missing root below a directory postgres owns: created to try, removed again
    p = pg_check(pg, "file://%s/new/deeper" % root)
    assert p.returncode == 0, p.stderr
    assert os.listdir(str(root)) == []


def test_redis_snapshot_check_as_the_job_user_fails_on_a_root_owned_directory(redis_server, scratch_dir):
    root = owned_by(scratch_dir / "redis", "root", 0o755)
    p = drkit_as(USER, ["redis-snapshot", "--check", "--mode", "remote", "--host", redis_server.host,
                        "--port", str(redis_server.port), "--storage-url", "file://%s" % root],
                 env={"REDISCLI_AUTH": redis_server.password})
    assert p.returncode == 3, (p.returncode, p.stdout, p.stderr)
    assert "Cannot write to file://%s as user postgres" % root in p.stderr
    assert redis_server.password not in p.stderr
    owned = owned_by(scratch_dir / "redis-ok", USER, 0o750)
    p = drkit_as(USER, ["redis-snapshot", "--check", "--mode", "remote", "--host", redis_server.host,
                        "--port", str(redis_server.port), "--storage-url", "file://%s" % owned],
                 env={"REDISCLI_AUTH": redis_server.password})
    assert p.returncode == 0 and p.stdout.startswith("Would back up Redis"), p.stderr


def test_drkit_probe_command_on_file_storage(scratch_dir):
    root = owned_by(scratch_dir / "wal", "root", 0o755)
    p = drkit_as(USER, ["probe", "--storage-url", "file://%s" % root])
    assert p.returncode == 3 and "Cannot write to file://%s as user postgres" % root in p.stderr, p.stderr
    os.chown(str(root), int(subprocess.check_output(["id", "-u", USER])), -1)
    p = drkit_as(USER, ["probe", "--storage-url", "file://%s" % root])
    assert p.returncode == 0, p.stderr
    assert "file://%s is writable: probe/" % root in p.stdout and "removed" in p.stdout
    assert os.listdir(str(root)) == []


# --------------------------------------------------------------------------
# S3 (SeaweedFS)


def s3_env(s3, access_key=None, secret_key=None):
    return {"AWS_ACCESS_KEY_ID": access_key or s3.access_key, "AWS_SECRET_ACCESS_KEY": secret_key or s3.secret_key,
            "AWS_ENDPOINT_URL": s3.endpoint_url, "AWS_DEFAULT_REGION": s3.region}


def test_s3_probe_leaves_one_create_only_probe_object_and_deletes_nothing(s3, bucket):
    st = open_storage("s3://%s/pg/prod" % bucket, **s3_module_args(s3))
    first = st.probe(user="postgres")
    second = st.probe(user="postgres")
    assert first != second and first.startswith("probe/") and second.startswith("probe/")
    keys = sorted(o["Key"] for o in s3.client().list_objects_v2(Bucket=bucket).get("Contents", []))
    assert keys == sorted(["pg/prod/" + first, "pg/prod/" + second])  # under the prefix, both kept
    assert b'"user": "postgres"' in st.get_bytes(first)


def test_s3_probe_through_the_cli_and_pg_backup_check(pg, s3, bucket):
    url = "s3://%s/cli" % bucket
    p = drkit_as(USER, ["probe", "--storage-url", url], env=s3_env(s3))
    assert p.returncode == 0, p.stderr
    assert "kept for the lifecycle rule on probe/" in p.stdout
    p = drkit_as(USER, ["pg-backup", "--check", "--host", pg.host, "--port", str(pg.port), "--user", pg.superuser,
                        "-d", "postgres", "--pg-bin-dir", pg.bin_dir, "--storage-url", url],
                 env=dict(s3_env(s3), PGPASSWORD=pg.password))
    assert p.returncode == 0 and p.stdout.startswith("Would back up"), p.stderr
    keys = [o["Key"] for o in s3.client().list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert len(keys) == 2 and all(k.startswith("cli/probe/") for k in keys), keys


def test_s3_probe_with_read_only_credentials_fails_before_a_backup_would(s3, bucket):
    """Credentials that may read and list (HEAD bucket passes) but not put:
    the old check mode said "Would back up"; the probe is refused."""
    st = open_storage("s3://%s/ro" % bucket, endpoint_url=s3.endpoint_url, region=s3.region,
                      access_key=s3.readonly_access_key, secret_key=s3.readonly_secret_key)
    st.check_writable()  # what check mode did before: passes
    with pytest.raises(StorageError) as e:
        st.probe(user="postgres")
    msg = str(e.value)
    assert "Cannot write to s3://%s/ro" % bucket in msg and "user postgres" in msg
    assert "access denied" in msg and "probe/ included" in msg
    assert s3.readonly_secret_key not in msg
    assert s3.client().list_objects_v2(Bucket=bucket).get("Contents", []) == []


def test_s3_probe_of_a_missing_bucket(s3):
    st = open_storage("s3://drkit-missing-%s/x" % uuid.uuid4().hex[:8], **s3_module_args(s3))
    with pytest.raises(StorageError) as e:
        st.probe(user="postgres")
    assert "does not exist" in str(e.value) and "Create the bucket" in str(e.value)
