# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The runbook cannot rot: every command in a ```sh runbook block of
docs/DISASTER-RECOVERY-RUNBOOK.md is exercised here.

* ``drkit ...`` commands run for real, in the runbook's order, with its shell
  variables pointing at a drill: a PostgreSQL cluster archiving its WAL, a
  logical and a physical backup, an accidental DELETE, a Redis instance that
  is lost and restored. Each must exit 0 and do what the runbook says.
* ``ansible-playbook ...`` commands must be, word for word, a command that
  another test runs (test_dr_rebuild.RUNBOOK_COMMAND, run through bash
  with the same variables).
"""

import os
import re
import shlex
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
import yaml
from helpers import REPO_ROOT, table_row_counts
from pitr_source import DRKIT_CMD, ArchivingSource, write_0600
from test_dr_rebuild import RUNBOOK_COMMAND as DR_REBUILD_COMMAND
from test_failover import FAILOVER_COMMAND

from ansible_collections.drkit.backup.plugins.module_utils import cli
from ansible_collections.drkit.backup.plugins.module_utils.core.scratch import free_port
from support.redis_server import ScratchRedis

RUNBOOK = REPO_ROOT / "docs" / "DISASTER-RECOVERY-RUNBOOK.md"
SECTIONS = ["Contacts and roles", "Complete infrastructure loss", "Database corruption", "Accidental deletion",
            "Multi-service failure", "Redis loss", "Recovery verification checklist", "Post-incident review template"]
# ansible-playbook commands of the runbook -> the test that runs them
PLAYBOOK_COMMANDS = {DR_REBUILD_COMMAND: "tests/integration/test_dr_rebuild.py",
                     FAILOVER_COMMAND: "tests/integration/test_failover.py"}


def runbook_commands():
    """[(line number, command)] of the ```sh runbook blocks (continuations joined)."""
    out, block, pending = [], False, ""
    for no, line in enumerate(RUNBOOK.read_text().splitlines(), 1):
        if line.strip().startswith("```"):
            block = line.strip() == "```sh runbook"
            continue
        if not block or not line.strip() or line.strip().startswith("#"):
            continue
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        out.append((no, pending.strip()))
        pending = ""
    return out


def test_runbook_has_the_sections_and_fill_in_tables():
    text = RUNBOOK.read_text()
    headings = re.findall(r"^## (.+)$", text, re.M)
    assert [s for s in SECTIONS if s not in headings] == []
    contacts = text.split("## Contacts and roles", 1)[1].split("\n## ", 1)[0]
    assert "| role | name | phone |" in contacts
    # anchors the alert rules link to
    for anchor in ("Backup alerts", "Verification alerts", "WAL archiving alerts", "Redis loss"):
        assert anchor in headings


def test_every_runbook_command_is_a_command_of_this_collection():
    commands = runbook_commands()
    assert len(commands) >= 10
    subcommands = set(cli.build_parser()._subparsers._group_actions[0].choices)
    for no, cmd in commands:
        argv = shlex.split(cmd)
        if argv[0] == "drkit":
            assert argv[1] in subcommands, "line %d: drkit has no subcommand %s" % (no, argv[1])
        elif argv[0] == "ansible-playbook":
            assert cmd in PLAYBOOK_COMMANDS, "line %d: no test runs %r" % (no, cmd)
            for word in argv:
                if word.startswith("drkit.backup."):
                    assert (REPO_ROOT / "playbooks" / (word.split(".")[-1] + ".yml")).exists()
        else:
            pytest.fail("line %d: %r is not a drkit or ansible-playbook command; put it in a plain sh block"
                        % (no, cmd))


# --------------------------------------------------------------------------
# the drill


def sh(command, env, timeout=300):
    return subprocess.run(["bash", "-c", command], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          universal_newlines=True, timeout=timeout, check=False)


class Drill(object):
    """The world the runbook's variables point at."""

    def __init__(self, root):
        self.root = Path(root)
        self.password = uuid.uuid4().hex
        self.drkit_cmd = DRKIT_CMD
        self.source = ArchivingSource(self.root, self.password)
        self.pg = self.source.pg
        self.wal_config = self.source.wal_config
        self.pg_url = "file://%s" % self.mkdir("pg")
        self.redis_url = "file://%s" % self.mkdir("redis-backups")
        self.redis = ScratchRedis(str(self.root / "redis"), password=uuid.uuid4().hex, appendonly=True)
        self.redis_pid = self.root / "redis" / "restored.pid"
        self.pitr_dir = self.root / "pitr" / "data"
        self.mkdir("pitr", owner="postgres")
        self.pitr_port = None

    def mkdir(self, name, owner=None):
        path = self.root / name
        path.mkdir(mode=0o700)
        if owner:
            shutil.chown(str(path), owner, owner)
        return path

    def cleanup(self):
        if self.redis_pid.exists():
            subprocess.run(["kill", self.redis_pid.read_text().strip()], check=False)
        if (self.pitr_dir / "postmaster.pid").exists():
            subprocess.run(["runuser", "-u", "postgres", "--", os.path.join(self.pg.bin_dir, "pg_ctl"), "stop",
                            "-m", "immediate", "-D", str(self.pitr_dir)], check=False)
        self.redis.destroy()
        self.pg.destroy()


