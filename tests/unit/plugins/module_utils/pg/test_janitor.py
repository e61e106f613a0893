# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""pg/janitor.py without a server: names at PostgreSQL's 63-byte limit that
parse back to their owner, and what sweep_databases drops, keeps and skips
(a fake connection; tests/integration/test_kill9_leftovers.py does it for
real)."""

import pytest
from ansible_collections.drkit.backup.plugins.module_utils.core import janitor as core_janitor
from ansible_collections.drkit.backup.plugins.module_utils.pg import janitor
from support.unit_helpers import dead_tag

# the longest tag there is: pid_max is at most 4194304 (7 digits)
LONGEST_TAG = "0123abcd_4194304_abcdef"


@pytest.fixture
def longest_tag(monkeypatch):
    monkeypatch.setattr(janitor, "owner_tag", lambda: LONGEST_TAG)


@pytest.mark.parametrize("prefix,marker,size", [
    ("", janitor.SCRATCH, 41),
    ("orders", janitor.STAGING, 50),
    ("a" * 63, janitor.STAGING, 63),
    ("a" * 63, janitor.OLD, 63),
    ("x" + "é" * 31, janitor.STAGING, 63),  # 19 bytes of the target left: "x" and nine "é"
    ("é" * 31, janitor.STAGING, 62),  # the cut would split an "é": one byte short
    ("xé" * 21, janitor.OLD, 62),
])
def test_names_fit_63_bytes_and_parse_back(longest_tag, prefix, marker, size):
    name = janitor.unique_name(prefix, marker)
    assert len(name.encode("utf-8")) == size
    assert name.startswith(prefix[:5])
    assert name[:-4].endswith("%s_%s_" % (marker, LONGEST_TAG))
    assert janitor.parse(name) == (marker, "0123abcd", "4194304", "abcdef")


def test_names_are_unique_and_carry_our_tag():
    names = set(janitor.unique_name("db", janitor.STAGING) for dummy in range(50))
    assert len(names) > 1
    for name in names:
        assert janitor.parse(name)[1:] == tuple(core_janitor.owner_tag().split("_"))


@pytest.mark.parametrize("name", [
    "drkit_verify_20250101120000_123_abcdef",  # drkit before the janitor: no host, never touched
    "x_drkit_verify_0123abcd_12_abcdef_0a0b",  # a scratch name starts with its marker
    "db__drkit_restore_0123abcd_12_abcdef_0a0",
    "db__drkit_restore_0123ABCD_12_abcdef_0a0b",
    "orders",
])
def test_other_names_do_not_parse(name):
    assert janitor.parse(name) is None


class FakeCursor(object):
    def __init__(self, conn):
        self.conn = conn

    def execute(self, sql, args=None):
        self.conn.queries.append((sql, args))

    def fetchall(self):
        return [(n,) for n in self.conn.names]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class FakeConn(object):
    autocommit = False

    def __init__(self, names):
        self.names = names
        self.queries = []

    def cursor(self):
        return FakeCursor(self)


def test_sweep_drops_dead_scratch_and_staging_keeps_renamed_originals(monkeypatch):
    ours = core_janitor.host_id()
    tag = dead_tag()
    names = ["drkit_verify_%s_0001" % tag,
             "db__drkit_restore_%s_0002" % tag,
             "db__drkit_old_%s_0003" % tag,
             "drkit_verify_%s_0004" % core_janitor.owner_tag(),  # ours: alive
             "x_drkit_verify_%s_0005" % tag]  # not a name we make
    conn = FakeConn(names)
    dropped_names = []
    monkeypatch.setattr(janitor, "drop_database", lambda c, n: dropped_names.append((c.autocommit, n)))
    messages = []
    dropped, kept = janitor.sweep_databases(conn, messages.append)
    assert dropped == names[:2] and kept == [names[2]]
    assert dropped_names == [(True, n) for n in names[:2]]  # DROP DATABASE outside a transaction
    assert conn.autocommit is False  # given back as it was
    (sql, args), = conn.queries
    assert "pg_has_role(datdba, 'MEMBER')" in sql and "_%s_" % ours in args[0]
    assert any(m.startswith("kept %s" % names[2]) for m in messages)


def test_sweep_reports_a_database_it_cannot_drop(monkeypatch):
    import psycopg

    tag = dead_tag()
    name = "drkit_verify_%s_0001" % tag

    def refuse(conn, n):
        raise psycopg.errors.InsufficientPrivilege("must be owner of database %s" % n)
    monkeypatch.setattr(janitor, "drop_database", refuse)
    messages = []
    assert janitor.sweep_databases(FakeConn([name]), messages.append) == ([], [])
    assert messages == ["could not drop %s, left by dead drkit process %s: must be owner of database %s"
                        % (name, tag.split("_")[1], name)]
