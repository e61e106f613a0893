# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The verification skeleton every verifier uses (repo/verification.py):
what counts as a failed verification, clean-ups on every path, signals,
artifacts checked by name, the record and the metrics; the record the
verifiers write is the one rotation reads (format, key), and malformed
records are refused."""

import datetime as dt
import hashlib
import json
import os
import signal

import pytest
from ansible_collections.drkit.backup.plugins.module_utils.core.errors import (
    ConfigError,
    IntegrityError,
    StorageError,
    Terminated,
    ToolError,
    WaitTimeout,
)
from ansible_collections.drkit.backup.plugins.module_utils.repo import manifest as mf
from ansible_collections.drkit.backup.plugins.module_utils.repo import verification
from ansible_collections.drkit.backup.plugins.module_utils.repo.verification import (
    RECORD_FORMAT,
    Verification,
    VerificationFailed,
    check_level,
    parse_record,
    planned,
    record_key,
)
from ansible_collections.drkit.backup.plugins.module_utils.storage.file import FileStorage


@pytest.fixture
def backup(tmp_path):
    """A complete pg_logical backup with two artifacts in a file:// store."""
    storage = FileStorage(str(tmp_path / "store"))
    backup_id = mf.new_backup_id("pg_logical")
    m = mf.Manifest.new(backup_id, "pg_logical", mf.utcnow(), {"database": "app", "port": 5432})
    for name, data in (("database.pgdump.zst", b"dump" * 100), ("extra.json", b"{}")):
        storage.put_bytes(mf.artifact_key(backup_id, name), data)
        m.add_artifact(name, len(data), hashlib.sha256(data).hexdigest())
    m.finish(mf.utcnow())
    mf.write_manifest(storage, m)
    return storage, mf.resolve(storage, backup_id)


def records(storage, entry):
    keys = [o.key for o in storage.list(mf.backup_prefix(entry.backup_id)) if "/verify-" in o.key]
    return [json.loads(storage.get_bytes(k)) for k in keys]


def test_a_passing_run_writes_a_pass_record_and_metrics(backup, tmp_path):
    storage, entry = backup
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    v = Verification(storage, {"metrics_dir": str(metrics_dir)}, entry, "checksum", "job1")
    with v:
        v.check_artifacts()
        with v.timed("download_seconds"):
            pass
        v.finding("only a note", fails=False)
    changed, result = v.finish(tables=[])
    assert changed and result["passed"] and result["result"] == "pass"
    assert result["findings"] == ["only a note"] and "download_seconds" in result["timings"]
    [rec] = records(storage, entry)
    assert rec["result"] == "pass" and rec["level"] == "checksum" and rec["tables"] == []
    prom = (metrics_dir / "drkit_job1.prom").read_text()
    assert "drkit_verify_last_status" in prom and 'kind="pg_logical"' in prom


def test_two_verifications_with_the_same_record_key_keep_both_records(backup, monkeypatch):
    """Two verifiers of one backup finishing in the same second drew the same
    random part: the second record goes under a new key, never over the first."""
    storage, entry = backup
    keys = iter(["backups/%s/verify-20261125T220000Z-0a0a.json" % entry.backup_id] * 2
                + ["backups/%s/verify-20261125T220000Z-0b0b.json" % entry.backup_id])
    monkeypatch.setattr(verification, "record_key", lambda backup_id, when: next(keys))
    results = []
    for level in ("checksum", "structure"):
        v = Verification(storage, {}, entry, level, "job1")
        with v:
            v.check_artifacts()
        results.append(v.finish()[1])
    assert [r["record_key"].rsplit("-", 1)[1] for r in results] == ["0a0a.json", "0b0b.json"]
    assert sorted(r["level"] for r in records(storage, entry)) == ["checksum", "structure"]


@pytest.mark.parametrize("error", [IntegrityError, ToolError, WaitTimeout])
def test_integrity_tool_and_timeout_errors_fail_the_verification(backup, error):
    storage, entry = backup
    undone = []
    v = Verification(storage, {}, entry, "restore", "j")
    with v:
        v.cleanup(undone.append, "scratch")
        raise error("the scratch server said no")
    assert undone == ["scratch"]
    with pytest.raises(VerificationFailed) as ei:
        v.finish()
    assert "the scratch server said no" in str(ei.value)
    [rec] = records(storage, entry)
    assert rec["result"] == "fail" and rec["findings"] == ["the scratch server said no"]


