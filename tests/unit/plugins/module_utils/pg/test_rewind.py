# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""pg_rewind's prerequisites and what drkit reads of its output (a fake
pg_rewind here; tests/integration/test_failover.py runs the real one)."""

import os

import pytest
from ansible_collections.drkit.backup.plugins.module_utils.core.errors import ConfigError, ToolError
from ansible_collections.drkit.backup.plugins.module_utils.pg import rewind


def test_wal_log_hints_or_checksums_are_needed():
    assert rewind.check_rewindable({"wal_log_hints setting": "on", "Data page checksum version": "0"}, "/d") == {
        "wal_log_hints": True, "data_checksums": False}
    assert rewind.check_rewindable({"wal_log_hints setting": "off", "Data page checksum version": "1"}, "/d")[
        "data_checksums"]
    with pytest.raises(ConfigError) as exc:
        rewind.check_rewindable({"wal_log_hints setting": "off", "Data page checksum version": "0"}, "/d")
    assert "wal_log_hints" in str(exc.value) and "without --rewind" in exc.value.hint


def fake_pg_rewind(tmp_path, said, code=0):
    script = tmp_path / "pg_rewind"
    script.write_text("#!/bin/sh\necho \"$@\" > %s/argv\ncat <<'EOF'\n%s\nEOF\nexit %d\n" % (tmp_path, said, code))
    script.chmod(0o755)
    return str(tmp_path)


def test_what_pg_rewind_said_is_read_and_no_password_goes_into_argv(tmp_path):
    said = ("pg_rewind: servers diverged at WAL location 0/3000148 on timeline 1\n"
            "pg_rewind: rewinding from last common checkpoint at 0/2000060 on timeline 1\n"
            "16384/16384 kB (100%) copied\npg_rewind: Done!")
    out = rewind.run_pg_rewind(fake_pg_rewind(tmp_path, said), "/data", "host=h passfile=/p dbname=postgres",
                               None, 30)
    assert out["rewound"] and out["diverged_at"] == "0/3000148" and out["diverged_timeline"] == 1
    assert out["rewound_from_checkpoint"] == "0/2000060"
    assert not any("kB (" in line for line in out["pg_rewind_said"])
    argv = (tmp_path / "argv").read_text()
    assert "--restore-target-wal" in argv and "passfile=/p" in argv and "password" not in argv


def test_no_rewind_needed_and_a_failure(tmp_path):
    out = rewind.run_pg_rewind(fake_pg_rewind(tmp_path, "pg_rewind: no rewind required"), "/d", "host=h", None, 30)
    assert out["rewound"] is False
    os.unlink(str(tmp_path / "pg_rewind"))
    with pytest.raises(ToolError) as exc:
        rewind.run_pg_rewind(fake_pg_rewind(tmp_path, "pg_rewind: error: could not find previous WAL record", 1),
                             "/d", "host=h", None, 30)
    assert "could not find previous WAL record" in str(exc.value) and "new directory" in exc.value.hint
