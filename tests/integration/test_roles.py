# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Role behaviour that the molecule scenarios (test_molecule.py) do not
cover: check mode on a host where nothing is installed yet, a file:// storage
root that the job user could not write (issue 14): the role creates a
missing one for the job user (0750), and its check of each job as its user
fails the play with drkit's message when the user cannot write there; and
check mode on a converged runtime reports no change."""

import os
import pwd
import shutil
import stat

import pytest
from helpers import fresh_paths, job_host_paths, role, role_results, run_playbook


def test_check_mode_on_a_fresh_host_reports_and_writes_nothing(tmp_path):
    root = tmp_path / "fresh"
    run = run_playbook([role("drkit.backup.postgresql_backup"), role("drkit.backup.redis_backup")],
                       extra_vars=fresh_paths(root), check=True, tmp_dir=tmp_path)
    assert run.rc == 0, run.describe()
    assert run.stats["localhost"]["changed"] > 0  # it says what it would do
    assert not root.exists()
    for secret in ("very-secret-key-123", "redis-secret-456"):
        assert secret not in run.text


# --------------------------------------------------------------------------
# redis_backup_persistence merges over the documented defaults


APPLY = "Apply the persistence settings (AOF, fsync, RDB save rules)"


@pytest.fixture
def drkit_group():
    """The drkit group (the runtime creates it) and redis's membership, put
    back as they were afterwards."""
    import grp
    import subprocess
    try:
        before = grp.getgrnam("drkit").gr_mem
    except KeyError:
        before = None
    yield "drkit"
    if before is None:
        subprocess.run(["groupdel", "drkit"], check=False)
    elif "redis" not in before:
        subprocess.run(["gpasswd", "-d", "redis", "drkit"], check=False, stdout=subprocess.DEVNULL)


def test_redis_persistence_with_only_persist_false_converges(tmp_path, scratch_root, drkit_group):
    """The role's own advice for a server without a config file,
    ``redis_backup_persistence: {persist: false}``, replaced the whole default
    dict and the run failed ("one of the following is required: save,
    appendonly, ..."). It is merged key by key over
    redis_backup_persistence_defaults now: the defaults are applied live and
    nothing is written to the server's config file."""
    from ansible_collections.drkit.backup.plugins.module_utils.core.scratch import make_scratch_dir
    from support.redis_server import ScratchRedis

    base = make_scratch_dir(prefix="redis-role-", parent=str(scratch_root))
    server = ScratchRedis(os.path.join(base, "redis"), password="redis-secret-456")
    server.start()
    try:
        conf_before = open(server.conf_file).read()
        client = server.client()
        assert client.config_get("appendonly")["appendonly"] == "no"
        root = tmp_path / "host"
        variables = fresh_paths(root)
        variables.update({
            "redis_backup_instances": [{"login_host": "127.0.0.1", "login_port": server.port}],
            "redis_backup_manage_persistence": True,
            "redis_backup_persistence": {"persist": False},
            "redis_backup_check_jobs": False,
            # the role creates a missing file:// root: keep it below the test's directory
            "redis_backup_storage_url": "file://%s" % (root / "storage"),
            "redis_backup_systemd_unit_dir": str(root / "systemd"),
            "drkit_runtime_group": drkit_group,
            # the runtime's venv and pip install are test_molecule.py's subject;
            # here the play says it is in place, as a first job role would have
            "_drkit_runtime_installed": True,
        })
        for d in ("etc/drkit", "log", "lock", "systemd", "cron.d"):
            (root / d).mkdir(parents=True)
        tasks = [{"name": "the runtime's group and metrics directory",
                  "ansible.builtin.include_role": {"name": "drkit.backup.drkit_runtime",
                                                   "tasks_from": "metrics_dir.yml"},
                  "vars": {"drkit_runtime_metrics_dir": str(root / "metrics")}},
                 role("drkit.backup.redis_backup")]
        run = run_playbook(tasks, extra_vars=variables, tmp_dir=tmp_path)
        assert run.rc == 0, run.describe()
        applied = [r for r in run.results if r["task"].endswith(APPLY)]
        assert applied and applied[-1]["status"] == "ok" and applied[-1]["result"]["changed"], run.describe()
        live = client.config_get("*")
        assert (live["appendonly"], live["appendfsync"], live["save"]) == ("yes", "everysec", "3600 1 300 100 60 10000")
        assert open(server.conf_file).read() == conf_before  # persist: false, no CONFIG REWRITE
        assert "redis-secret-456" not in run.text

        again = run_playbook(tasks, extra_vars=variables, tmp_dir=tmp_path)
        assert again.rc == 0, again.describe()
        applied = [r for r in again.results if r["task"].endswith(APPLY)]
        assert applied and applied[-1]["status"] == "ok", again.describe()
        assert not applied[-1]["result"]["changed"], again.describe()
    finally:
        server.destroy()
        shutil.rmtree(base, ignore_errors=True)


# --------------------------------------------------------------------------
# file:// storage roots and the job check as the job user


@pytest.fixture
def job_host(scratch_dir):
    """The paths of a host where the runtime is in place (helpers.job_host_paths)."""
    if os.geteuid() != 0:
        pytest.fail("the job check runs as the postgres OS user: run the tests as root (CI does)")
    return job_host_paths(scratch_dir)


def file_job_vars(root, wrapper, pg, storage_url):
    variables = fresh_paths(root)
    variables.update({
        "_drkit_runtime_installed": True,  # skip the runtime install: the wrapper runs the checkout's drkit
        "drkit_runtime_command": wrapper,
        "drkit_runtime_group": "postgres",  # creates no group on this machine
        "postgresql_backup_databases": ["postgres"],
        "postgresql_backup_storage_url": storage_url,
        "postgresql_backup_storage_options": {},
        "postgresql_backup_login_host": pg.host,
        "postgresql_backup_login_port": pg.port,
        "postgresql_backup_login_password": pg.password,
        "postgresql_backup_pg_bin_dir": pg.bin_dir,
    })
    return variables


def test_role_creates_a_missing_file_root_for_the_job_user(job_host, pg, scratch_dir, tmp_path):
    root, wrapper = job_host
    parent = scratch_dir / "var-backups"
    parent.mkdir(mode=0o755)  # root's, like /var/backups
    storage = parent / "drkit"
    variables = file_job_vars(root, wrapper, pg, "file://%s" % storage)
    run = run_playbook([role("drkit.backup.postgresql_backup")], extra_vars=variables, tmp_dir=tmp_path)
    assert run.rc == 0, run.describe()
    info = os.stat(str(storage))
    assert pwd.getpwuid(info.st_uid).pw_name == "postgres" and stat.S_IMODE(info.st_mode) == 0o750
    checks = role_results(run, "Jobs | Check each job once as its user (connects, finds the tools, proves the "
                               "storage writable)")
    assert [r["result"]["results"][0]["rc"] for r in checks] == [0], run.describe()
    assert os.listdir(str(storage)) == []  # the probe removed what it wrote
    assert pg.password not in run.text

    again = run_playbook([role("drkit.backup.postgresql_backup")], extra_vars=variables, tmp_dir=tmp_path)
    assert again.rc == 0, again.describe()
    created = role_results(again, "Jobs | Create the missing file:// storage roots, owned by the job user (0750)")
    assert created and not any(r["result"].get("changed") for r in created), again.describe()


def test_role_fails_clearly_when_the_job_user_cannot_write_the_file_root(job_host, pg, scratch_dir, tmp_path):
    root, wrapper = job_host
    storage = scratch_dir / "backups"
    storage.mkdir(mode=0o755)  # root:root 0755: made by hand as root
    variables = file_job_vars(root, wrapper, pg, "file://%s" % storage)
    run = run_playbook([role("drkit.backup.postgresql_backup")], extra_vars=variables, tmp_dir=tmp_path)
    assert run.rc != 0
    assert "Job pg_postgres would fail as OS user postgres (exit code 3)" in run.text, run.describe()
    assert "Cannot write to file://%s as user postgres" % storage in run.text
    assert "chown postgres %s" % storage in run.text
    assert os.stat(str(storage)).st_uid == 0  # an existing directory keeps its owner
    assert os.listdir(str(storage)) == []
    assert pg.password not in run.text


# --------------------------------------------------------------------------
# check mode on a converged host (issue 14, item 6)


def runtime_vars(root):
    variables = {k: v for k, v in fresh_paths(root).items() if k.startswith("drkit_runtime_")}
    variables.update({"drkit_runtime_group": "postgres",  # creates no group on this machine
                      "drkit_runtime_job_users": ["postgres"],
                      "drkit_runtime_metrics_dir": "%s/metrics" % root})
    return variables


def site_packages(root):
    (path,) = (root / "opt" / "drkit" / "venv" / "lib").glob("python3*/site-packages")
    return path


def test_check_mode_on_a_converged_runtime_reports_no_change(scratch_dir, tmp_path):
    """A package installed by hand into the runtime's venv with a requirement
    that is missing makes ``pip check`` fail for the venv. The role used to
    "reinstall" on every run: pip changed nothing (changed=0 for real), but
    check mode reported the pip task as changed every time. Only the
    runtime's own dependency tree counts now; a hole in it is repaired."""
    root = scratch_dir / "rt"
    (root / "logrotate.d").mkdir(parents=True)
    (root / "bin").mkdir()
    variables = runtime_vars(root)
    tasks = [role("drkit.backup.drkit_runtime")]
    run = run_playbook(tasks, extra_vars=variables, tmp_dir=tmp_path)
    assert run.rc == 0, run.describe()

    extra = site_packages(root) / "unrelated_tool-1.0.dist-info"
    extra.mkdir()
    (extra / "METADATA").write_text("Metadata-Version: 2.1\nName: unrelated-tool\nVersion: 1.0\n"
                                    "Requires-Dist: no-such-dependency-drkit\n")
    (extra / "RECORD").write_text("unrelated_tool-1.0.dist-info/METADATA,,\n")
    for check in (True, False, True):
        again = run_playbook(tasks, extra_vars=variables, check=check, tmp_dir=tmp_path)
        assert again.rc == 0, again.describe()
        assert again.stats["localhost"]["changed"] == 0, (check, again.describe())

    # a hole in the runtime's own tree: check mode says so, the real run repairs it
    (dist_info,) = site_packages(root).glob("[Pp]y[Yy][Aa][Mm][Ll]-*.dist-info")
    shutil.rmtree(str(dist_info))
    check = run_playbook(tasks, extra_vars=variables, check=True, tmp_dir=tmp_path)
    assert check.rc == 0 and check.stats["localhost"]["changed"] > 0, check.describe()
    repair = run_playbook(tasks, extra_vars=variables, tmp_dir=tmp_path)
    assert repair.rc == 0 and repair.stats["localhost"]["changed"] > 0, repair.describe()
    assert list(site_packages(root).glob("[Pp]y[Yy][Aa][Mm][Ll]-*.dist-info"))
    check = run_playbook(tasks, extra_vars=variables, check=True, tmp_dir=tmp_path)
    assert check.rc == 0 and check.stats["localhost"]["changed"] == 0, check.describe()
