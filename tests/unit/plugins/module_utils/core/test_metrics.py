# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""metrics.py: the Prometheus textfile writer (format, escaping, merging,
counters, atomic replacement) and the documentation of every metric."""

import os
import re
import stat

import pytest
from ansible_collections.drkit.backup.plugins.module_utils.core.errors import ConfigError, StorageError
from ansible_collections.drkit.backup.plugins.module_utils.core.metrics import HELP, update_textfile
from support.unit_helpers import REPO, lines, value

# The exposition format: "# HELP name text", "# TYPE name kind", "name{l="v",...} value".
SAMPLE_RE = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="(\\.|[^"\\])*",?)*\})? \S+$')


def test_format_help_type_and_labels(tmp_path):
    path = update_textfile(str(tmp_path), "pg_app", {"drkit_backup_last_status": 1,
                                                     "drkit_backup_size_bytes": 123456789},
                           labels={"kind": "pg_logical"})
    assert path == str(tmp_path / "drkit_pg_app.prom")
    text = lines(path)
    assert "# HELP drkit_backup_last_status 1 if the last backup attempt succeeded, 0 if it failed." in text
    assert "# TYPE drkit_backup_last_status gauge" in text
    assert 'drkit_backup_last_status{drkit_job="pg_app",kind="pg_logical"} 1' in text
    assert 'drkit_backup_size_bytes{drkit_job="pg_app",kind="pg_logical"} 123456789' in text
    for ln in text:
        assert ln.startswith("# ") or SAMPLE_RE.match(ln), ln
    # HELP/TYPE precede the samples of their metric
    assert text.index("# TYPE drkit_backup_size_bytes gauge") < text.index(
        'drkit_backup_size_bytes{drkit_job="pg_app",kind="pg_logical"} 123456789')


def test_file_is_world_readable_and_no_temp_left(tmp_path):
    path = update_textfile(str(tmp_path), "j", {"drkit_backup_last_status": 1})
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644  # node_exporter runs as its own user
    assert os.listdir(str(tmp_path)) == ["drkit_j.prom"]


def test_last_success_survives_a_failure(tmp_path):
    d = str(tmp_path)
    update_textfile(d, "j", {"drkit_backup_last_success_timestamp_seconds": 1000,
                             "drkit_backup_last_attempt_timestamp_seconds": 1000,
                             "drkit_backup_last_status": 1, "drkit_backup_size_bytes": 42})
    path = update_textfile(d, "j", {"drkit_backup_last_attempt_timestamp_seconds": 2000,
                                    "drkit_backup_last_status": 0})
    assert value(path, "drkit_backup_last_success_timestamp_seconds") == 1000
    assert value(path, "drkit_backup_last_attempt_timestamp_seconds") == 2000
    assert value(path, "drkit_backup_last_status") == 0
    assert value(path, "drkit_backup_size_bytes") == 42


def test_counters_add_up(tmp_path):
    for _i in range(3):
        path = update_textfile(str(tmp_path), "wal", {"drkit_wal_push_failures_total": 1})
    assert value(path, "drkit_wal_push_failures_total") == 3
    assert "# TYPE drkit_wal_push_failures_total counter" in lines(path)


def test_float_values_and_none_skipped(tmp_path):
    path = update_textfile(str(tmp_path), "j", {"drkit_backup_duration_seconds": 1.25,
                                                "drkit_backup_size_bytes": None})
    assert value(path, "drkit_backup_duration_seconds") == 1.25
    assert not any(ln.startswith("drkit_backup_size_bytes") for ln in lines(path))


def test_an_unknown_value_is_nan_and_replaces_an_old_one(tmp_path):
    update_textfile(str(tmp_path), "j", {"drkit_standby_replay_lag_seconds": 0.004})
    path = update_textfile(str(tmp_path), "j", {"drkit_standby_replay_lag_seconds": float("nan")})
    assert 'drkit_standby_replay_lag_seconds{drkit_job="j"} NaN' in lines(path)
    # and a later known value replaces it again
    path = update_textfile(str(tmp_path), "j", {"drkit_standby_replay_lag_seconds": 2})
    assert value(path, "drkit_standby_replay_lag_seconds") == 2


@pytest.mark.parametrize("label", ['say "hi"', "back\\slash", "two\nlines", "brace}s {x}", "comma,=eq"])
def test_label_values_are_escaped_and_survive_a_merge(tmp_path, label):
    d = str(tmp_path)
    update_textfile(d, "j", {"drkit_backup_last_status": 1, "drkit_backup_size_bytes": 7},
                       labels={"kind": label})
    path = update_textfile(d, "j", {"drkit_backup_last_status": 0}, labels={"kind": label})
    text = lines(path)
    for ln in text:
        assert ln.startswith("# ") or SAMPLE_RE.match(ln), ln
    escaped = label.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
    assert 'drkit_backup_last_status{drkit_job="j",kind="%s"} 0' % escaped in text
    # the size from the first run was read back and kept
    assert 'drkit_backup_size_bytes{drkit_job="j",kind="%s"} 7' % escaped in text
    assert sum(1 for ln in text if ln.startswith("drkit_backup_last_status")) == 1


def test_unknown_metric_and_bad_job(tmp_path):
    with pytest.raises(ConfigError) as e:
        update_textfile(str(tmp_path), "j", {"drkit_made_up": 1})
    assert "Unknown metric drkit_made_up" in str(e.value)
    for job in ("", "a/b", "../x", "a b"):
        with pytest.raises(ConfigError):
            update_textfile(str(tmp_path), job, {"drkit_backup_last_status": 1})
    assert os.listdir(str(tmp_path)) == []


def test_no_directory_means_no_metrics():
    assert update_textfile(None, "j", {"drkit_backup_last_status": 1}) is None


def test_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = update_textfile(str(tmp_path), "j", {"drkit_backup_last_status": 1})
    before = open(path).read()

    def broken(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "rename", broken)  # os is one module object everywhere
    with pytest.raises(StorageError) as e:
        update_textfile(str(tmp_path), "j", {"drkit_backup_last_status": 0})
    assert "metrics_dir" in str(e.value)
    assert open(path).read() == before
    assert os.listdir(str(tmp_path)) == ["drkit_j.prom"]  # temp file removed


def test_metrics_dir_is_created(tmp_path):
    path = update_textfile(str(tmp_path / "new" / "dir"), "j", {"drkit_backup_last_status": 1})
    assert os.path.exists(path)


def test_every_registered_metric_is_documented_in_docs():
    docs = os.path.join(REPO, "docs", "metrics.md")
    if not os.path.exists(docs):
        pytest.fail("docs/metrics.md is missing: metric names must be documented")
    text = open(docs).read()
    missing = [n for n in HELP if n not in text]
    assert missing == [], "undocumented metrics: %s" % missing
