# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Shared helpers for the integration tests.

Running modules through Ansible for real::

    from helpers import run_playbook, task

    run = run_playbook([task("drkit.backup.pg_backup", database="db", storage_url=url,
                             login_password="{{ pw }}", register="b")],
                       extra_vars={"pw": secret})
    assert run.rc == 0, run.describe()
    res = run.result("drkit.backup.pg_backup")   # the task's result dict

* The playbook runs on ``localhost`` with ``-c local`` and
  ``ansible_python_interpreter=sys.executable`` (the test venv), with
  ``ANSIBLE_COLLECTIONS_PATH=build/collections`` (tests/conftest.py links the
  checkout there).
* Extra vars go through a 0600 JSON file (``-e @file``), never argv, so a
  password passed as an extra var does not show in the process list.
* Results come from a tiny test-only stdout callback
  (``callback_plugins/drkit_test_json.py``; ansible-core 2.19 no longer ships
  a ``json`` callback), one entry per task (per host), failures included.
  ``run.text`` is everything Ansible printed plus the results, for "the
  secret never shows" assertions.

Restoring BY HAND (independently of the engine) to check a backup:
``fetch_artifact`` (raw bytes from file:// or s3://, checked against the
manifest with hashlib), ``decompress_to`` (zstandard), ``restore_by_hand``
(pg_restore into a new database) and ``table_row_counts``.
"""

import hashlib
import io
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import zstandard

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_COLLECTIONS = REPO_ROOT / "build" / "collections"
CALLBACK_DIR = Path(__file__).resolve().parent / "callback_plugins"
VENV_BIN = Path(sys.executable).parent
DRKIT = REPO_ROOT / "bin" / "drkit"


def _ansible_bin(name):
    cand = VENV_BIN / name
    return str(cand) if cand.exists() else (shutil.which(name) or name)


def task(module, register=None, name=None, **args):
    """One task dict: ``task("drkit.backup.pg_backup", database="x")``.
    Task keywords (ignore_errors, check_mode, no_log, loop, when...) can be
    given with a leading underscore: ``_ignore_errors=True``."""
    t = {"name": name or module}
    keywords = dict((k[1:], args.pop(k)) for k in list(args) if k.startswith("_"))
    t[module] = args
    if register:
        t["register"] = register
    t.update(keywords)
    return t


class PlaybookRun(object):
    """Outcome of run_playbook: rc, stdout, stderr, results (list of
    {task, action, host, status, ignore_errors, result, seconds}), stats."""

    def __init__(self, rc, stdout, stderr, data, playbook):
        self.rc = rc
        self.stdout = stdout
        self.stderr = stderr
        self.results = data.get("results", [])
        self.stats = data.get("stats", {})
        self.playbook = playbook
        self.text = "\n".join([stdout, stderr, json.dumps(data, default=str)])

    def entries(self, name):
        return [r for r in self.results if r["task"] == name]

    def entry(self, name):
        found = self.entries(name)
        if not found:
            raise AssertionError("no result for task %r\n%s" % (name, self.describe()))
        return found[-1]

    def result(self, name):
        """The result dict of the last run of the task named ``name``."""
        return self.entry(name)["result"]

    def failed(self, name):
        return self.entry(name)["status"] == "failed"

    def describe(self):
        """A readable dump for assertion messages."""
        lines = ["rc=%s" % self.rc]
        for r in self.results:
            res = r["result"]
            lines.append("%-8s %6.2fs %s: %s" % (r["status"], r.get("seconds", 0), r["task"], res.get("msg", "")))
        lines.append("--- stderr (tail)\n" + self.stderr[-3000:])
        return "\n".join(lines)


def ansible_environment(tmp_dir, env=None):
    """Environment for ansible-playbook / ansible-doc against this checkout."""
    e = dict(os.environ)
    prev = e.get("ANSIBLE_COLLECTIONS_PATH", "")
    paths = [str(BUILD_COLLECTIONS)] + [p for p in prev.split(os.pathsep) if p and p != str(BUILD_COLLECTIONS)]
    e.update({
        "ANSIBLE_COLLECTIONS_PATH": os.pathsep.join(paths),
        "ANSIBLE_CALLBACK_PLUGINS": str(CALLBACK_DIR),
        "ANSIBLE_STDOUT_CALLBACK": "drkit_test_json",
        "ANSIBLE_LOCAL_TEMP": os.path.join(tmp_dir, "ansible-local"),
        "ANSIBLE_REMOTE_TEMP": os.path.join(tmp_dir, "ansible-remote"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "ANSIBLE_RETRY_FILES_ENABLED": "0",
        "ANSIBLE_PYTHON_INTERPRETER": sys.executable,
        "ANSIBLE_DEPRECATION_WARNINGS": "0",
        "PATH": str(VENV_BIN) + os.pathsep + e.get("PATH", ""),
    })
    e.pop("ANSIBLE_CONFIG", None)
    if env:
        e.update(env)
    return e


def run_playbook(tasks, extra_vars=None, check=False, env=None, tmp_dir=None, timeout=600,
                 play_vars=None, extra_args=()):
    """Run ``tasks`` (a list of task dicts) in one play on localhost.

    extra_vars: dict passed as ``-e @file`` (0600 JSON file).
    check: run with ``--check``.
    env: extra environment variables (e.g. AWS_* for S3 fallbacks).
    Returns a PlaybookRun. Never raises on a failed playbook: assert on
    ``run.rc`` / ``run.failed(name)`` yourself."""
    import yaml  # the venv has PyYAML (ansible needs it)

    own_tmp = tmp_dir is None
    tmp_dir = str(tmp_dir) if tmp_dir else tempfile.mkdtemp(prefix="drkit-play-")
    work = tempfile.mkdtemp(prefix="play-", dir=tmp_dir)
    try:
        play = {"name": "drkit test", "hosts": "localhost", "gather_facts": False,
                "vars": dict(play_vars or {}), "tasks": list(tasks)}
        playbook = os.path.join(work, "playbook.yml")
        with open(playbook, "w") as fh:
            yaml.safe_dump([play], fh, sort_keys=False)
        variables = {"ansible_python_interpreter": sys.executable}
        variables.update(extra_vars or {})
        vars_file = os.path.join(work, "vars.json")
        fd = os.open(vars_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(variables, fh)
        results_file = os.path.join(work, "results.json")
        argv = [_ansible_bin("ansible-playbook"), "-i", "localhost,", "-c", "local",
                "-e", "@" + vars_file, playbook]
        if check:
            argv.append("--check")
        argv.extend(extra_args)
        e = ansible_environment(work, env)
        e["DRKIT_TEST_RESULTS_FILE"] = results_file
        proc = subprocess.run(argv, cwd=work, env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              timeout=timeout, check=False)
        data = {}
        if os.path.exists(results_file):
            with open(results_file) as fh:
                data = json.load(fh)
        with open(playbook) as fh:
            text = fh.read()
        return PlaybookRun(proc.returncode, proc.stdout.decode("utf-8", "replace"),
                           proc.stderr.decode("utf-8", "replace"), data, text)
    finally:
        if own_tmp:
            shutil.rmtree(tmp_dir, ignore_errors=True)
        else:
            shutil.rmtree(work, ignore_errors=True)


def run_drkit(args, env=None, timeout=300, config=None, tmp_dir=None):
    """Run bin/drkit with the test venv's Python. ``config``: dict written to
    a 0600 YAML file passed as --config (how secrets reach the CLI).
    Returns subprocess.CompletedProcess with text stdout/stderr."""
    import yaml

    argv = [sys.executable, str(DRKIT)] + list(args)
    cfg_dir = None
    if config is not None:
        cfg_dir = tempfile.mkdtemp(prefix="drkit-cfg-", dir=str(tmp_dir) if tmp_dir else None)
        path = os.path.join(cfg_dir, "drkit.yml")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            yaml.safe_dump(config, fh)
        argv.extend(["--config", path])
    e = dict(os.environ)
    e.update(env or {})
    try:
        return subprocess.run(argv, env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              timeout=timeout, check=False, universal_newlines=True)
    finally:
        if cfg_dir:
            shutil.rmtree(cfg_dir, ignore_errors=True)


# --------------------------------------------------------------------------
# pg connection options for modules / the CLI


def pg_module_args(pg, database, password=None, user=None, port=None):
    """pg_backup-style connection options for the ``pg`` fixture."""
    return {"login_host": pg.host, "port": port or pg.port, "login_user": user or pg.superuser,
            "login_password": password if password is not None else pg.password, "database": database}


def s3_module_args(s3):
    return {"endpoint_url": s3.endpoint_url, "access_key": s3.access_key,
            "secret_key": s3.secret_key, "region": s3.region}


def engine_params(pg, url, s3=None, **extra):
    """Engine params (the module option names) for the ``pg`` fixture and a
    storage_url (the S3 options when it is s3://), no database."""
    params = pg_module_args(pg, None)
    params.pop("database")
    params["storage_url"] = url
    if url.startswith("s3://"):
        params.update(s3_module_args(s3))
    params.update(extra)
    return params


# --------------------------------------------------------------------------
# looking at storage by hand


def file_root(storage_url):
    parts = urlsplit(storage_url)
    assert parts.scheme == "file", storage_url
    return Path(parts.path)


def list_keys(storage_url, s3=None):
    """Every object key under the storage root (file temp names included)."""
    parts = urlsplit(storage_url)
    if parts.scheme == "file":
        root = Path(parts.path)
        if not root.exists():
            return []
        return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    prefix = parts.path.strip("/")
    client = s3.client()
    keys = []
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=parts.netloc,
                                                             Prefix=prefix + "/" if prefix else "")
    for page in pages:
        for o in page.get("Contents", []):
            keys.append(o["Key"][len(prefix) + 1:] if prefix else o["Key"])
    return sorted(keys)


