# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The roles' preflight: bad variables, and bad keys or values inside list
items and dicts, fail the run before anything changes, with a message that
says what to fix. Nothing is installed, so unlike test_roles.py these run
beside the other files (not in the serial group of tests/conftest.py)."""

import pytest
from helpers import fresh_paths, role, role_results, run_playbook


@pytest.mark.parametrize("override,message", [
    ({"postgresql_backup_storage_url": "/srv/backups"},
     "a storage_url of file:///abs/path, s3://bucket/prefix or az://container/prefix"),
    # a copy into the repository itself, or to something that is no storage URL (issue 18)
    ({"postgresql_backup_copy_to_storage_url": "s3://bucket/pg"},
     "a copy_to_storage_url of the same kinds, another repository than storage_url"),
    ({"postgresql_backup_copy_to_storage_url": "/srv/copy"}, "(got '/srv/copy')"),
    ({"postgresql_backup_schedule": "0 25 * * *"}, "hour 25 is outside 0-23"),
    ({"postgresql_backup_os_user": "no_such_user_drkit"}, "OS user no_such_user_drkit does not exist"),
    ({"postgresql_backup_scheduler": "systemd", "postgresql_backup_schedule": "0 0 13 * 5"},
     "cron runs when EITHER matches"),
    ({"postgresql_backup_databases": []}, "Set postgresql_backup_databases to a list of database names"),
    ({"drkit_runtime_prefix": "/root/drkit"}, "must not be under /root"),
    # a database in a container: pg_dump runs there and connects over TCP (issue 16)
    ({"postgresql_backup_container": "agentic-postgres"}, "not the socket directory /var/run/postgresql"),
    ({"postgresql_backup_databases": [{"name": "app", "container": "agentic-postgres", "login_host": "127.0.0.1",
                                       "format": "directory"}]}, "format custom (got directory)"),
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


def test_redis_remote_mode_with_a_container_is_refused(tmp_path):
    root = tmp_path / "fresh"
    variables = fresh_paths(root)
    variables.update({"redis_backup_instances": [{"login_port": 6380, "container": "agentic-redis",
                                                  "mode": "remote"}]})
    run = run_playbook([role("drkit.backup.redis_backup")], extra_vars=variables, tmp_dir=tmp_path)
    assert run.rc != 0
    assert "names container agentic-redis with mode remote" in run.text, run.describe()
    assert not root.exists()


AGE_RECIPIENT = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"
ENCRYPTED_CHECK = "Preflight | Check that encrypted jobs can be verified"


# the backup roles' encrypted jobs: (role, variable prefix, extra variables, the refusal, the rendered jobs)
ENCRYPTING_ROLES = {
    "redis": ("drkit.backup.redis_backup", "redis_backup", {"redis_backup_instances": [{"login_port": 6380}]},
              "Job redis_6380 (Redis 127.0.0.1:6380) encrypts its snapshots (encryption_recipients) and verifies "
              "them at level restore", "_redis_backup_jobs"),
    "postgresql": ("drkit.backup.postgresql_backup", "postgresql_backup", {},
                   "Job pg_app (database app) encrypts its backups (encryption_recipients) and verifies them at "
                   "level restore", "_postgresql_backup_jobs"),
}


@pytest.mark.parametrize("kind", sorted(ENCRYPTING_ROLES))
def test_encrypted_jobs_verifying_without_an_identity_are_refused(tmp_path, kind):
    role_name, prefix, extra, refusal, _jobs = ENCRYPTING_ROLES[kind]
    root = tmp_path / "fresh"
    variables = fresh_paths(root)
    variables.update(extra)
    variables[prefix + "_encryption_recipients"] = [AGE_RECIPIENT]
    run = run_playbook([role(role_name)], extra_vars=variables, tmp_dir=tmp_path)
    assert run.rc != 0
    assert refusal in run.text, run.describe()
    assert not root.exists()


@pytest.mark.parametrize("kind", sorted(ENCRYPTING_ROLES))
@pytest.mark.parametrize("how", ["identity", "checksum"])
def test_encrypted_jobs_with_an_identity_or_checksum_verification_pass(tmp_path, kind, how):
    role_name, prefix, extra, _refusal, jobs = ENCRYPTING_ROLES[kind]
    root = tmp_path / "fresh"
    variables = fresh_paths(root)
    variables.update(extra)
    variables[prefix + "_encryption_recipients"] = [AGE_RECIPIENT]
    identity = "/etc/drkit/age.key" if how == "identity" else ""
    variables.update({prefix + "_encryption_identity_file": identity} if identity else
                     {prefix + "_verify_level": "checksum"})
    # public: the job configs the role rendered are looked at after it (every job carries the recipients)
    config_check = {"name": "job config", "ansible.builtin.assert": {"that": [
        "%s | map(attribute='config') | map(attribute='encryption_recipients') | unique | list == [['%s']]"
        % (jobs, AGE_RECIPIENT),
        "%s[0].config.encryption_identity_file | default('') == '%s'" % (jobs, identity)]}}
    run = run_playbook([{"name": role_name, "ansible.builtin.include_role": {"name": role_name, "public": True}},
                        config_check], extra_vars=variables, check=True, tmp_dir=tmp_path)
    checked = role_results(run, ENCRYPTED_CHECK)
    assert [r["status"] for r in checked] == ["ok"], run.describe()
    assert run.entry("job config")["status"] == "ok", run.describe()
    assert run.rc == 0, run.describe()
    assert not root.exists()


@pytest.mark.parametrize("role_name", ["postgresql_wal_archive", "postgresql_wal_stream"])
def test_wal_roles_refuse_a_bad_recipient_before_anything(tmp_path, role_name):
    config = tmp_path / "etc" / "wal.yml"
    variables = {"%s_storage_url" % role_name: "file:///srv/wal",
                 "%s_encryption_recipients" % role_name: [AGE_RECIPIENT, "age1notakey", "relative/keys.txt"],
                 "%s_config_file" % role_name: str(config), "%s_config_dir" % role_name: str(config.parent)}
    run = run_playbook([role("drkit.backup.%s" % role_name)], extra_vars=variables, tmp_dir=tmp_path)
    assert run.rc != 0
    assert '%s_encryption_recipients must be a list of age public keys' % role_name in run.text, run.describe()
    assert "these are not:" in run.text and "age1notakey" in run.text and "relative/keys.txt" in run.text
    assert AGE_RECIPIENT not in run.text.split("these are not:", 1)[1].split("A bad key", 1)[0]
    assert not config.parent.exists()


# --------------------------------------------------------------------------
# typos and bad values inside list items and dicts: refused before anything
# runs, naming the key (they used to pass: the default schedule ran, rotation
# warned of an empty policy later, a port "abc" became 0)


@pytest.mark.parametrize("role_name,override,messages", [
    ("postgresql_backup", {"postgresql_backup_databases": ["app", {"name": "other", "shedule": "0 3 * * *"}]},
     ["postgresql_backup_databases[1]: unknown key 'shedule' (did you mean schedule?)"]),
    ("postgresql_backup", {"postgresql_backup_databases": [{"name": "app", "retention": {"keep_dayly": 7}}]},
     ["postgresql_backup_databases[0].retention: unknown key 'keep_dayly' (did you mean keep_daily?)"]),
    ("postgresql_backup", {"postgresql_backup_databases": [{"name": "app", "login_port": "abc"}]},
     ["postgresql_backup_databases[0]:", "login_port", "int"]),
    ("postgresql_backup", {"postgresql_backup_databases": [{"name": "app", "format": "tar"}]},
     ["postgresql_backup_databases[0]:", "format", "custom, directory"]),
    ("postgresql_backup", {"postgresql_backup_databases": [{"shedule": "0 3 * * *"}]},
     ["postgresql_backup_databases[0]:", "name"]),
    ("postgresql_backup", {"postgresql_backup_retention": {"keep_dayly": 7}},
     ["postgresql_backup_retention.keep_dayly"]),
    ("postgresql_backup", {"postgresql_backup_storage_options": {"secret_kay": "x"}},
     ["postgresql_backup_storage_options.secret_kay"]),
    ("redis_backup", {"redis_backup_instances": [{"login_port": "abc"}]},
     ["login_port", "redis_backup_instances", "int"]),
    ("redis_backup", {"redis_backup_instances": [{"login_port": 6380, "shedule": "0 3 * * *"}]},
     ["redis_backup_instances.shedule"]),
    ("redis_backup", {"redis_backup_instances": [{"login_port": 6380, "retention": {"keep_dayly": 7}}]},
     ["keep_dayly"]),
    ("redis_backup", {"redis_backup_persistence": {"apendonly": True}}, ["redis_backup_persistence.apendonly"]),
])
def test_a_bad_key_or_value_in_an_item_is_refused_naming_it(tmp_path, role_name, override, messages):
    root = tmp_path / "fresh"
    variables = fresh_paths(root)
    variables.update(override)
    run = run_playbook([role("drkit.backup." + role_name)], extra_vars=variables, tmp_dir=tmp_path)
    assert run.rc != 0
    failed = [r for r in run.results if r["status"] == "failed"]
    assert len(failed) == 1, run.describe()
    for message in messages:
        assert message in failed[0]["result"]["msg"], run.describe()
    assert not root.exists()
    assert "very-secret-key-123" not in run.text and "redis-secret-456" not in run.text