@pytest.fixture
def drill(scratch_dir):
    d = Drill(scratch_dir)
    try:
        yield d
    finally:
        d.cleanup()


def test_runbook_drkit_commands_work_in_a_drill(drill, tmp_path):
    d = drill
    d.source.start()
    config = write_0600(tmp_path / "pg_agentic_platform.yml", {
        "storage_url": d.pg_url, "login_host": d.pg.host, "port": d.pg.port, "login_user": "postgres",
        "login_password": d.password, "database": "agentic_platform", "source_database": "agentic_platform",
        "kind": "pg_logical", "prune_wal": False, "keep_last": 2, "job_name": "pg_agentic_platform"})
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "drkit").write_text("#!/bin/sh\nexec %s \"$@\"\n" % d.drkit_cmd)
    (shim / "drkit").chmod(0o755)
    env = dict(os.environ, PATH="%s:%s" % (shim, os.environ["PATH"]))

    # --- the state before the incidents: a logical backup, a base backup, WAL
    assert sh("drkit pg-backup -q --config %s" % config, env).returncode == 0
    d.source.base_backup()
    backup_id = sh("drkit list --config %s --json" % config, env).stdout
    backup_id = yaml.safe_load(backup_id)["backups"][0]["backup_id"]
    # the accident, then more WAL so recovery can reach the time before it
    before, agents = d.source.accident()
    assert agents > 0

    # Redis with data, backed up, then lost (stopped, files gone)
    d.redis.start()
    client = d.redis.client()
    for i in range(300):
        client.set("session:%d" % i, i)
    redis_config = write_0600(tmp_path / "redis_job.yml", {
        "storage_url": d.redis_url, "login_host": "127.0.0.1", "login_port": d.redis.port,
        "login_password": d.redis.password, "source": "redis:127.0.0.1:%d" % d.redis.port})
    assert sh("drkit redis-snapshot -q --config %s" % redis_config, env).returncode == 0
    d.redis.stop()
    for p in Path(d.redis.dir).iterdir():
        if p.name not in ("redis.conf",):
            shutil.rmtree(str(p)) if p.is_dir() else p.unlink()
    start = "%s %s --daemonize yes --pidfile %s" % (shutil.which("redis-server"), d.redis.conf_file, d.redis_pid)

    d.pitr_port = free_port()
    env.update({
        "JOB": "pg_agentic_platform", "CONFIG": config, "DATABASE": "agentic_platform",
        "RESTORE_DB": "agentic_platform_restored", "BEFORE": before, "BACKUP_ID": backup_id,
        "REDIS_CONFIG": redis_config, "REDIS_CONF": d.redis.conf_file, "REDIS_START": start,
        "WAL_CONFIG": d.wal_config, "PITR_DIR": str(d.pitr_dir), "PITR_PORT": str(d.pitr_port),
    })

    ran = []
    for no, cmd in runbook_commands():
        if cmd.startswith("ansible-playbook "):
            continue  # run by the test named in PLAYBOOK_COMMANDS
        proc = sh(cmd, env, timeout=600)
        assert proc.returncode == 0, "runbook line %d: %s\n%s" % (no, cmd, proc.stdout[-4000:])
        ran.append(cmd)
        if '--target-database "$RESTORE_DB"' in cmd:
            # the side-by-side copy holds the backup's data; then it goes, as the runbook says
            assert table_row_counts(d.pg, "agentic_platform_restored")["mcp_documents.agents"] == agents
            d.pg.psql('DROP DATABASE "agentic_platform_restored" WITH (FORCE)')
        if cmd.startswith("drkit pitr "):
            # the copy as of BEFORE has the deleted rows
            out = subprocess.run(["psql", "-X", "-A", "-t", "-h", "127.0.0.1", "-p", str(d.pitr_port), "-U",
                                  "postgres", "-d", "agentic_platform", "-c",
                                  "SELECT count(*) FROM mcp_documents.agents"],
                                 env=dict(os.environ, PGPASSWORD=d.password), stdout=subprocess.PIPE,
                                 universal_newlines=True, check=False).stdout.strip()
            assert out == str(agents)
        if cmd.startswith("drkit redis-restore "):
            out = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(d.redis.port), "DBSIZE"],
                                 env=dict(os.environ, REDISCLI_AUTH=d.redis.password), stdout=subprocess.PIPE,
                                 universal_newlines=True, check=False).stdout.strip()
            assert out == "300"
    assert {c.split()[1] for c in ran} >= {"list", "pg-backup", "verify", "restore", "pitr", "redis-verify",
                                           "redis-restore", "rotate"}
    # after "restore --force" the database holds the backup's rows again
    assert int(d.pg.psql("SELECT count(*) FROM mcp_documents.agents", dbname="agentic_platform")) == agents