def open_multipart_uploads(s3, bucket):
    """Multipart uploads left open in a bucket (must be [] after any run)."""
    resp = s3.client().list_multipart_uploads(Bucket=bucket)
    return [(u["Key"], u["UploadId"]) for u in resp.get("Uploads", [])]


def fetch_artifact(storage_url, backup_id, artifact, s3=None):
    """Raw stored bytes of one artifact, checked against the manifest entry
    (size and sha256) with hashlib: nothing from the engine is trusted."""
    key = "backups/%s/%s" % (backup_id, artifact["name"])
    parts = urlsplit(storage_url)
    if parts.scheme == "file":
        data = (Path(parts.path) / key).read_bytes()
    else:
        prefix = parts.path.strip("/")
        full = "%s/%s" % (prefix, key) if prefix else key
        data = s3.client().get_object(Bucket=parts.netloc, Key=full)["Body"].read()
    assert len(data) == artifact["size"], "size of %s differs from the manifest" % key
    assert hashlib.sha256(data).hexdigest() == artifact["sha256"], "sha256 of %s differs" % key
    return data


def decompress_to(data, path):
    """zstd-decompress bytes into a file (streaming, any frame size)."""
    with open(path, "wb") as out:
        zstandard.ZstdDecompressor().copy_stream(io.BytesIO(data), out)
    return path


