# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Runs the molecule scenarios (molecule/*/) against real services.

The scenarios use molecule's default driver on this machine
(ansible_connection: local): the roles install for real (/opt/drkit,
/etc/drkit, /etc/cron.d/drkit-molecule-*, ...). This wrapper starts what
they back up -- PostgreSQL (the session's scratch cluster, with a sample
database), Redis running as the ``redis`` OS user (so the rdb mode reads the
RDB file as in production) and SeaweedFS S3 -- on free loopback ports in
their own directories, and hands the details to the scenario in a 0600 JSON
file (DRKIT_MOLECULE_VARS). Each scenario runs converge, idempotence (a
second converge must change nothing), check mode on the converged host
(it must report changed=0, asserted here: drift detection relies on it)
and the testinfra verifier, which runs the scheduled command lines for
real; the default scenario runs check mode on the fresh host first, too.
"""

import json
import re
import os
import secrets
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml
from helpers import REPO_ROOT, drop_database, make_sample_database

from ansible_collections.drkit.backup.plugins.module_utils.core.scratch import make_scratch_dir
from support.redis_server import ScratchRedis

VENV_BIN = Path(sys.executable).parent


def _redis_as_user(base_dir, user="redis"):
    """A ScratchRedis whose server runs as ``user`` (root only starts it):
    its directory and config belong to that user, as on a real host."""
    base_dir = Path(base_dir)
    base_dir.mkdir(mode=0o700)
    shutil.chown(str(base_dir), user, user)
    wrapper = base_dir.parent / ("redis-as-%s.sh" % user)
    wrapper.write_text("#!/bin/sh\n# hand the config (written by root) to the server user, then drop privileges\n"
                       "chown %s:%s \"$1\"\nexec setpriv --reuid %s --regid %s --init-groups %s \"$@\"\n"
                       % (user, user, user, user, shutil.which("redis-server") or "/usr/bin/redis-server"))
    wrapper.chmod(0o755)
    return ScratchRedis(str(base_dir), password=secrets.token_urlsafe(16), server_bin=str(wrapper))


@pytest.fixture(scope="module")
def molecule_vars(pg, s3, scratch_root, tmp_path_factory):
    if os.geteuid() != 0:
        pytest.fail("the molecule scenarios install into /opt, /etc and /var: run the tests as root (CI does)")
    db1, db2 = "mol_app_%s" % uuid.uuid4().hex[:8], "mol_other_%s" % uuid.uuid4().hex[:8]
    make_sample_database(pg, db1, scale=0.002)
    pg.psql('CREATE DATABASE "%s"' % db2)
    pg.psql("CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 500) g", dbname=db2)
    bucket = "drkit-molecule-%s" % uuid.uuid4().hex[:8]
    s3.create_bucket(bucket)
    work = Path(make_scratch_dir(prefix="molecule-", parent=str(scratch_root)))
    files = work / "file-storage"
    files.mkdir()
    shutil.chown(str(files), "postgres", "postgres")
    (work / "systemd").mkdir()
    redis = _redis_as_user(work / "redis")
    redis.start()
    data = {
        "molecule_pg_port": pg.port,
        "molecule_pg_password": pg.password,
        "molecule_pg_database": db1,
        "molecule_pg_database2": db2,
        "molecule_redis_port": redis.port,
        "molecule_redis_password": redis.password,
        "molecule_s3_storage_url": "s3://%s" % bucket,
        "molecule_s3_port": int(s3.endpoint_url.rsplit(":", 1)[1]),
        "molecule_s3_options": {"endpoint_url": s3.endpoint_url, "access_key": s3.access_key,
                                "secret_key": s3.secret_key, "region": s3.region},
        "molecule_file_storage_url": "file://%s" % files,
        "molecule_metrics_dir": str(work / "metrics"),
        "molecule_rules_dir": str(work / "rules"),
        "molecule_unit_dir": str(work / "systemd"),
    }
    path = tmp_path_factory.mktemp("molecule") / "vars.json"
    fd = os.open(str(path), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh)
    try:
        yield path, data
    finally:
        redis.destroy()
        drop_database(pg, db1)
        drop_database(pg, db2)


# pyproject.toml and requirements/: the runtime role builds its wheel from them
SNAPSHOT = ("galaxy.yml", "pyproject.toml", "meta", "plugins", "roles", "bin", "requirements", "playbooks")


def snapshot_collection(dest):
    """A copy of the collection as it is now, for ANSIBLE_COLLECTIONS_PATH."""
    root = Path(dest) / "ansible_collections" / "drkit" / "backup"
    root.mkdir(parents=True)
    for name in SNAPSHOT:
        src = REPO_ROOT / name
        if src.is_dir():
            shutil.copytree(str(src), str(root / name), ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        elif src.exists():
            shutil.copy2(str(src), str(root / name))
    return str(dest)


def run_molecule(scenario, vars_file, tmp_path):
    env = dict(os.environ)
    env.update({
        "PATH": str(VENV_BIN) + os.pathsep + env.get("PATH", ""),
        "DRKIT_MOLECULE_VARS": str(vars_file),
        "DRKIT_MOLECULE_PYTHON": sys.executable,
        "DRKIT_MOLECULE_COLLECTIONS": snapshot_collection(tmp_path / "collections"),
        "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible-local"),
        "ANSIBLE_REMOTE_TEMP": str(tmp_path / "ansible-remote"),
        "ANSIBLE_NOCOLOR": "1",
        "NO_COLOR": "1",
        "PY_COLORS": "0",
    })
    for k in ("ANSIBLE_CONFIG", "ANSIBLE_STDOUT_CALLBACK", "ANSIBLE_CALLBACK_PLUGINS"):
        env.pop(k, None)
    proc = subprocess.run([str(VENV_BIN / "molecule"), "test", "-s", scenario], cwd=str(REPO_ROOT), env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True,
                          timeout=1200, check=False)
    return proc


@pytest.mark.parametrize("scenario", ["default", "systemd"])
def test_molecule_scenario(scenario, molecule_vars, tmp_path):
    vars_file, data = molecule_vars
    proc = run_molecule(scenario, vars_file, tmp_path)
    out = proc.stdout
    assert proc.returncode == 0, out[-12000:]
    # what each step proved, read back from molecule's own output
    with open(str(REPO_ROOT / "molecule" / scenario / "molecule.yml")) as fh:
        sequence = yaml.safe_load(fh)["scenario"]["test_sequence"]
    assert {"converge", "idempotence", "verify"} <= set(sequence)
    for step in sequence:
        assert "%s > %s: Executed: Successful" % (scenario, step) in out, out[-6000:]
    # check mode after idempotence, on the converged host: nothing to change
    assert "check" in sequence[sequence.index("idempotence"):]
    converged_check = out.split("[%s > idempotence] Executed" % scenario, 1)[1].split(
        "[%s > check] Executed" % scenario, 1)[0]
    recap = re.findall(r"^instance\s*:.*$", converged_check, re.M)
    assert recap and all(" changed=0 " in line for line in recap), converged_check[-6000:]
    assert re.search(r"=+ \d+ passed", out), out[-6000:]
    for secret in (data["molecule_pg_password"], data["molecule_redis_password"],
                   data["molecule_s3_options"]["secret_key"]):
        assert secret not in out
