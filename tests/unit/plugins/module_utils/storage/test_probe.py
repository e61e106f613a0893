# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The pre-flight probe (Storage.probe, base.write_probe): the storage
contract's create-only ``probe/<host>-<time>`` object. On file:// it is
created, written, fsynced and removed by the user the job runs as (here the
OS user ``nobody`` in a child process: root may write anywhere), leaving
nothing behind, and a root that user cannot write is an error naming the
root, the user and the fix. On S3 (obstore faked here; the real server in
tests/integration/test_storage_s3.py) it is one conditional PUT that is
never deleted."""

import datetime
import json
import os
import pwd
import stat

import pytest
from ansible_collections.drkit.backup.plugins.module_utils.core.errors import StorageError
from ansible_collections.drkit.backup.plugins.module_utils.storage import base
from ansible_collections.drkit.backup.plugins.module_utils.storage.base import ObjectExists, probe_key
from ansible_collections.drkit.backup.plugins.module_utils.storage.file import FileStorage
from ansible_collections.drkit.backup.plugins.module_utils.storage.s3 import S3Storage

NEEDS_ROOT = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")


def as_user(func, user="nobody"):
    """Run ``func()`` in a child process as ``user``; returns ("ok", its
    result) or (the exception's class name, its message)."""
    pw = pwd.getpwnam(user)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.close(r)
        try:
            os.setgroups([])
            os.setgid(pw.pw_gid)
            os.setuid(pw.pw_uid)
            out = ["ok", func()]
        except Exception as e:  # noqa: BLE001 - reported to the parent
            out = [type(e).__name__, str(e)]
        os.write(w, json.dumps(out).encode())
        os._exit(0)
    os.close(w)
    chunks = []
    while True:
        chunk = os.read(r, 65536)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(r)
    os.waitpid(pid, 0)
    return tuple(json.loads(b"".join(chunks).decode()))


def tree(path):
    return sorted(os.path.relpath(os.path.join(d, n), str(path)) for d, dirs, files in os.walk(str(path))
                  for n in dirs + files)


def test_probe_key_is_host_and_utc_time_under_the_probe_prefix():
    when = datetime.datetime(2026, 11, 25, 21, 15, 0, 123456, tzinfo=datetime.timezone.utc)
    assert probe_key("db1.example.com", when) == "probe/db1.example.com-20261125T211500.123456Z"
    assert probe_key("we/ird host", when) == "probe/we_ird_host-20261125T211500.123456Z"
    base.check_key(probe_key())  # a valid storage key whatever the host name


def test_file_probe_writes_fsyncs_and_removes_leaving_nothing(tmp_path, monkeypatch):
    root = tmp_path / "root"
    root.mkdir(mode=0o700)
    (root / "backups").mkdir()
    synced = []
    real_fsync = os.fsync

    def fsync(fd):
        synced.append(fd)
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    key = FileStorage(str(root)).probe(user="someone")
    assert key.startswith("probe/") and synced  # the file (and directory) were fsynced
    assert tree(root) == ["backups"]  # the probe and its probe/ directory are gone


def test_file_probe_of_a_missing_root_creates_nothing_that_stays(tmp_path):
    root = tmp_path / "a" / "b" / "root"
    FileStorage(str(root)).probe()
    assert not (tmp_path / "a").exists()  # what it created to try, it removed again


def test_file_probe_leaves_a_probe_key_that_is_taken_alone(tmp_path, monkeypatch):
    fs = FileStorage(str(tmp_path / "root"))
    fs.put_bytes("probe/taken", b"someone else's")
    keys = iter(["probe/taken", "probe/free"])
    monkeypatch.setattr(base, "probe_key", lambda: next(keys))
    assert fs.probe() == "probe/free"
    assert fs.get_bytes("probe/taken") == b"someone else's"
    assert tree(fs.root) == ["probe", "probe/taken"]


@NEEDS_ROOT
def test_file_probe_as_the_owner_of_the_root_passes(scratch_dir):
    root = scratch_dir / "mine"
    root.mkdir(mode=0o750)
    os.chown(str(root), pwd.getpwnam("nobody").pw_uid, -1)
    assert as_user(FileStorage(str(root)).probe)[0] == "ok"
    assert os.listdir(str(root)) == []


@NEEDS_ROOT
def test_file_probe_of_a_root_owned_directory_names_root_user_and_fix(scratch_dir):
    root = scratch_dir / "backups"
    root.mkdir(mode=0o755)  # root:root 0755, as `mkdir /var/backups/drkit` leaves it
    kind, msg = as_user(FileStorage(str(root)).probe)
    assert kind == "StorageError", msg
    assert "Cannot write to file://%s as user nobody" % root in msg
    assert "owned by root:root, mode 0755" in msg
    assert "chown nobody %s" % root in msg and "chmod 0750" in msg
    assert os.listdir(str(root)) == []


@NEEDS_ROOT
def test_file_probe_of_a_root_it_cannot_create_says_create_it_for_the_user(scratch_dir):
    parent = scratch_dir / "var-backups"
    parent.mkdir(mode=0o755)
    root = parent / "drkit"
    kind, msg = as_user(FileStorage(str(root)).probe)
    assert kind == "StorageError", msg
    assert "%s does not exist and nobody may not create it in %s (owned by root:root, mode 0755)" % (
        root, parent) in msg
    assert "install -d -o nobody -m 0750 %s" % root in msg and "let the drkit.backup role" in msg
    assert not root.exists()


@NEEDS_ROOT
def test_file_probe_behind_a_closed_directory_names_that_directory(scratch_dir):
    closed = scratch_dir / "closed"
    closed.mkdir(mode=0o700)
    (closed / "root").mkdir(mode=0o777)
    kind, msg = as_user(FileStorage(str(closed / "root")).probe)
    assert kind == "StorageError", msg
    assert "may not enter %s (owned by root:root, mode 0700)" % closed in msg


@NEEDS_ROOT
def test_real_run_check_writable_gives_the_same_message(scratch_dir):
    root = scratch_dir / "backups"
    root.mkdir(mode=0o755)
    kind, msg = as_user(FileStorage(str(root)).check_writable)
    assert kind == "StorageError" and "as user nobody" in msg and "chown nobody %s" % root in msg


def test_file_probe_that_cannot_create_its_file_says_why(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (root / "probe").write_text("a file where the probe directory goes")
    with pytest.raises(StorageError) as e:
        FileStorage(str(root)).probe(user="someone")
    assert "Cannot write to file://%s as user someone" % root in str(e.value)
    assert stat.S_ISREG(os.stat(str(root / "probe")).st_mode)


# --------------------------------------------------------------------------
# S3 (obstore faked as in test_s3.py)


class PermissionDeniedError(Exception):
    pass


class ProbeObstore(object):
    """What S3Storage.probe calls of obstore; records the calls."""

    def __init__(self, taken=(), deny_put=False):
        self.calls = []
        self.objects = dict((k, b"x") for k in taken)
        self.deny_put = deny_put

    def list_with_delimiter(self, store, prefix=None):
        self.calls.append(("list_with_delimiter", prefix))
        return {"common_prefixes": [], "objects": []}

    def put(self, store, path, data, mode=None, use_multipart=None):
        self.calls.append(("put", path, mode, bytes(data)))
        if self.deny_put:
            raise PermissionDeniedError("The operation lacked the necessary privileges: AccessDenied")
        if mode == "create" and path in self.objects:
            raise type("AlreadyExistsError", (Exception,), {})("Object at location %s already exists" % path)
        self.objects[path] = bytes(data)

    def head(self, store, path):
        self.calls.append(("head", path))
        if path not in self.objects:
            raise type("NotFoundError", (Exception,), {})("not found")
        return {"size": len(self.objects[path]), "last_modified": datetime.datetime(2026, 1, 1)}

    def delete(self, store, paths):  # pragma: no cover - must not be called
        self.calls.append(("delete", list(paths)))


def s3_with(fake, prefix):
    s = S3Storage("bkt", prefix, store=object())
    s.obstore = fake
    return s


def test_s3_probe_is_one_conditional_put_under_the_prefix_and_never_deletes():
    fake = ProbeObstore()
    key = s3_with(fake, "pg/prod").probe(user="postgres")
    assert key.startswith("probe/")
    assert [c[0] for c in fake.calls] == ["list_with_delimiter", "put", "head"]
    put = fake.calls[1]
    assert put[1] == "pg/prod/" + key and put[2] == "create"
    body = json.loads(put[3].decode())
    assert body["probe"] == key and body["user"] == "postgres"
    assert "pg/prod/" + key in fake.objects  # left for the lifecycle rule


def test_s3_probe_takes_a_new_key_when_one_is_taken(monkeypatch):
    fake = ProbeObstore(taken=["probe/taken"])
    keys = iter(["probe/taken", "probe/free"])
    monkeypatch.setattr(base, "probe_key", lambda: next(keys))
    assert s3_with(fake, "").probe() == "probe/free"
    assert fake.objects["probe/taken"] == b"x"


def test_s3_probe_denied_names_storage_user_and_the_probe_prefix():
    with pytest.raises(StorageError) as e:
        s3_with(ProbeObstore(deny_put=True), "pg").probe(user="postgres")
    msg = str(e.value)
    assert "Cannot write to s3://bkt/pg with the S3 credentials of user postgres" in msg
    assert "access denied" in msg and "under pg/, probe/ included" in msg


def test_backup_check_mode_result_names_the_probe(tmp_path):
    from ansible_collections.drkit.backup.plugins.module_utils.repo.session import BackupJob
    job = BackupJob(FileStorage(str(tmp_path / "root")), "pg_logical")
    job.check_storage()
    changed, res = job.planned("Would back up")
    assert changed and res["probe"].startswith("probe/") and not (tmp_path / "root").exists()


def test_write_probe_gives_up_after_its_attempts(tmp_path, monkeypatch):
    fs = FileStorage(str(tmp_path / "root"))

    def taken(*args, **kwargs):
        raise ObjectExists("taken")

    monkeypatch.setattr(fs, "put_bytes", taken)
    with pytest.raises(StorageError) as e:
        base.write_probe(fs, "someone")
    assert "keys in a row were taken" in str(e.value)