def restore_by_hand(pg, data, fmt, target_db, work_dir, jobs=1):
    """Create ``target_db`` and pg_restore the decompressed artifact into it.
    fmt: 'custom' (a pg_dump -Fc file) or 'directory' (a tar of dump/)."""
    work_dir = Path(work_dir)
    pg.psql('CREATE DATABASE "%s"' % target_db)
    if fmt == "custom":
        source = decompress_to(data, str(work_dir / "restore.pgdump"))
    else:
        tar_path = decompress_to(data, str(work_dir / "restore.tar"))
        with tarfile.open(tar_path) as tar:
            tar.extractall(str(work_dir / "extract"))
        source = str(work_dir / "extract" / "dump")
    argv = [os.path.join(pg.bin_dir, "pg_restore"), "--no-owner", "--exit-on-error",
            "--jobs=%d" % jobs, "-d", target_db, source]
    env = dict(os.environ)
    env.update(pg.env(target_db))
    proc = subprocess.run(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=600, check=False)
    assert proc.returncode == 0, "pg_restore failed: %s" % proc.stderr
    return source


def table_row_counts(pg, dbname, pairs=False):
    """{'schema.table': rows} of every user table, counted with SQL; with
    ``pairs``, {(schema, table): rows} (two tables whose names join to the
    same "schema.table" stay apart)."""
    import psycopg
    from psycopg import sql

    out = {}
    with psycopg.connect(**pg.conninfo(dbname)) as conn, conn.cursor() as cur:
        cur.execute("SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
                    "AND n.nspname NOT LIKE 'pg_toast%' ORDER BY 1, 2")
        for schema, table in cur.fetchall():
            cur.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, table)))
            key = (schema, table) if pairs else "%s.%s" % (schema, table)
            assert key not in out, "%s: two tables join to one name; use pairs=True" % (key,)
            out[key] = cur.fetchone()[0]
    return out


