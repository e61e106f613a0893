# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""testinfra verifier of the default scenario.

Not only "the files exist": each scheduled job is run with the exact command
line of its cron entry, the way cron runs it (as the entry's user, a bare
environment, /bin/sh -c), and the test checks that a backup appears in
storage, that metrics are written, that a second verify passes, that runs
cannot overlap, and that no secret reaches the cron file or the process list.
"""

import json
import os
import re
import shlex
import sys
import time

import testinfra.utils.ansible_runner

# the repository's test support: the job's own process tree, read from /proc
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "tests"))
from support.netcheck import process_tree  # noqa: E402

testinfra_hosts = testinfra.utils.ansible_runner.AnsibleRunner(
    os.environ["MOLECULE_INVENTORY_FILE"]).get_hosts("all")

with open(os.environ["DRKIT_MOLECULE_VARS"]) as _fh:
    V = json.load(_fh)

DRKIT = "/usr/local/bin/drkit"
with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "galaxy.yml")) as _fh:
    GALAXY_VERSION = re.search(r"^version: *(\S+)", _fh.read(), re.M).group(1)
PG_CRON = "/etc/cron.d/drkit-molecule-postgresql"
REDIS_CRON = "/etc/cron.d/drkit-molecule-redis"
CRON_ENV = "env -i SHELL=/bin/sh PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SECRETS = [V["molecule_pg_password"], V["molecule_redis_password"], V["molecule_s3_options"]["secret_key"]]


def cron_entries(host, path):
    """[(schedule, user, command)] of a cron.d file."""
    out = []
    for line in host.file(path).content_string.splitlines():
        if not line.strip() or line.startswith("#") or re.match(r"^[A-Z_]+=", line):
            continue
        fields = line.split(None, 6)
        out.append((" ".join(fields[:5]), fields[5], fields[6]))
    return out


def entry(host, path, job, action):
    found = [e for e in cron_entries(host, path) if "/%s-%s.lock" % (job, action) in e[2]]
    assert len(found) == 1, cron_entries(host, path)
    return found[0]


def run_as_cron(host, user, command):
    """Run a cron command line as cron would."""
    return host.run("runuser -u %s -- %s /bin/sh -c %s" % (user, CRON_ENV, shlex.quote(command)))


def drkit_json(host, user, *args):
    cmd = host.run("runuser -u %s -- %s %s --json" % (user, DRKIT, " ".join(shlex.quote(a) for a in args)))
    assert cmd.rc == 0, cmd.stderr
    return json.loads(cmd.stdout)


def metric(host, job, name):
    text = host.file("%s/drkit_%s.prom" % (V["molecule_metrics_dir"], job)).content_string
    m = re.search(r"^%s\{[^}]*\} (\S+)$" % name, text, re.M)
    assert m, "%s missing from drkit_%s.prom:\n%s" % (name, job, text)
    return float(m.group(1))


# ---------------------------------------------------------------- runtime

def test_runtime_is_a_venv_of_the_system_python_usable_by_the_job_users(host):
    cfg = host.file("/opt/drkit/venv/pyvenv.cfg").content_string
    assert "home = /usr/bin" in cfg
    for user in ("postgres", "redis"):
        cmd = host.run("runuser -u %s -- %s --help" % (user, DRKIT))
        assert cmd.rc == 0, cmd.stderr
        assert "pg-backup" in cmd.stdout and "redis-snapshot" in cmd.stdout
    assert host.file(DRKIT).mode == 0o755
    # the wrapper runs the package's console script, isolated (-I)
    assert "exec /opt/drkit/venv/bin/python -I /opt/drkit/venv/bin/drkit " in host.file(DRKIT).content_string


def test_runtime_is_the_package_of_this_collection_without_demo_code(host):
    show = host.run("/opt/drkit/venv/bin/python -I -m pip show -f drkit-backup-runtime")
    assert show.rc == 0, show.stderr
    fields = dict(line.split(": ", 1) for line in show.stdout.splitlines() if ": " in line)
    assert fields["Version"] == GALAXY_VERSION
    files = [line.strip() for line in show.stdout.split("Files:", 1)[1].splitlines() if line.strip()]
    assert "drkit_engine/cli.py" in files and "drkit_engine/pg/wal_archive.py" in files
    assert not [f for f in files if f.startswith("drkit_engine/demo") or f.startswith("drkit_engine/_ansible")]
    script = host.file("/opt/drkit/venv/bin/drkit")
    assert script.content_string.splitlines()[0] in ("#!/opt/drkit/venv/bin/python", "#!/opt/drkit/venv/bin/python3")
    assert "from drkit_engine.cli import main" in script.content_string
    assert host.run("/opt/drkit/venv/bin/python -I -m pip check").rc == 0
    for user in ("postgres", "redis"):
        probe = host.run("runuser -u %s -- /opt/drkit/venv/bin/python -I -c %s" % (user, shlex.quote(
            "import drkit_engine.cli, drkit_engine.core.version as v; print(v.VERSION)\n"
            "for m in ('drkit_engine.demo', 'drkit_engine._ansible'):\n"
            "    try:\n        __import__(m)\n    except ModuleNotFoundError:\n        print('absent', m)")))
        assert probe.rc == 0, probe.stderr
        assert probe.stdout.split() == [GALAXY_VERSION, "absent", "drkit_engine.demo",
                                        "absent", "drkit_engine._ansible"]
    # no demo code anywhere on the host's runtime, and nothing of the earlier tree-of-files install
    found = host.run("find /opt/drkit \\( -path '*drkit_engine/demo*' -o -name _ansible.py \\) -print")
    assert found.rc == 0 and found.stdout == "", found.stdout
    for old in ("/opt/drkit/lib", "/opt/drkit/bin", "/opt/drkit/requirements.txt"):
        assert not host.file(old).exists, old
    wheels = host.run("ls /opt/drkit/wheels").stdout.split()
    assert wheels == ["drkit_backup_runtime-%s-py3-none-any.whl" % GALAXY_VERSION]


def test_job_configs_are_0600_and_hold_the_secrets_not_the_schedules(host):
    for job, user, secret in (("molecule_app", "postgres", V["molecule_pg_password"]),
                              ("molecule_redis", "redis", V["molecule_redis_password"])):
        f = host.file("/etc/drkit/%s.yml" % job)
        assert (f.user, f.group, f.mode) == (user, user, 0o600)
        assert secret in f.content_string
    for path in (PG_CRON, REDIS_CRON):
        f = host.file(path)
        assert (f.user, f.mode) == ("root", 0o644)
        for secret in SECRETS:
            assert secret not in f.content_string


def test_schedule_thresholds_follow_the_schedules(host):
    text = host.file("%s/drkit-schedule-molecule_other.prom" % V["molecule_metrics_dir"]).content_string
    # every 6 hours + 2 h slack; weekly verification + 2 h
    assert 'drkit_schedule_backup_max_age_seconds{drkit_job="molecule_other",kind="pg_logical"} 28800' in text
    assert 'drkit_schedule_verify_max_age_seconds{drkit_job="molecule_other",kind="pg_logical"} 612000' in text
    text = host.file("%s/drkit-schedule-molecule_redis.prom" % V["molecule_metrics_dir"]).content_string
    assert 'drkit_schedule_backup_max_age_seconds{drkit_job="molecule_redis",kind="redis_rdb"} 25200' in text


def test_logrotate_snippet_is_valid(host):
    cmd = host.run("logrotate --debug /etc/logrotate.d/drkit")
    assert cmd.rc == 0, cmd.stderr
    assert "/var/log/drkit/*.log" in cmd.stderr + cmd.stdout


def test_alert_rules_installed_and_valid(host):
    cmd = host.run("promtool check rules %s/drkit-alerts.rules.yml" % V["molecule_rules_dir"])
    assert cmd.rc == 0, cmd.stdout + cmd.stderr


def test_redis_persistence_applied(host):
    cmd = host.run("REDISCLI_AUTH=%s redis-cli -h 127.0.0.1 -p %d CONFIG GET appendonly"
                   % (shlex.quote(V["molecule_redis_password"]), V["molecule_redis_port"]))
    assert cmd.stdout.split() == ["appendonly", "yes"]


# ---------------------------------------------------------------- the cron jobs, for real

def test_postgresql_backup_entry_backs_up_rotates_and_writes_metrics(host):
    schedule, user, command = entry(host, PG_CRON, "molecule_app", "backup")
    assert (schedule, user) == ("0 2 * * *", "postgres")
    config = "/etc/drkit/molecule_app.yml"
    before = drkit_json(host, user, "list", "--config", config)["backups"]
    start = time.time()

    # Watch the job's processes while it runs: no secret in any argv. Only its
    # own tree: other processes on a shared test machine are not the job's.
    proc = host.backend.run("runuser -u %s -- %s /bin/sh -c %s >/dev/null 2>&1 & echo $!"
                            % (user, CRON_ENV, shlex.quote(command)))
    pid = int(proc.stdout.split()[-1])
    seen = ""
    while os.path.exists("/proc/%d" % pid):
        for p in process_tree(pid):
            try:
                with open("/proc/%d/cmdline" % p, "rb") as fh:
                    seen += fh.read().decode("utf-8", "replace") + "\n"
            except OSError:
                pass
        time.sleep(0.05)
    assert "pg-backup" in seen, "never saw the job running"
    for secret in SECRETS:
        assert secret not in seen

    after = drkit_json(host, user, "list", "--config", config)["backups"]
    assert len(after) == len(before) + 1, host.file("/var/log/drkit/molecule_app.log").content_string
    assert metric(host, "molecule_app", "drkit_backup_last_status") == 1
    assert metric(host, "molecule_app", "drkit_backup_last_success_timestamp_seconds") >= start
    assert metric(host, "molecule_app", "drkit_rotate_last_success_timestamp_seconds") >= start
    log = host.file("/var/log/drkit/molecule_app.log").content_string
    assert "Backed up" in log and "kept" in log


def test_postgresql_verify_entry_passes_twice(host):
    schedule, user, command = entry(host, PG_CRON, "molecule_app", "verify")
    assert schedule == "30 4 * * 0"
    assert "--level restore" in command
    for _attempt in range(2):
        start = time.time()
        cmd = run_as_cron(host, user, command)
        assert cmd.rc == 0, host.file("/var/log/drkit/molecule_app.log").content_string[-3000:]
        assert metric(host, "molecule_app", "drkit_verify_last_status") == 1
        assert metric(host, "molecule_app", "drkit_verify_last_success_timestamp_seconds") >= start
        assert metric(host, "molecule_app", "drkit_restore_duration_seconds") > 0


def test_second_database_goes_to_its_own_storage(host):
    _schedule, user, command = entry(host, PG_CRON, "molecule_other", "backup")
    assert run_as_cron(host, user, command).rc == 0
    backups = drkit_json(host, user, "list", "--config", "/etc/drkit/molecule_other.yml")["backups"]
    assert backups and all(b["source"]["database"] == V["molecule_pg_database2"] for b in backups)
    assert V["molecule_file_storage_url"].startswith("file://")
    _schedule, user, command = entry(host, PG_CRON, "molecule_other", "verify")
    assert run_as_cron(host, user, command).rc == 0
    assert metric(host, "molecule_other", "drkit_verify_last_status") == 1


def test_runs_never_overlap(host):
    schedule, user, command = entry(host, PG_CRON, "molecule_other", "backup")
    config = "/etc/drkit/molecule_other.yml"
    before = len(drkit_json(host, user, "list", "--config", config)["backups"])
    # Hold the job's lock as a running backup would: the next run must give up at once.
    lock = re.search(r"flock -n (\S+)", command).group(1)
    cmd = host.run("flock %s runuser -u %s -- %s /bin/sh -c %s" % (lock, user, CRON_ENV, shlex.quote(command)))
    assert cmd.rc == 1
    assert len(drkit_json(host, user, "list", "--config", config)["backups"]) == before


def test_redis_entries_snapshot_rotate_and_verify(host):
    _schedule, user, command = entry(host, REDIS_CRON, "molecule_redis", "backup")
    assert user == "redis"
    start = time.time()
    cmd = run_as_cron(host, user, command)
    assert cmd.rc == 0, host.file("/var/log/drkit/molecule_redis.log").content_string[-3000:]
    assert metric(host, "molecule_redis", "drkit_backup_last_status") == 1
    assert metric(host, "molecule_redis", "drkit_backup_last_success_timestamp_seconds") >= start
    _schedule, user, command = entry(host, REDIS_CRON, "molecule_redis", "verify")
    for _attempt in range(2):
        cmd = run_as_cron(host, user, command)
        assert cmd.rc == 0, host.file("/var/log/drkit/molecule_redis.log").content_string[-3000:]
        assert metric(host, "molecule_redis", "drkit_verify_last_status") == 1
