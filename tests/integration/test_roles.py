# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Role behaviour that the molecule scenarios (test_molecule.py) do not
cover: check mode on a host where nothing is installed yet, and preflight
failures that say what to fix (and change nothing)."""

import pytest
from helpers import run_playbook


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


def test_check_mode_on_a_fresh_host_reports_and_writes_nothing(tmp_path):
    root = tmp_path / "fresh"
    run = run_playbook([role("drkit.backup.postgresql_backup"), role("drkit.backup.redis_backup")],
                       extra_vars=fresh_paths(root), check=True, tmp_dir=tmp_path)
    assert run.rc == 0, run.describe()
    assert run.stats["localhost"]["changed"] > 0  # it says what it would do
    assert not root.exists()
    for secret in ("very-secret-key-123", "redis-secret-456"):
        assert secret not in run.text


@pytest.mark.parametrize("override,message", [
    ({"postgresql_backup_storage_url": "/srv/backups"}, "a storage_url of file:///abs/path or s3://bucket/prefix"),
    ({"postgresql_backup_schedule": "0 25 * * *"}, "hour 25 is outside 0-23"),
    ({"postgresql_backup_os_user": "no_such_user_drkit"}, "OS user no_such_user_drkit does not exist"),
    ({"postgresql_backup_scheduler": "systemd", "postgresql_backup_schedule": "0 0 13 * 5"},
     "cron runs when EITHER matches"),
    ({"postgresql_backup_databases": []}, "Set postgresql_backup_databases to a list of database names"),
    ({"drkit_runtime_prefix": "/root/drkit"}, "must not be under /root"),
])
def test_preflight_says_what_to_fix_and_changes_nothing(tmp_path, override, message):
    root = tmp_path / "fresh"
    variables = fresh_paths(root)
    variables.update(override)
    run = run_playbook([role("drkit.backup.postgresql_backup")], extra_vars=variables, tmp_dir=tmp_path)
    assert run.rc != 0
    assert message in run.text, run.describe()
    assert not root.exists()
    assert "very-secret-key-123" not in run.text