def recorded_counts(manifest):
    """A logical backup's row counts as {'schema.table': rows}, to compare
    with table_row_counts (for databases without two tables whose names
    join to the same string)."""
    rows = manifest["data"]["table_rows"]
    out = dict(("%s.%s" % (r["schema"], r["table"]), r["rows"]) for r in rows)
    assert len(out) == len(rows), "two tables join to one name"
    return out


def set_recorded_count(manifest, name, rows):
    """Edit the row count a manifest recorded for the table 'schema.table'."""
    (entry,) = [r for r in manifest["data"]["table_rows"] if "%s.%s" % (r["schema"], r["table"]) == name]
    entry["rows"] = rows


# --------------------------------------------------------------------------
# a full disk, for real


class SmallTmpfs(object):
    """A real tmpfs of ``size`` bytes mounted on ``path`` (needs root):
    writes beyond it fail with ENOSPC, as on a full disk. ``resize`` gives
    it room (a remount keeps what it holds); unmounted on exit."""

    def __init__(self, path, size):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self._mount("size=%d,mode=0700" % size)

    def _mount(self, options, remount=False):
        argv = ["mount", "-t", "tmpfs", "-o", ("remount," if remount else "") + options, "tmpfs", str(self.path)]
        subprocess.run(argv, check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def resize(self, size):
        self._mount("size=%d" % size, remount=True)

    def contents(self):
        return sorted(str(p.relative_to(self.path)) for p in self.path.rglob("*"))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        subprocess.run(["umount", str(self.path)], check=False)
        return False


def make_blob_database(pg, name, megabytes):
    """A database of about ``megabytes`` MB of random (incompressible) bytea
    in blobs (one row per 256 KiB) and 10 rows in small; its row counts."""
    import psycopg

    pg.psql('CREATE DATABASE "%s"' % name)
    pg.psql("CREATE TABLE blobs (id int PRIMARY KEY, payload bytea);"
            "CREATE TABLE small (id int PRIMARY KEY); INSERT INTO small SELECT generate_series(1, 10);",
            dbname=name)
    # Random bytes made here and COPYed in: much faster than generating them in SQL.
    with psycopg.connect(**pg.conninfo(name)) as conn:
        with conn.cursor().copy("COPY blobs (id, payload) FROM STDIN") as copy:
            for i in range(megabytes * 4):
                copy.write_row((i, os.urandom(256 << 10)))
    return table_row_counts(pg, name)


# --------------------------------------------------------------------------
# source databases


def make_sample_database(pg, name, scale=0.005, seed=7):
    """Create database ``name`` on ``pg`` filled by sample_data.generate
    (the agentic_platform shape) and return its row counts, counted by hand."""
    from ansible_collections.drkit.backup.plugins.module_utils.demo import sample_data

    info = sample_data.generate(pg.conninfo("postgres"), scale=scale, seed=seed, database=name)
    counts = table_row_counts(pg, name)
    assert counts == info["tables"], "sample_data reports other row counts than the database holds"
    return counts


def drop_database(pg, name):
    if pg.is_running():
        pg.psql('DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % name)


def find_children(pid, name):
    """PIDs of descendants of ``pid`` whose command name is ``name``, found
    by scanning /proc (no psutil)."""
    parents = {}
    comms = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as fh:
                stat = fh.read()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces or parentheses
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        parents[int(entry)] = ppid
        comms[int(entry)] = comm
    found = []
    for p, comm in comms.items():
        if comm != name:
            continue
        q = parents.get(p)
        while q and q != pid and q != 1:
            q = parents.get(q)
        if q == pid:
            found.append(p)
    return sorted(found)


def read_proc(pid, what):
    """/proc/<pid>/<what> as bytes ('' when the process is gone)."""
    try:
        with open("/proc/%d/%s" % (pid, what), "rb") as fh:
            return fh.read()
    except OSError:
        return b""


def step_until(pid, reached, timeout=60, run=0.03, drain=0.05):
    """Hold process ``pid`` stopped, letting it run ``run`` seconds at a time
    (and its reader ``drain`` seconds to take what it wrote) until
    ``reached()``: a kill point chosen by what happened (bytes stored, a file
    grown), not by how long it took. Returns with the process STOPPED."""
    deadline = time.time() + timeout
    os.kill(pid, signal.SIGSTOP)
    while not reached():
        assert time.time() < deadline, "the kill point was never reached"
        os.kill(pid, signal.SIGCONT)
        time.sleep(run)
        os.kill(pid, signal.SIGSTOP)
        time.sleep(drain)
    # SIGSTOP is delivered asynchronously: when the point was reached at the
    # first look, the state read right after kill() may still be R
    settle = time.time() + 5
    state = read_proc(pid, "stat").rsplit(b")", 1)[1].split()[0]
    while state != b"T" and time.time() < settle:
        time.sleep(0.01)
        state = read_proc(pid, "stat").rsplit(b")", 1)[1].split()[0]
    assert state == b"T", "process %d is not stopped at the kill point (state %r)" % (pid, state)


def wait_for_child(parent, name, timeout=60, match=None):
    """The pid of the first descendant of ``parent`` called ``name`` (whose
    argv holds ``match`` if given)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        pids = [p for p in find_children(parent, name) if match is None or match in read_proc(p, "cmdline")]
        if pids:
            return pids[0]
        time.sleep(0.005)
    raise AssertionError("%s never started under %d" % (name, parent))


def temp_upload_over(root, size):
    """A file:// storage upload (a temp file) holds more than ``size`` bytes."""
    root = Path(root)
    return root.exists() and any(p.name.startswith(".drkit-tmp-") and p.stat().st_size > size
                                 for p in root.rglob("*") if p.is_file())

# --------------------------------------------------------------------------
# the roles on this machine, every path they write below a scratch root


def role(name):
    return {"name": name, "ansible.builtin.include_role": {"name": name}}


def fresh_paths(root):
    """Every path the roles write, moved below ``root`` (which does not exist)."""
    return {
        "drkit_runtime_prefix": "%s/opt/drkit" % root,
        "drkit_runtime_command": "%s/bin/drkit" % root,
        "drkit_runtime_config_dir": "%s/etc/drkit" % root,
        "drkit_runtime_log_dir": "%s/log" % root,
        "drkit_runtime_lock_dir": "%s/lock" % root,
        "drkit_runtime_logrotate_dir": "%s/logrotate.d" % root,
        "drkit_runtime_install_packages": False,
        "postgresql_backup_metrics_dir": "%s/metrics" % root,
        "postgresql_backup_cron_file": "%s/cron.d/drkit-postgresql" % root,
        "postgresql_backup_install_cron": False,
        "postgresql_backup_databases": ["app", {"name": "other", "schedule": "0 */6 * * *"}],
        "postgresql_backup_storage_url": "s3://bucket/pg",
        "postgresql_backup_storage_options": {"access_key": "AKIAEXAMPLE", "secret_key": "very-secret-key-123"},
        "redis_backup_metrics_dir": "%s/metrics" % root,
        "redis_backup_cron_file": "%s/cron.d/drkit-redis" % root,
        "redis_backup_install_cron": False,
        "redis_backup_manage_persistence": False,
        "redis_backup_storage_url": "file:///srv/backups/redis",
        "redis_backup_login_password": "redis-secret-456",
    }


def role_results(run, name):
    """Results of a task of an included role (Ansible prefixes the role name)."""
    return [r for r in run.results if r["task"].split(" : ", 1)[-1] == name]


def job_host_paths(scratch_dir):
    """(root, wrapper) of a host where the runtime is in place: the
    checkout's drkit behind a wrapper (the runtime install itself is
    skipped, see test_runtime_package.py and the molecule scenarios for it),
    all of it below a directory the postgres OS user can enter."""
    root = scratch_dir / "host"
    for d in ("etc/drkit", "log", "lock", "metrics", "cron.d"):
        (root / d).mkdir(parents=True)
        os.chmod(str(root / d), 0o755)
    os.chmod(str(root), 0o755)
    wrapper = scratch_dir / "drkit"
    wrapper.write_text("#!/bin/sh\nexec %s %s \"$@\"\n" % (shlex.quote(sys.executable), shlex.quote(str(DRKIT))))
    wrapper.chmod(0o755)
    return root, str(wrapper)


def key_files(tmp_path, name):
    """(private key path, public key path, key id) of a new Ed25519 key, as openssl would write them."""
    from cryptography.hazmat.primitives import serialization  # pylint: disable=import-outside-toplevel
    from cryptography.hazmat.primitives.asymmetric import ed25519  # pylint: disable=import-outside-toplevel
    from ansible_collections.drkit.backup.plugins.module_utils.core import signing  # pylint: disable=import-outside-toplevel

    key = ed25519.Ed25519PrivateKey.generate()
    priv = tmp_path / ("%s.key" % name)
    fd = os.open(str(priv), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption()))
    pub = tmp_path / ("%s.pub" % name)
    pub.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo))
    return str(priv), str(pub), signing.key_id(key.public_key())


