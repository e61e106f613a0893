# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""User SQL checks run against a restored database by the verifiers."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type


from ..core.errors import ConfigError, DrkitError
from .client import connect


def normalise_checks(checks):
    out = []
    for i, c in enumerate(checks or []):
        if isinstance(c, str):
            c = {"sql": c}
        if not isinstance(c, dict) or not c.get("sql"):
            raise ConfigError("checks[%d] must be a SQL string or a mapping with 'sql'" % i,
                              "e.g. {name: agents present, sql: 'SELECT count(*) FROM mcp_documents.agents', min: 1}")
        unknown = set(c) - set(["name", "sql", "min", "max", "equals"])
        if unknown:
            raise ConfigError("checks[%d] has unknown keys %s" % (i, ", ".join(sorted(unknown))),
                              "Use name, sql, min, max, equals")
        c = dict(c)
        c.setdefault("name", c["sql"][:60])
        out.append(c)
    return out


def run_checks(cp, dbname, checks):
    """Each check's SQL must return one value; with no min/max/equals the
    value must be truthy (non-zero, true, non-empty)."""
    results = []
    conn = connect(cp, dbname, autocommit=True)
    try:
        for c in checks:
            entry = {"name": c["name"], "sql": c["sql"]}
            try:
                with conn.cursor() as cur:
                    cur.execute(c["sql"])
                    row = cur.fetchone()
                value = row[0] if row else None
                entry["value"] = value if isinstance(value, (int, float, str, bool, type(None))) else str(value)
                ok = True
                if "equals" in c:
                    ok = ok and value == c["equals"]
                if "min" in c:
                    ok = ok and value is not None and value >= c["min"]
                if "max" in c:
                    ok = ok and value is not None and value <= c["max"]
                if not any(k in c for k in ("equals", "min", "max")):
                    ok = bool(value)
                entry["ok"] = bool(ok)
            except DrkitError:
                raise  # an interrupt is not a failed check
            except Exception as e:  # pylint: disable=broad-except
                entry.update(ok=False, error=str(e).strip())
            results.append(entry)
    finally:
        conn.close()
    return results


def failed_checks(results):
    """The findings of the checks in ``results`` that failed."""
    return ["check %r failed%s" % (r["name"], (": " + r["error"]) if r.get("error") else " (value %r)" % (
        r.get("value"),)) for r in results if not r["ok"]]
