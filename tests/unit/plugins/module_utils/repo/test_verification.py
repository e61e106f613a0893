# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""verification.py: the record pg_verify writes is the one rotation reads
(format, key), and malformed records are refused."""

import datetime as dt
import json

import pytest

from ansible_collections.drkit.backup.plugins.module_utils.core.errors import IntegrityError
from ansible_collections.drkit.backup.plugins.module_utils.repo import verification as pg_verify
from ansible_collections.drkit.backup.plugins.module_utils.repo.verification import RECORD_FORMAT, parse_record

BID = "20261125T211500Z-pg-logical-3fa9c1"


def record(**kw):
    rec = {"format": "drkit.backup/verification", "version": 1, "backup_id": BID, "result": "pass",
           "finished_at": "2026-11-25T22:00:00.000000Z", "level": "restore"}
    rec.update(kw)
    return json.dumps(rec).encode()


def test_record_format_is_the_one_pg_verify_writes():
    assert RECORD_FORMAT == pg_verify.RECORD_FORMAT
    key = pg_verify.record_key(BID, dt.datetime(2026, 11, 25, 22, 0, tzinfo=dt.timezone.utc))
    assert key.startswith("backups/%s/verify-" % BID) and key.endswith(".json")


def test_parse_record():
    assert parse_record(record(), "k", BID)["result"] == "pass"
    assert parse_record(record(result="fail"), "k", BID)["result"] == "fail"
    for bad in (b"{", b"[]", record(format="other"), record(version=2), record(version="1"),
                record(backup_id="20261125T211500Z-pg-logical-000000"), record(result="ok"),
                record(finished_at="yesterday")):
        with pytest.raises(IntegrityError):
            parse_record(bad, "k", BID)