@pytest.mark.parametrize("error", [ConfigError, StorageError])
def test_other_errors_propagate_after_the_cleanups_and_record_nothing(backup, error):
    storage, entry = backup
    undone = []
    with pytest.raises(error):
        with Verification(storage, {}, entry, "restore", "j") as v:
            v.cleanup(undone.append, 1)
            v.cleanup(undone.append, 2)
            raise error("storage unreachable")
    assert undone == [2, 1]  # the last registered first
    assert records(storage, entry) == []


def test_sigterm_inside_runs_the_cleanups_and_restores_the_handler(backup):
    storage, entry = backup
    undone = []
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Terminated) as ei:
        with Verification(storage, {}, entry, "restore", "j") as v:
            v.cleanup(undone.append, "dropped")
            os.kill(os.getpid(), signal.SIGTERM)
    assert ei.value.exit_code == 143
    assert undone == ["dropped"]
    assert signal.getsignal(signal.SIGTERM) == before
    assert records(storage, entry) == []


def test_a_second_sigterm_in_a_cleanup_still_runs_the_other_cleanups(backup):
    storage, entry = backup
    undone = []

    def interrupted():
        os.kill(os.getpid(), signal.SIGTERM)  # the handler is still ours while cleaning up
    with pytest.raises(Terminated):
        with Verification(storage, {}, entry, "restore", "j") as v:
            v.cleanup(undone.append, "scratch database dropped")
            v.cleanup(interrupted)
            os.kill(os.getpid(), signal.SIGTERM)
    assert undone == ["scratch database dropped"]


def test_a_failing_cleanup_does_not_stop_the_others(backup):
    storage, entry = backup
    undone = []

    def broken():
        raise OSError("busy")

    with pytest.raises(OSError):
        with Verification(storage, {}, entry, "restore", "j") as v:
            v.cleanup(undone.append, "first")
            v.cleanup(broken)
    assert undone == ["first"]


def test_artifacts_are_checked_by_name_not_position(backup):
    storage, entry = backup
    storage.delete([mf.artifact_key(entry.backup_id, "extra.json")])
    v = Verification(storage, {}, entry, "checksum", "j")
    with v:
        v.check_artifacts(skip=["extra.json"])  # the one read by the level's own pass
    assert v.passed
    v = Verification(storage, {}, entry, "checksum", "j")
    with v:
        v.check_artifacts(skip=["database.pgdump.zst"])
    assert not v.passed and "Artifact extra.json of backup %s is missing" % entry.backup_id in v.findings[0]


def test_a_damaged_artifact_is_a_finding(backup):
    storage, entry = backup
    storage.put_bytes(mf.artifact_key(entry.backup_id, "extra.json"), b"[]")
    v = Verification(storage, {}, entry, "checksum", "j")
    with v:
        v.check_artifacts()
    assert not v.passed and "extra.json" in v.findings[0] and "sha256" in v.findings[0]


def test_levels_and_check_mode():
    assert check_level(None) == "structure"
    assert check_level("restore") == "restore"
    with pytest.raises(ConfigError, match="level must be one of checksum, structure, restore, got 'full'"):
        check_level("full")

    class Entry:
        backup_id = "b1"
        passed_over = ["b2: dated in the future"]

    assert planned(Entry(), "restore", "physical backup") == (True, {
        "backup_id": "b1", "level": "restore", "passed": None, "passed_over": ["b2: dated in the future"],
        "msg": "Would verify physical backup b1 at level restore"})
    assert planned(Entry(), "checksum")[1]["msg"] == "Would verify b1 at level checksum"


BID = "20261125T211500Z-pg-logical-3fa9c1"


def record(**kw):
    rec = {"format": "drkit.backup/verification", "version": 1, "backup_id": BID, "result": "pass",
           "finished_at": "2026-11-25T22:00:00.000000Z", "level": "restore"}
    rec.update(kw)
    return json.dumps(rec).encode()


def test_record_key():
    assert RECORD_FORMAT == "drkit.backup/verification"
    key = record_key(BID, dt.datetime(2026, 11, 25, 22, 0, tzinfo=dt.timezone.utc))
    assert key.startswith("backups/%s/verify-" % BID) and key.endswith(".json")


def test_parse_record():
    assert parse_record(record(), "k", BID)["result"] == "pass"
    assert parse_record(record(result="fail"), "k", BID)["result"] == "fail"
    for bad in (b"{", b"[]", record(format="other"), record(version=2), record(version="1"),
                record(backup_id="20261125T211500Z-pg-logical-000000"), record(result="ok"),
                record(finished_at="yesterday")):
        with pytest.raises(IntegrityError):
            parse_record(bad, "k", BID)