PG_VERSION = os.environ.get("DRKIT_TEST_PG_VERSION", "15")


class NewCluster(object):
    """Name/port/data dir of a Debian cluster (postgresql-common) a test's
    playbook creates, on a free port; ``drop()`` removes it (fixtures call it
    in their cleanup)."""

    def __init__(self, scratch, prefix="drkit_rebuild"):
        self.name = "%s_%s" % (prefix, uuid.uuid4().hex[:8])
        self.version = PG_VERSION
        self.port = _free_port()
        self.data_dir = str(Path(scratch) / "pgdata")

    def psql(self, sql, dbname="postgres"):
        proc = subprocess.run(["runuser", "-u", "postgres", "--", "psql", "-X", "-A", "-t", "-p", str(self.port),
                               "-d", dbname, "-c", sql], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              universal_newlines=True, check=False)
        assert proc.returncode == 0, proc.stdout
        return proc.stdout.strip()

    def listed(self):
        """Its pg_lsclusters line as fields, or None."""
        out = subprocess.run(["pg_lsclusters", "--no-header"], stdout=subprocess.PIPE, universal_newlines=True,
                             check=True).stdout
        for line in out.splitlines():
            fields = line.split()
            if fields[:2] == [self.version, self.name]:
                return fields
        return None

    def drop(self):
        subprocess.run(["pg_dropcluster", "--stop", self.version, self.name], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, check=False)


def _free_port():
    from ansible_collections.drkit.backup.plugins.module_utils.core.scratch import free_port
    return free_port()
