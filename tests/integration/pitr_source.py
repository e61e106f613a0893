# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A source cluster for point-in-time recovery tests of the roles' side
(test_runbook.py, test_dr_rebuild.py): a ScratchPostgres archiving its WAL
with `drkit wal-push` into a file:// archive, and a physical base backup
taken as postgres (one owner for the whole archive, as in production)."""

import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml
from helpers import DRKIT

from ansible_collections.drkit.backup.plugins.module_utils.demo import sample_data
from ansible_collections.drkit.backup.plugins.module_utils.pg import scratch as sandbox

DRKIT_CMD = "%s %s" % (shlex.quote(sys.executable), shlex.quote(str(DRKIT)))


def write_0600(path, data, owner=None):
    fd = os.open(str(path), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        yaml.safe_dump(data, fh)
    if owner:
        shutil.chown(str(path), owner, owner)
    return str(path)


class ArchivingSource(object):
    def __init__(self, root, password, recipients=None):
        """``recipients``: age public keys the base backup and WAL are
        encrypted to (the hosts' configs hold only those)."""
        self.root = Path(root)
        self.password = password
        self.recipients = list(recipients or [])
        encryption = {"encryption_recipients": self.recipients} if self.recipients else {}
        archive = self.root / "wal"
        archive.mkdir(mode=0o700)
        shutil.chown(str(archive), "postgres", "postgres")
        self.wal_url = "file://%s" % archive
        self.wal_config = write_0600(self.root / "wal.yml", dict(
            encryption, storage_url=self.wal_url, drkit_command=DRKIT_CMD), owner="postgres")
        command = "%s wal-push --config %s %%p %%f" % (DRKIT_CMD, shlex.quote(self.wal_config))
        self.pg = sandbox.ScratchPostgres(str(self.root / "pg-data"), password=password, settings={
            "wal_level": "replica", "archive_mode": "on", "archive_command": command, "archive_timeout": 60})

    def start(self, database="agentic_platform", scale=0.002, seed=11):
        self.pg.start()
        sample_data.generate(self.pg.conninfo("postgres"), scale=scale, seed=seed, database=database)
        return self

    def base_backup(self):
        config = write_0600(self.root / "base.yml", {
            "storage_url": self.wal_url, "login_host": self.pg.host, "port": self.pg.port,
            "login_user": "postgres", "login_password": self.password, "mode": "physical",
            "wal_wait_timeout": 120, "encryption_recipients": self.recipients}, owner="postgres")
        proc = subprocess.run("runuser -u postgres -- %s pg-backup -q --config %s" % (DRKIT_CMD, config),
                              shell=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              universal_newlines=True, check=False)
        assert proc.returncode == 0, proc.stdout

    def switch_wal_and_wait(self, timeout=60):
        seg = self.pg.psql("SELECT pg_walfile_name(pg_switch_wal())")
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.pg.psql("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver")[:24] >= seg:
                return
            time.sleep(0.2)
        raise AssertionError("WAL %s not archived: %s" % (seg, self.pg.psql("SELECT * FROM pg_stat_archiver")))

    def accident(self, database="agentic_platform"):
        """Note the time, then TRUNCATE the agents (the audit's scenario 3);
        returns (time before, agents before)."""
        agents = int(self.pg.psql("SELECT count(*) FROM mcp_documents.agents", dbname=database))
        time.sleep(1.1)
        before = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        time.sleep(1.1)
        self.pg.psql("TRUNCATE mcp_documents.agents CASCADE", dbname=database)
        self.switch_wal_and_wait()
        return before, agents

    def destroy(self):
        self.pg.destroy()
