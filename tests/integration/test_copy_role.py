# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The job roles' repository copy (issue 18): with
``postgresql_backup_copy_to_storage_url`` each backup run copies its backups
into the second repository before rotating (one copy at a time, a flock
shared with the scheduled copy between backups), the copy is checked as the
job user when the role runs, and its schedule is a cron line or a systemd
timer of its own."""

import json
import os
import re
import shlex
import subprocess

import pytest

from helpers import drop_database, job_host_paths, role, role_results, run_playbook

from ansible_collections.drkit.backup.plugins.module_utils.repo import manifest as mf
from ansible_collections.drkit.backup.plugins.module_utils.storage.factory import open_storage
from test_roles import file_job_vars

COPY_CHECK = "Jobs | Check each copy once as its user (reads both repositories)"


def manifests(root):
    return sorted(p.name for p in root.rglob("manifest.json"))


@pytest.fixture
def app_db(pg):
    pg.psql('CREATE DATABASE "copy_role"')
    pg.psql("CREATE TABLE orders (id int PRIMARY KEY); INSERT INTO orders SELECT generate_series(1, 100);",
            dbname="copy_role")
    yield "copy_role"
    drop_database(pg, "copy_role")


def copies(azurite, url):
    store = open_storage(url, **azurite.options())
    return [e.backup_id for e in mf.list_backups(store)[0]]


def test_backup_runs_copy_each_backup_before_rotation_and_on_their_own_schedule(
        pg, app_db, azurite, container, scratch_dir, tmp_path):
    """The second repository is Azure Blob (Azurite), its account key in
    the storage options: the role's Azure keys reach the job config."""
    root, wrapper = job_host_paths(scratch_dir)
    os.chmod(str(root / "lock"), 0o1777)  # the runtime (not installed here) makes it writable for the job users
    first, second = scratch_dir / "region-a", "az://%s/pg" % container
    variables = file_job_vars(root, wrapper, pg, "file://%s" % first)
    variables.update({"postgresql_backup_copy_to_storage_url": second,
                      "postgresql_backup_copy_to_storage_options": azurite.options(),
                      "postgresql_backup_copy_schedule": "*/5 * * * *",
                      "postgresql_backup_retention": {"keep_last": 1},
                      "postgresql_backup_databases": [app_db]})
    run = run_playbook([role("drkit.backup.postgresql_backup")], extra_vars=variables, tmp_dir=tmp_path)
    assert run.rc == 0, run.describe()
    # the copy proved as the job user
    checks = role_results(run, COPY_CHECK)
    assert [r["result"]["results"][0]["rc"] for r in checks] == [0], run.describe()

    config = (root / "etc/drkit/pg_copy_role.yml").read_text()
    assert "to_storage_url: %s" % second in config and "to_azure_account_key: " in config
    cron = (root / "cron.d/drkit-postgresql").read_text()
    (backup_line,) = [line for line in cron.splitlines() if "pg-backup" in line]
    (copy_line,) = [line for line in cron.splitlines() if line.startswith("*/5 ")]
    assert "/usr/bin/flock -n %s/lock/pg_copy_role-copy.lock %s copy --config" % (root, wrapper) in copy_line
    # backup, then the copy under the same lock (waiting for a scheduled one), then rotation
    chain = re.search(r"/bin/sh -c '(.*)' >>", backup_line).group(1)
    steps = chain.split(" && ")
    assert [s.split()[1] if s.startswith(wrapper) else s.split()[3] for s in steps] == ["pg-backup", "copy", "rotate"]
    assert steps[1].startswith("/usr/bin/flock %s/lock/pg_copy_role-copy.lock " % root)
    assert "--job-name pg_copy_role_copy" in steps[1]

    for _attempt in range(2):
        done = subprocess.run(["runuser", "-u", "postgres", "--", "/bin/sh", "-c", chain], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, universal_newlines=True, timeout=300, check=False)
        assert done.returncode == 0, done.stdout
    # rotation kept one backup in the first repository; the second holds both: its retention is its own
    assert len(manifests(first)) == 1 and len(copies(azurite, second)) == 2, (manifests(first), copies(azurite, second))
    prom = (root / "metrics/drkit_pg_copy_role_copy.prom").read_text()
    assert 'drkit_copy_last_status{drkit_job="pg_copy_role_copy",kind="copy"} 1' in prom, prom
    assert 'drkit_copy_backups_total{drkit_job="pg_copy_role_copy",kind="copy"} 2' in prom, prom
    # the scheduled copy between backups finds nothing new and says so
    copy_argv = shlex.split(copy_line.split(" postgres ", 1)[1].split(" >>")[0])
    scheduled = subprocess.run(["runuser", "-u", "postgres", "--"] + copy_argv + ["--json"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, timeout=120,
                               check=False)
    assert scheduled.returncode == 0, scheduled.stderr
    assert json.loads(scheduled.stdout)["copied"] == []

    # systemd: the copy's service and timer beside the job's (the role verifies them with systemd-analyze)
    units = root / "systemd"
    units.mkdir()
    variables.update({"postgresql_backup_scheduler": "systemd", "postgresql_backup_systemd_unit_dir": str(units),
                      "postgresql_backup_systemd_enable": False})
    run = run_playbook([role("drkit.backup.postgresql_backup")], extra_vars=variables, tmp_dir=tmp_path)
    assert run.rc == 0, run.describe()
    assert not (root / "cron.d/drkit-postgresql").exists()
    assert sorted(p.name for p in units.iterdir()) == sorted(
        "drkit-pg_copy_role-%s" % u
        for u in ("backup.service", "backup.timer", "verify.service", "verify.timer", "copy.service", "copy.timer"))
    service = (units / "drkit-pg_copy_role-backup.service").read_text()
    execs = re.findall(r"^ExecStart=(.*)$", service, re.M)
    assert len(execs) == 3 and " pg-backup --config " in execs[0] and " rotate --config " in execs[2], service
    assert execs[1].startswith("/usr/bin/flock %s/lock/pg_copy_role-copy.lock " % root)
    assert " copy --config " in execs[1]
    timer = (units / "drkit-pg_copy_role-copy.timer").read_text()
    assert "OnCalendar=*-*-* *:00,05,10,15,20,25,30,35,40,45,50,55:00" in timer

    assert pg.password not in run.text and azurite.account_key not in run.text
