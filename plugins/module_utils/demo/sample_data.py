# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A sample dataset shaped like the audited platform, for tests, demos and
benchmarks.

One database (``agentic_platform`` by default) with three schemas and 36
tables: ``mcp_documents`` (27 tables: agents, api_requests, documents,
audit_log ...), ``mcp_contexts`` (7: active_sessions, checkpoints,
session_events ...) and ``l02_runtime`` (2: agent_state, checkpoints). Tables
are linked by foreign keys (also across schemas), carry jsonb, arrays, inet,
uuid, bytea, numeric, an enum and timestamps, have a few secondary indexes and
sequence-backed ids. Four big tables (api_requests, document_chunks,
audit_log, session_events) hold most of the volume.

Long because it is mostly data (the 36 table definitions and one row
generator each); demo code, never shipped to database hosts.

Text is made of pseudo-sentences drawn from a Zipf-weighted vocabulary plus
random ids and hex; 40% of the phrases recur from a per-table pool, as error
messages, notes and templates do in real tables. So it compresses like real
application data (a ``pg_dump -Fc -Z0`` of it: zstd -3 about 3.5x), neither
all-zero filler nor incompressible noise.

Rows are generated in Python from a seeded PRNG (one stream per table, so the
content is identical for a given seed and scale whatever the load order) and
streamed with ``CREATE TABLE`` + ``COPY ... FROM STDIN (FREEZE)`` in one
transaction per table. A second connection builds each table's keys and
indexes (and ANALYZEs it) while the next table is generated; foreign keys and
sequence positions come last. scale=1.0 is about 1 GB (pg_database_size) and
loads in about 30 s on 2 cores; an in-server ``INSERT ... SELECT
generate_series`` version measured about 3x slower for the same rows.

Entry points: :func:`generate`, :func:`write_load`, :func:`table_row_counts`.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import bisect
import datetime
import queue
import random
import threading
import time
import unicodedata

from ..core.errors import ConfigError, SafetyError, SourceError

APP_NAME = "drkit-sample-data"
DEFAULT_DATABASE = "agentic_platform"

SCHEMAS = ["mcp_documents", "mcp_contexts", "l02_runtime"]

# --------------------------------------------------------------------------
# vocabulary and text

_FUNCTION_WORDS = (
    "the of and to a in is for that on with as it by be this are from at or an was we not which "
    "can has have if will all when each more its into than then also only after before other new "
    "but one two three should must may per any our their over under between while these those"
).split()

_DOMAIN_WORDS = (
    "agent request response context session document chunk embedding token model prompt tool "
    "workflow run task event user team project dataset evaluation feedback alert webhook delivery "
    "schedule notification checkpoint snapshot conflict lock state runtime memory cache index query "
    "vector score metric latency error retry timeout status queue worker job pipeline stage step "
    "input output result summary report message payload header body field value key record entry "
    "table schema column row batch stream buffer offset cursor page limit window rate quota budget "
    "policy rule role permission scope access audit action object owner member admin service server "
    "client host node cluster region zone network address port endpoint route path version release "
    "deploy build config setting option default parameter argument variable template instruction "
    "system assistant function call invocation handler callback trigger signal hook plugin module "
    "library package dependency update change diff merge branch commit review comment note label tag "
    "priority severity incident warning failure success pending running completed cancelled queued "
    "started finished created updated deleted archived active inactive enabled disabled healthy "
    "degraded critical minor major blocked waiting ready available unavailable stale fresh valid "
    "invalid missing duplicate partial complete empty full large small fast slow high low first last "
    "next previous current recent older latest initial final primary secondary internal external "
    "public private shared local remote global customer account invoice order payment product price "
    "search filter sort group join select insert delete merge split parse format encode decode "
    "compress encrypt verify validate sign hash store load fetch send receive process handle resolve "
    "reject accept approve assign schedule notify escalate acknowledge close reopen monitor measure "
    "analyze summarize classify extract translate generate answer question answer reason plan "
    "observe reflect critique revise refine rank retrieve rerank ground cite source reference "
    "knowledge base article guide manual policy contract invoice ticket thread conversation turn "
    "history transcript log trace span sample batch epoch threshold baseline benchmark experiment "
    "hypothesis finding insight recommendation estimate forecast trend anomaly outlier spike drop "
    "increase decrease average median percentile total count ratio share growth churn retention "
    "revenue cost usage capacity storage bandwidth throughput backlog deadline milestone roadmap "
    "quarter month week day hour minute second morning evening today tomorrow yesterday customer "
    "support engineering finance legal marketing sales operations security compliance privacy "
    "backup restore recovery replica failover archive retention rotation migration upgrade rollback"
).split()

_SYLLABLES = ("ka lo mi ter an ex pro con ri vo sta de gra ul ne tion ment ing er ly ba cu dor el fi "
              "gan hal ist jo kel lum mar nor ol pe qua ros sel tur un vel wen xi yor zen bra cle dri "
              "fro glo pla sko tri ar or in on en at it us um ix ax").split()

_VOCAB_SEED = 20250601
_VOCAB_N = 3600
_ZIPF = 1.07
_REUSE = 0.4   # share of text() that repeats a pooled phrase
_POOL = 400
_vocab_lock = threading.Lock()
_SLOTS = []  # 65536 words, Zipf-weighted: a random 16-bit number picks a word


def _slot_table():
    """Build once: a 65536-entry word table whose frequencies follow a
    Zipf-Mandelbrot law over ~3,600 words (real words first, then
    pronounceable pseudo-words), with some punctuation attached."""
    if _SLOTS:
        return _SLOTS
    with _vocab_lock:
        if _SLOTS:
            return _SLOTS
        rng = random.Random(_VOCAB_SEED)
        seen = set()
        vocab = []
        for w in _FUNCTION_WORDS + _DOMAIN_WORDS:
            if w not in seen:
                seen.add(w)
                vocab.append(w)
        while len(vocab) < _VOCAB_N:
            w = "".join(rng.choice(_SYLLABLES) for _k in range(rng.randint(2, 4)))
            if w not in seen:
                seen.add(w)
                vocab.append(w)
        weights = [1.0 / (rank + 2.7) ** _ZIPF for rank in range(len(vocab))]
        total = sum(weights)
        cum = []
        acc = 0.0
        for w in weights:
            acc += w / total
            cum.append(acc)
        table = []
        for j in range(65536):
            idx = bisect.bisect_left(cum, (j + 0.5) / 65536.0)
            word = vocab[min(idx, len(vocab) - 1)]
            x = rng.random()
            if x < 0.07:
                word += "."
            elif x < 0.11:
                word += ","
            elif x < 0.13:
                word = word.capitalize()
            table.append(word)
        _SLOTS.extend(table)
    return _SLOTS


# --------------------------------------------------------------------------
# time

_DAY = 86400
_START = 1740787200  # 2025-03-01 00:00:00 UTC; the dataset is pinned in time (deterministic)
_SPAN = 92 * _DAY    # facts spread over March-May 2025
_DAY_BACK = 800      # entities may be created up to 800 days before _START
_DAYS = []


def _day_strings():
    """'YYYY-MM-DD' for every day from _DAY_BACK days before the start on
    (UTC calendar, independent of the local time zone)."""
    if not _DAYS:
        with _vocab_lock:
            if not _DAYS:
                first = datetime.date(2025, 3, 1) - datetime.timedelta(days=_DAY_BACK)
                one = datetime.timedelta(days=1)
                out = []
                day = first
                for _d in range(2 * _DAY_BACK + 200):
                    out.append(day.isoformat())
                    day += one
                _DAYS.extend(out)
    return _DAYS


# --------------------------------------------------------------------------
# row generator state


class _Gen(object):
    """Per-table generator: a seeded PRNG and helpers that produce COPY text
    values (no tab, newline or backslash unless escaped on purpose)."""

    def __init__(self, seed, key, counts, sessions):
        self.rng = random.Random("drkit-sample:%s:%s" % (seed, key))
        self.r = self.rng.random
        self.n = counts
        self.sessions = sessions
        self._slots = _slot_table()
        self._days = _day_strings()
        self._big = ""
        self._pos = 0
        self._pools = {}

    # numbers and picks
    def ri(self, n):
        """1..n"""
        return 1 + int(self.r() * n)

    def pick(self, seq):
        return seq[int(self.r() * len(seq))]

    def chance(self, p):
        return self.r() < p

    def maybe(self, p, value):
        return value if self.r() < p else "\\N"

    def hexs(self, nbytes):
        return self.rng.randbytes(nbytes).hex()

    def uuid(self):
        h = self.rng.randbytes(16).hex()
        return "%s-%s-4%s-a%s-%s" % (h[:8], h[8:12], h[13:16], h[17:20], h[20:32])

    def ip(self):
        b = self.rng.randbytes(3)
        return "10.%d.%d.%d" % (b[0], b[1], b[2])

    # text
    def text(self, lo, hi):
        """About lo..hi characters of pseudo-sentences (cut at a word end).
        Like real data, part of it recurs: with probability _REUSE the
        text is one already produced for this (lo, hi), from a pool of up
        to _POOL per table (the same error messages, notes, prompts...)."""
        if self.r() < _REUSE:
            pool = self._pools.get((lo, hi))
            if pool is None:
                pool = self._pools[(lo, hi)] = []
            if len(pool) >= _POOL:
                return pool[int(self.r() * _POOL)]
            text = self.fresh(lo, hi)
            pool.append(text)
            return text
        return self.fresh(lo, hi)

    def fresh(self, lo, hi):
        """Never-seen text of about lo..hi characters."""
        want = lo + int(self.r() * (hi - lo))
        big = self._big
        pos = self._pos
        end = big.find(" ", pos + want)
        if end < 0:
            slots = self._slots
            big = self._big = " ".join(map(slots.__getitem__,
                                           memoryview(self.rng.randbytes(2 * 65536)).cast("H")))
            pos = 0
            end = big.find(" ", want)
        self._pos = end + 1
        return big[pos:end]

    def title(self, lo=12, hi=48):
        return self.text(lo, hi).rstrip(".,").capitalize()

    def paragraphs(self, lo, hi):
        """Multi-paragraph text; paragraph breaks are COPY-escaped newlines."""
        total = lo + int(self.r() * (hi - lo))
        parts = []
        size = 0
        while size < total:
            p = self.text(200, 900)
            parts.append(p)
            size += len(p) + 2
        return "\\n\\n".join(parts)

    # time
    def ts(self, sec):
        """Timestamp text for ``sec`` seconds after the dataset start."""
        s = int(sec)
        if s > sec:
            s -= 1
        d, rem = divmod(s, _DAY)
        h, rem = divmod(rem, 3600)
        m, rem = divmod(rem, 60)
        return "%s %02d:%02d:%02d.%03d+00" % (self._days[d + _DAY_BACK], h, m, rem, int((sec - s) * 1000))

    def when(self, i, n):
        """Seconds for row i of n, increasing with i over the span, with jitter."""
        return (i - 0.5 * self.r()) * _SPAN / (n + 1)

    def before(self, days):
        """Seconds: some time within ``days`` days before the start."""
        return -self.r() * days * _DAY


_NULL = "\\N"
_MODELS = ["gpt-4o", "gpt-4o-mini", "claude-3-5-sonnet", "claude-3-haiku", "llama-3.1-70b", "mistral-large",
           "gemini-1.5-pro", "qwen2-72b"]
_EMBED_MODELS = ["text-embedding-3-small", "text-embedding-3-large", "bge-large-en", "e5-mistral"]
_METHODS = ["POST"] * 6 + ["GET"] * 3 + ["PUT", "DELETE", "PATCH"]
_PATHS = ["/v1/agents/%s/runs", "/v1/agents/%s/messages", "/v1/chat/completions", "/v1/embeddings",
          "/v1/documents/%s", "/v1/tools/%s/invoke", "/v1/workflows/%s/runs", "/v1/search",
          "/v1/contexts/%s/snapshot", "/v1/sessions/%s/events"]
_STATUS = [200] * 40 + [201] * 6 + [204] * 2 + [400, 401, 403, 404, 404, 409, 422, 429, 429, 500, 502, 503]
_RUN_STATUS = ["completed"] * 12 + ["failed"] * 2 + ["running", "queued", "cancelled"]
_TASK_STATUS = ["done"] * 10 + ["failed", "running", "pending", "pending", "blocked", "cancelled"]
_ROLES = ["owner", "admin", "member", "member", "member", "member", "viewer", "viewer"]
# Names carry the dataset's non-ASCII text (Latin-1 range, so any server
# encoding but SQL_ASCII-strict clients takes it); the word stream is ASCII.
_FIRST = ("ada alan grace linus ken dennis barbara margaret edsger donald john tim guido bjarne james anders "
          "lena marta jonas sofia mateo yuki amara ravi chen olga pierre ines noah emma liam mia "
          "zoë josé françois björn søren agnès jürgen núria").split()
_LAST = ("lovelace turing hopper torvalds thompson ritchie liskov hamilton dijkstra knuth backus lee rossum "
         "stroustrup gosling hejlsberg berg silva novak tanaka okafor patel wang petrova dubois costa "
         "müller gonzález øster gonçalves peña åberg").split()
_DOMAINS = ["example.com", "example.org", "acme.test", "agentic.dev", "corp.internal"]
_EVENTS = ["run.started", "run.completed", "run.failed", "document.indexed", "alert.fired", "task.assigned",
           "session.closed", "tool.failed", "eval.finished"]
_ACTIONS = ["create", "update", "delete", "read", "login", "logout", "grant", "revoke", "export", "invoke",
            "approve", "rotate_key"]
_OBJECTS = ["agent", "document", "dataset", "workflow", "prompt", "api_key", "webhook", "user", "project", "tool"]
_SEV = ["info", "info", "info", "warning", "warning", "error", "critical"]
_TZ = ["UTC", "Europe/Berlin", "America/New_York", "Asia/Tokyo", "Europe/London", "America/Los_Angeles"]
_MIME = ["text/markdown", "text/plain", "application/pdf", "text/html",
         "application/vnd.openxmlformats-officedocument.wordprocessingml.document"]
_SESSION_EVENTS = ["context.read", "context.write", "tool.call", "tool.result", "message.user", "message.assistant",
                   "checkpoint.saved", "lock.acquired", "lock.released", "heartbeat"]
_TASK_EVENTS = ["created", "assigned", "started", "progress", "tool_call", "retry", "completed", "failed", "comment"]
_NOTIFY = ["mention", "run_failed", "alert", "digest", "invite", "quota_warning", "review_request"]
_TOOL_NAMES = ["web_search", "sql_query", "http_get", "read_file", "write_file", "send_email", "create_ticket",
               "vector_search", "python_exec", "calendar", "translate", "summarize", "ocr", "transcribe"]
_LOCK_MODES = ["shared", "exclusive", "intent"]
_REL = ["derived_from", "references", "supersedes", "contradicts", "summarizes"]


def _b(x):
    return "true" if x else "false"


def _ascii(name):
    """zoë -> zoe, søren -> soren (for e-mail addresses)."""
    name = unicodedata.normalize("NFKD", name.replace("ø", "o").replace("ß", "ss"))
    return name.encode("ascii", "ignore").decode("ascii") or "user"


# --------------------------------------------------------------------------
# row generators: fn(g, lo, hi) -> list of COPY text lines for ids lo..hi-1


def _rows_teams(g, lo, hi):
    n = g.n["teams"]
    out = []
    for i in range(lo, hi):
        name = g.title(8, 24)
        settings = '{"plan": "%s", "seats": %d, "sso": %s, "region": "%s", "features": ["%s", "%s"]}' % (
            g.pick(["free", "team", "business", "enterprise"]), g.ri(200), _b(g.chance(0.4)),
            g.pick(["eu-central-1", "us-east-1", "ap-northeast-1"]), g.text(4, 12), g.text(4, 12))
        out.append("%d\t%s\tteam-%d-%s\t%s\t%s\t%s" % (
            i, name, i, g.hexs(3), g.text(40, 200), settings, g.ts(g.before(700) * (n - i + 1) / n)))
    return out


def _rows_users(g, lo, hi):
    nt = g.n["teams"]
    out = []
    for i in range(lo, hi):
        first, last = g.pick(_FIRST), g.pick(_LAST)
        prefs = '{"theme": "%s", "locale": "%s", "digest": %s, "notify": {"email": %s, "slack": %s}}' % (
            g.pick(["light", "dark", "system"]), g.pick(["en-US", "de-DE", "fr-FR", "ja-JP", "pt-BR"]),
            _b(g.chance(0.5)), _b(g.chance(0.7)), _b(g.chance(0.3)))
        created = g.before(600)
        out.append("%d\t%d\t%s.%s%d@%s\t%s %s\t%s\t%s\t%s\t%s\t%s" % (
            i, g.ri(nt), _ascii(first), _ascii(last), i, g.pick(_DOMAINS), first.capitalize(), last.capitalize(),
            g.pick(_ROLES), _b(g.chance(0.93)), prefs, g.ts(created),
            g.maybe(0.85, g.ts(g.r() * _SPAN))))
    return out


def _rows_projects(g, lo, hi):
    nt, nu = g.n["teams"], g.n["users"]
    out = []
    for i in range(lo, hi):
        tags = "{%s,%s,%s}" % (g.text(3, 10).rstrip(".,").replace(",", ""), g.pick(_OBJECTS), g.pick(_SEV))
        out.append("%d\t%d\t%d\t%s %d\t%s\t%s\t%s\t%s" % (
            i, g.ri(nt), g.ri(nu), g.title(8, 30), i, g.text(60, 400), g.pick(["private", "internal", "public"]),
            tags, g.ts(g.before(500))))
    return out


def _rows_agents(g, lo, hi):
    np_, nu = g.n["projects"], g.n["users"]
    out = []
    for i in range(lo, hi):
        model = g.pick(_MODELS)
        cfg = ('{"model": "%s", "temperature": %.2f, "max_tokens": %d, "tools": ["%s", "%s"], '
               '"memory": {"kind": "%s", "window": %d}, "retries": %d, "run_id": "%s"}') % (
            model, g.r(), 256 * g.ri(16), g.pick(_TOOL_NAMES), g.pick(_TOOL_NAMES),
            g.pick(["buffer", "summary", "vector"]), 4 * g.ri(16), g.ri(5), g.hexs(8))
        created = g.before(400)
        out.append("%d\t%d\t%d\tagent-%s-%d\t%s\t%s\t%s\t%s\t%d\t%s\t%s" % (
            i, g.ri(np_), g.ri(nu), g.text(4, 12).rstrip(".,").replace(",", ""), i, model,
            g.text(300, 1200), cfg, g.pick(["active"] * 6 + ["paused", "retired"]), g.ri(12),
            g.ts(created), g.ts(created + g.r() * 300 * _DAY)))
    return out


def _rows_tools(g, lo, hi):
    out = []
    for i in range(lo, hi):
        schema = ('{"type": "object", "properties": {"%s": {"type": "string", "description": "%s"}, '
                  '"limit": {"type": "integer", "default": %d}}, "required": ["%s"]}') % (
            g.pick(["query", "url", "path", "text"]), g.text(20, 80), g.ri(100), g.pick(["query", "url"]))
        out.append("%d\t%s_%d\t%s\t%s\t%s\t%s" % (
            i, g.pick(_TOOL_NAMES), i, g.text(40, 300), schema, _b(g.chance(0.9)), g.ts(g.before(300))))
    return out


def _rows_datasets(g, lo, hi):
    np_ = g.n["projects"]
    out = []
    for i in range(lo, hi):
        schema = '{"columns": [{"name": "%s", "type": "text"}, {"name": "%s", "type": "int"}], "format": "%s"}' % (
            g.text(3, 10).rstrip(".,").replace(",", ""), g.pick(_OBJECTS), g.pick(["parquet", "jsonl", "csv"]))
        out.append("%d\t%d\t%s %d\t%s\t%d\t%s\ts3://datasets/%s/%s.parquet\t%s" % (
            i, g.ri(np_), g.title(6, 24), i, g.text(50, 300), int(g.r() * 5000000), schema, g.hexs(4),
            g.hexs(8), g.ts(g.before(300))))
    return out


def _rows_documents(g, lo, hi):
    nd, np_ = g.n["datasets"], g.n["projects"]
    n = g.n["documents"]
    out = []
    for i in range(lo, hi):
        meta = ('{"lang": "%s", "author": "%s", "pages": %d, "labels": ["%s", "%s"], "ingest": {"job": "%s", '
                '"ocr": %s}}') % (
            g.pick(["en", "en", "en", "de", "fr"]), g.pick(_LAST), g.ri(80), g.pick(_OBJECTS), g.pick(_SEV),
            g.hexs(6), _b(g.chance(0.2)))
        out.append("%d\t%d\t%d\t%s\thttps://docs.%s/%s/%s\t%s\t%s\t%s\t%s\t%s" % (
            i, g.ri(nd), g.ri(np_), g.title(16, 70), g.pick(_DOMAINS), g.pick(_OBJECTS), g.hexs(6),
            g.pick(_MIME), g.paragraphs(1200, 5000), meta, g.hexs(32), g.ts(g.when(i, n) - 30 * _DAY)))
    return out


def _rows_document_chunks(g, lo, hi):
    nd, nc = g.n["documents"], g.n["document_chunks"]
    out = []
    for i in range(lo, hi):
        d = 1 + (i - 1) * nd // nc
        idx = (i - 1) - (-(-(d - 1) * nc // nd))
        content = g.text(500, 1400)
        meta = '{"start": %d, "end": %d, "section": "%s", "heading": "%s"}' % (
            idx * 1000, idx * 1000 + len(content), g.pick(["intro", "body", "appendix", "summary"]), g.title(8, 30))
        out.append("%d\t%d\t%d\t%s\t%d\t%s\t%s" % (
            i, d, idx, content, len(content) // 4, meta, g.ts(g.when(i, nc) - 30 * _DAY)))
    return out


def _rows_embeddings_meta(g, lo, hi):
    nc, ne = g.n["document_chunks"], g.n["embeddings_meta"]
    out = []
    for i in range(lo, hi):
        model = g.pick(_EMBED_MODELS)
        out.append("%d\t%d\t%s\t%d\t%.6f\ts3://embeddings/%s/%s.npy\t%s" % (
            i, 1 + (i - 1) % nc, model, g.pick([384, 768, 1024, 1536, 3072]), 0.5 + g.r(), model, g.hexs(10),
            g.ts(g.when(i, ne) - 29 * _DAY)))
    return out


def _rows_prompts(g, lo, hi):
    np_, nu = g.n["projects"], g.n["users"]
    out = []
    for i in range(lo, hi):
        out.append("%d\t%d\t%d\t%s_%d\t%s\t%s" % (
            i, g.ri(np_), g.ri(nu), g.text(4, 16).rstrip(".,").replace(" ", "_").replace(",", ""), i,
            g.text(30, 200), g.ts(g.before(300))))
    return out


def _rows_prompt_versions(g, lo, hi):
    np_, nv = g.n["prompts"], g.n["prompt_versions"]
    out = []
    for i in range(lo, hi):
        p = 1 + (i - 1) * np_ // nv
        ver = 1 + (i - 1) - (-(-(p - 1) * nv // np_))
        tmpl = "%s {{%s}} %s {{%s}} %s" % (g.text(100, 500), g.pick(_OBJECTS), g.text(100, 600),
                                           g.pick(["input", "context", "question"]), g.text(50, 300))
        variables = '{"%s": {"type": "string"}, "max_words": %d, "style": "%s"}' % (
            g.pick(_OBJECTS), 50 * g.ri(20), g.pick(["concise", "formal", "friendly"]))
        out.append("%d\t%d\t%d\t%s\t%s\t%s" % (i, p, ver, tmpl, variables, g.ts(g.before(200))))
    return out


def _rows_workflows(g, lo, hi):
    np_ = g.n["projects"]
    out = []
    for i in range(lo, hi):
        steps = ", ".join('{"id": "s%d", "tool": "%s", "agent": %d, "on_error": "%s", "note": "%s"}' % (
            k, g.pick(_TOOL_NAMES), g.ri(g.n["agents"]), g.pick(["retry", "skip", "abort"]), g.text(20, 80))
            for k in range(1 + int(g.r() * 7)))
        defn = '{"version": %d, "trigger": "%s", "steps": [%s]}' % (
            g.ri(9), g.pick(["cron", "webhook", "manual"]), steps)
        out.append("%d\t%d\t%s %d\t%s\t%s\t%s" % (
            i, g.ri(np_), g.title(8, 30), i, defn, _b(g.chance(0.85)), g.ts(g.before(250))))
    return out


def _rows_workflow_runs(g, lo, hi):
    nw, nu, n = g.n["workflows"], g.n["users"], g.n["workflow_runs"]
    out = []
    for i in range(lo, hi):
        st = g.pick(_RUN_STATUS)
        t = g.when(i, n)
        done = st in ("completed", "failed", "cancelled")
        inp = '{"source": "%s", "items": %d, "run_key": "%s", "note": "%s"}' % (
            g.pick(_OBJECTS), g.ri(500), g.hexs(8), g.text(20, 120))
        outp = ('{"processed": %d, "summary": "%s"}' % (g.ri(500), g.text(40, 240))) if st == "completed" else _NULL
        err = g.text(30, 160) if st == "failed" else _NULL
        out.append("%d\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s" % (
            i, g.ri(nw), g.maybe(0.6, str(g.ri(nu))), st, g.ts(t),
            g.ts(t + 1 + g.r() * 3600) if done else _NULL, inp, outp, err))
    return out


def _rows_tasks(g, lo, hi):
    nr, na, n = g.n["workflow_runs"], g.n["agents"], g.n["tasks"]
    out = []
    for i in range(lo, hi):
        st = g.pick(_TASK_STATUS)
        t = g.when(i, n)
        payload = '{"kind": "%s", "target": "%s/%s", "attempt": %d, "params": {"q": "%s", "k": %d}}' % (
            g.pick(_OBJECTS), g.pick(_OBJECTS), g.hexs(5), g.ri(3), g.text(10, 60), g.ri(20))
        out.append("%d\t%d\t%d\t%s\t%s\t%d\t%s\t%s\t%s\t%s" % (
            i, 1 + (i - 1) * nr // n, g.ri(na), g.title(10, 50), st, g.ri(5), payload,
            g.text(40, 300) if st == "done" else _NULL, g.ts(t), g.ts(t + g.r() * 7200)))
    return out


def _rows_task_events(g, lo, hi):
    nt, n = g.n["tasks"], g.n["task_events"]
    out = []
    for i in range(lo, hi):
        data = '{"by": "%s", "trace_id": "%s", "ms": %d}' % (
            g.pick(["agent", "user", "system"]), g.hexs(8), g.ri(5000))
        out.append("%d\t%d\t%s\t%s\t%s\t%s" % (
            i, 1 + (i - 1) * nt // n, g.pick(_TASK_EVENTS), g.text(30, 220), data, g.ts(g.when(i, n))))
    return out


def _rows_tool_invocations(g, lo, hi):
    ntl, na, nt, n = g.n["tools"], g.n["agents"], g.n["tasks"], g.n["tool_invocations"]
    out = []
    for i in range(lo, hi):
        ok = g.chance(0.92)
        args = '{"query": "%s", "limit": %d, "request_id": "%s"}' % (g.text(10, 80), g.ri(50), g.uuid())
        out.append("%d\t%d\t%d\t%s\t%s\t%s\t%d\t%s\t%s" % (
            i, g.ri(ntl), g.ri(na), g.maybe(0.8, str(g.ri(nt))), args,
            g.text(60, 500) if ok else "error: " + g.text(20, 120), int(g.r() ** 3 * 30000),
            _b(ok), g.ts(g.when(i, n))))
    return out


def _rows_api_keys(g, lo, hi):
    nu = g.n["users"]
    out = []
    for i in range(lo, hi):
        created = g.before(365)
        out.append("%d\t%d\t%s key %d\tsk_%s\t\\\\x%s\t{%s,%s}\t%s\t%s\t%s" % (
            i, g.ri(nu), g.pick(["ci", "prod", "staging", "local", "notebook"]), i, g.hexs(6), g.hexs(32),
            g.pick(["read", "write", "admin"]), g.pick(["agents", "documents", "runs"]), g.ts(created),
            g.ts(created + 365 * _DAY), g.maybe(0.1, g.ts(created + g.r() * 200 * _DAY))))
    return out


def _rows_api_requests(g, lo, hi):
    na, nk, n = g.n["agents"], g.n["api_keys"], g.n["api_requests"]
    out = []
    for i in range(lo, hi):
        agent = g.ri(na)
        path = g.pick(_PATHS)
        if "%s" in path:
            path = path % g.hexs(6)
        status = g.pick(_STATUS)
        tin = int(g.r() * 4000) + 20
        body = ('{"model": "%s", "temperature": %.1f, "stream": %s, "messages": [{"role": "system", "content": "%s"}, '
                '{"role": "user", "content": "%s"}], "metadata": {"trace_id": "%s", "session": "%s"}}') % (
            g.pick(_MODELS), g.r(), _b(g.chance(0.3)), g.text(20, 120), g.text(40, 420), g.hexs(8),
            g.pick(g.sessions))
        err = _NULL
        if status >= 400:
            err = "%d %s: %s" % (status, g.pick(["invalid_request", "rate_limited", "upstream_error", "not_found",
                                                 "unauthorized"]), g.text(20, 120))
        out.append("%d\t%s\t%d\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t%s\t%s\t%s\t%s\t%s" % (
            i, g.uuid(), agent, g.maybe(0.9, str(g.ri(nk))), g.pick(_METHODS), path, status,
            int(20 + g.r() ** 2 * 8000), tin, int(g.r() * tin), body, g.text(40, 260), err, g.ip(),
            g.ts(g.when(i, n))))
    return out


def _rows_rate_limits(g, lo, hi):
    nk, n = g.n["api_keys"], g.n["rate_limits"]
    out = []
    for i in range(lo, hi):
        t = g.when(i, n)
        lim = g.pick([60, 120, 600, 3000])
        out.append("%d\t%d\t%s\t%d\t%d\t%s" % (i, g.ri(nk), g.ts(t - t % 60), lim, int(g.r() * lim), g.ts(t + 59)))
    return out


def _rows_alerts(g, lo, hi):
    na, nu, n = g.n["agents"], g.n["users"], g.n["alerts"]
    out = []
    for i in range(lo, hi):
        t = g.when(i, n)
        labels = '{"service": "%s", "env": "%s", "runbook": "https://runbooks.%s/%s", "fingerprint": "%s"}' % (
            g.pick(_OBJECTS), g.pick(["prod", "staging"]), g.pick(_DOMAINS), g.pick(_OBJECTS), g.hexs(8))
        out.append("%d\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s" % (
            i, 100000 + i, g.maybe(0.8, str(g.ri(na))), g.pick(_SEV), g.title(16, 60), g.text(60, 400), labels,
            g.maybe(0.5, str(g.ri(nu))), g.ts(t), g.maybe(0.7, g.ts(t + g.r() * 86400))))
    return out


def _rows_evaluations(g, lo, hi):
    npv, nd, na, n = g.n["prompt_versions"], g.n["datasets"], g.n["agents"], g.n["evaluations"]
    out = []
    for i in range(lo, hi):
        metrics = '{"accuracy": %.4f, "faithfulness": %.4f, "latency_p95_ms": %d, "cases": %d, "judge": "%s"}' % (
            g.r(), g.r(), g.ri(9000), g.ri(2000), g.pick(_MODELS))
        out.append("%d\t%d\t%d\t%d\t%.4f\t%s\t%s\t%s" % (
            i, g.ri(npv), g.ri(nd), g.ri(na), g.r(), metrics, g.text(30, 400), g.ts(g.when(i, n))))
    return out


def _rows_feedback(g, lo, hi):
    nr, nu, n = g.n["api_requests"], g.n["users"], g.n["feedback"]
    out = []
    for i in range(lo, hi):
        out.append("%d\t%d\t%d\t%d\t%s\t%s" % (
            i, g.ri(nr), g.ri(nu), g.ri(5), g.maybe(0.7, g.text(20, 300)), g.ts(g.when(i, n))))
    return out


def _rows_audit_log(g, lo, hi):
    nu, na, n = g.n["users"], g.n["agents"], g.n["audit_log"]
    out = []
    for i in range(lo, hi):
        by_user = g.chance(0.6)
        obj = g.pick(_OBJECTS)
        details = ('{"request_id": "%s", "user_agent": "%s/%d.%d", "changes": {"field": "%s", "old": "%s", '
                   '"new": "%s"}, "reason": "%s"}') % (
            g.uuid(), g.pick(["drkit-cli", "python-requests", "Mozilla", "curl", "terraform"]), g.ri(9), g.ri(30),
            g.pick(["status", "name", "config", "owner", "scopes"]), g.text(4, 30), g.text(4, 30), g.text(10, 120))
        out.append("%d\t%s\t%s\t%s\t%s\t%s\t%s:%s\t%s\t%s" % (
            i, g.ts(g.when(i, n)), str(g.ri(nu)) if by_user else _NULL, _NULL if by_user else str(g.ri(na)),
            g.pick(_ACTIONS), obj, obj, g.hexs(6), g.ip(), details))
    return out


def _rows_webhooks(g, lo, hi):
    np_ = g.n["projects"]
    out = []
    for i in range(lo, hi):
        out.append("%d\t%d\thttps://hooks.%s/%s/%s\twhsec_%s\t{%s,%s}\t%s\t%s" % (
            i, g.ri(np_), g.pick(_DOMAINS), g.pick(_OBJECTS), g.hexs(8), g.hexs(3), g.pick(_EVENTS),
            g.pick(_EVENTS), _b(g.chance(0.8)), g.ts(g.before(200))))
    return out


def _rows_webhook_deliveries(g, lo, hi):
    nw, n = g.n["webhooks"], g.n["webhook_deliveries"]
    out = []
    for i in range(lo, hi):
        t = g.when(i, n)
        ev = g.pick(_EVENTS)
        payload = '{"event": "%s", "id": "%s", "data": {"object_id": %d, "summary": "%s"}}' % (
            ev, g.uuid(), g.ri(100000), g.text(40, 260))
        st = g.pick([200] * 10 + [500, 502, 404, 0])
        out.append("%d\t%d\t%s\t%s\t%s\t%d\t%s\t%s" % (
            i, g.ri(nw), ev, payload, str(st) if st else _NULL, g.ri(3), g.ts(t + g.r() * 5) if st else _NULL,
            g.ts(t)))
    return out


def _rows_schedules(g, lo, hi):
    nw = g.n["workflows"]
    out = []
    for i in range(lo, hi):
        out.append("%d\t%d\t%d %d * * %s\t%s\t%s\t%s\t%s\t%s" % (
            i, g.ri(nw), int(g.r() * 60), int(g.r() * 24), g.pick(["*", "1-5", "0", "6"]), g.pick(_TZ),
            g.ts(_SPAN + g.r() * _DAY), g.maybe(0.8, g.ts(_SPAN - g.r() * _DAY)), _b(g.chance(0.85)),
            g.ts(g.before(200))))
    return out


def _rows_notifications(g, lo, hi):
    nu, n = g.n["users"], g.n["notifications"]
    out = []
    for i in range(lo, hi):
        out.append("%d\t%d\t%s\t%s\t%s\t%s\t%s" % (
            i, g.ri(nu), g.pick(_NOTIFY), g.title(12, 50), g.text(40, 300), _b(g.chance(0.6)),
            g.ts(g.when(i, n))))
    return out


def _rows_active_sessions(g, lo, hi):
    na, nu, n = g.n["agents"], g.n["users"], g.n["active_sessions"]
    out = []
    for i in range(lo, hi):
        t = g.when(i, n)
        state = '{"cursor": %d, "focus": "%s", "open_documents": [%d, %d], "summary": "%s"}' % (
            g.ri(1000), g.pick(_OBJECTS), g.ri(g.n["documents"]), g.ri(g.n["documents"]), g.text(40, 300))
        out.append("%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s" % (
            g.sessions[i - 1], g.ri(na), g.maybe(0.7, str(g.ri(nu))),
            g.pick(["claude-desktop", "cursor", "vscode-mcp", "cli", "web"]),
            g.pick(["active"] * 5 + ["idle", "closed"]), g.ts(t), g.ts(t + g.r() * 4 * 3600), state))
    return out


def _rows_context_snapshots(g, lo, hi):
    ns, n = len(g.sessions), g.n["context_snapshots"]
    out = []
    for i in range(lo, hi):
        s = (i - 1) * ns // n
        ver = 1 + (i - 1) - (-(-s * n // ns))
        body = g.text(300, 1200)
        content = '{"facts": ["%s", "%s"], "goal": "%s", "notes": "%s", "refs": [%d, %d, %d]}' % (
            g.text(20, 80), g.text(20, 80), g.text(20, 100), body, g.ri(99999), g.ri(99999), g.ri(99999))
        out.append("%d\t%s\t%d\t%s\t%d\t%s" % (i, g.sessions[s], ver, content, len(content), g.ts(g.when(i, n))))
    return out


def _rows_context_links(g, lo, hi):
    ns, n = g.n["context_snapshots"], g.n["context_links"]
    out = []
    for i in range(lo, hi):
        a = g.ri(ns)
        out.append("%d\t%d\t%d\t%s\t%.3f\t%s" % (
            i, a, max(1, a - g.ri(20)), g.pick(_REL), g.r(), g.ts(g.when(i, n))))
    return out


def _rows_context_locks(g, lo, hi):
    n = g.n["context_locks"]
    out = []
    for i in range(lo, hi):
        t = _SPAN - (n - i) * 7.0
        out.append("%d\t%s\t%s:%d\t%s\t%s\t%s" % (
            i, g.pick(g.sessions), g.pick(_OBJECTS), i, g.pick(_LOCK_MODES), g.ts(t), g.ts(t + 300)))
    return out


def _rows_ctx_checkpoints(g, lo, hi):
    nsn, n = g.n["context_snapshots"], g.n["ctx.checkpoints"]
    out = []
    for i in range(lo, hi):
        data = '{"step": %d, "token_budget": %d, "pending": ["%s"], "hash": "%s"}' % (
            g.ri(200), 1000 * g.ri(128), g.text(10, 60), g.hexs(16))
        out.append("%d\t%s\t%s\t%s\t%s\t%s" % (
            i, g.pick(g.sessions), g.maybe(0.9, str(g.ri(nsn))), g.title(8, 30), data, g.ts(g.when(i, n))))
    return out


def _rows_context_conflicts(g, lo, hi):
    nc, n = g.n["ctx.checkpoints"], g.n["context_conflicts"]
    out = []
    for i in range(lo, hi):
        t = g.when(i, n)
        details = '{"ours": "%s", "theirs": "%s", "base_version": %d}' % (g.text(10, 80), g.text(10, 80), g.ri(40))
        out.append("%d\t%d\t%s\t%s:%s\t%s\t%s\t%s\t%s" % (
            i, g.ri(nc), g.pick(g.sessions), g.pick(_OBJECTS), g.hexs(4),
            g.maybe(0.75, g.pick(["ours", "theirs", "merged", "manual"])), details, g.ts(t),
            g.maybe(0.75, g.ts(t + g.r() * 3600))))
    return out


def _rows_session_events(g, lo, hi):
    ns, n = len(g.sessions), g.n["session_events"]
    out = []
    for i in range(lo, hi):
        s = (i - 1) * ns // n
        seq = 1 + (i - 1) - (-(-s * n // ns))
        payload = '{"tool": "%s", "args": {"q": "%s"}, "tokens": %d, "span_id": "%s", "text": "%s"}' % (
            g.pick(_TOOL_NAMES), g.text(10, 60), g.ri(3000), g.hexs(8), g.text(30, 260))
        out.append("%d\t%s\t%d\t%s\t%s\t%s" % (
            i, g.sessions[s], seq, g.pick(_SESSION_EVENTS), payload, g.ts(g.when(i, n))))
    return out


def _rows_agent_state(g, lo, hi):
    out = []
    for i in range(lo, hi):
        state = ('{"phase": "%s", "goal": "%s", "scratchpad": "%s", "plan": ["%s", "%s", "%s"], '
                 '"last_tool": "%s", "errors": %d}') % (
            g.pick(["idle", "planning", "acting", "reflecting"]), g.text(20, 100), g.text(200, 1000),
            g.text(10, 60), g.text(10, 60), g.text(10, 60), g.pick(_TOOL_NAMES), int(g.r() * 4))
        t = _SPAN - g.r() * 3 * _DAY
        out.append("%d\t%s\t%s\t%s\t%d\t%s" % (
            i, g.pick(["running", "idle", "idle", "sleeping", "error"]), state, g.ts(t), g.ri(500), g.ts(t)))
    return out


def _rows_rt_checkpoints(g, lo, hi):
    na, nc, n = g.n["agent_state"], g.n["ctx.checkpoints"], g.n["rt.checkpoints"]
    out = []
    for i in range(lo, hi):
        snap = '{"memory": ["%s", "%s"], "step_hash": "%s", "tool_calls": %d, "note": "%s"}' % (
            g.text(20, 120), g.text(20, 120), g.hexs(12), g.ri(30), g.text(40, 300))
        out.append("%d\t%d\t%d\t%s\t%s\t%s" % (
            i, g.ri(na), g.ri(400), snap, g.maybe(0.4, str(g.ri(nc))), g.ts(g.when(i, n))))
    return out


# --------------------------------------------------------------------------
# schema


class _Table(object):
    def __init__(self, schema, name, key, base, minimum, columns, rows, pk="id", unique=(), indexes=(), fks=(),
                 checks=(), identity=True):
        self.schema = schema
        self.name = name
        self.key = key          # short name used for row counts and PRNG streams
        self.base = base        # rows at scale 1.0
        self.minimum = minimum  # rows at any scale
        self.columns = columns  # [(name, type and column constraints)]
        self.rows = rows
        self.pk = pk
        self.unique = unique
        self.indexes = indexes  # [(suffix, "USING ... (cols)" or "(cols)")]
        self.fks = fks          # [(column, "schema.table", ref_column)]
        self.checks = checks
        self.identity = identity

    @property
    def qname(self):
        return "%s.%s" % (self.schema, self.name)


_ID = ("id", "bigint GENERATED BY DEFAULT AS IDENTITY")
_TS = "timestamptz NOT NULL DEFAULT now()"
D, C, R = "mcp_documents", "mcp_contexts", "l02_runtime"

_TABLES = [
    _Table(D, "teams", "teams", 200, 3, [
        _ID, ("name", "text NOT NULL"), ("slug", "text NOT NULL"), ("description", "text"),
        ("settings", "jsonb NOT NULL DEFAULT '{}'"), ("created_at", _TS)], _rows_teams, unique=["slug"]),
    _Table(D, "users", "users", 5000, 10, [
        _ID, ("team_id", "bigint NOT NULL"), ("email", "text NOT NULL"), ("display_name", "text NOT NULL"),
        ("role", "text NOT NULL DEFAULT 'member'"), ("is_active", "boolean NOT NULL DEFAULT true"),
        ("preferences", "jsonb NOT NULL DEFAULT '{}'"), ("created_at", _TS), ("last_login_at", "timestamptz")],
        _rows_users, unique=["email"], indexes=[("team_id", "(team_id)")],
        fks=[("team_id", "mcp_documents.teams", "id")]),
    _Table(D, "projects", "projects", 1000, 5, [
        _ID, ("team_id", "bigint NOT NULL"), ("owner_id", "bigint NOT NULL"), ("name", "text NOT NULL"),
        ("description", "text"), ("visibility", "text NOT NULL DEFAULT 'private'"),
        ("tags", "text[] NOT NULL DEFAULT '{}'"), ("created_at", _TS)], _rows_projects,
        fks=[("team_id", "mcp_documents.teams", "id"), ("owner_id", "mcp_documents.users", "id")]),
    _Table(D, "agents", "agents", 2000, 5, [
        _ID, ("project_id", "bigint NOT NULL"), ("owner_id", "bigint NOT NULL"), ("name", "text NOT NULL"),
        ("model", "text NOT NULL"), ("system_prompt", "text NOT NULL"), ("config", "jsonb NOT NULL"),
        ("status", "text NOT NULL DEFAULT 'active'"), ("version", "integer NOT NULL DEFAULT 1"),
        ("created_at", _TS), ("updated_at", _TS)], _rows_agents, unique=["name"],
        indexes=[("project_id", "(project_id)")],
        fks=[("project_id", "mcp_documents.projects", "id"), ("owner_id", "mcp_documents.users", "id")]),
    _Table(D, "tools", "tools", 300, 5, [
        _ID, ("name", "text NOT NULL"), ("description", "text"), ("input_schema", "jsonb NOT NULL"),
        ("is_enabled", "boolean NOT NULL DEFAULT true"), ("created_at", _TS)], _rows_tools, unique=["name"]),
    _Table(D, "datasets", "datasets", 800, 3, [
        _ID, ("project_id", "bigint NOT NULL"), ("name", "text NOT NULL"), ("description", "text"),
        ("row_count", "bigint NOT NULL DEFAULT 0"), ("schema", "jsonb"), ("storage_uri", "text NOT NULL"),
        ("created_at", _TS)], _rows_datasets, fks=[("project_id", "mcp_documents.projects", "id")]),
    _Table(D, "documents", "documents", 12000, 20, [
        _ID, ("dataset_id", "bigint NOT NULL"), ("project_id", "bigint NOT NULL"), ("title", "text NOT NULL"),
        ("source_url", "text"), ("mime_type", "text NOT NULL"), ("content", "text NOT NULL"),
        ("metadata", "jsonb NOT NULL DEFAULT '{}'"), ("checksum", "text NOT NULL"), ("created_at", _TS)],
        _rows_documents, indexes=[("dataset_id", "(dataset_id)"), ("metadata", "USING gin (metadata jsonb_path_ops)")],
        fks=[("dataset_id", "mcp_documents.datasets", "id"), ("project_id", "mcp_documents.projects", "id")]),
    _Table(D, "document_chunks", "document_chunks", 100000, 100, [
        _ID, ("document_id", "bigint NOT NULL"), ("chunk_index", "integer NOT NULL"), ("content", "text NOT NULL"),
        ("token_count", "integer NOT NULL"), ("metadata", "jsonb NOT NULL DEFAULT '{}'"), ("created_at", _TS)],
        _rows_document_chunks, unique=["document_id, chunk_index"],
        fks=[("document_id", "mcp_documents.documents", "id")]),
    _Table(D, "embeddings_meta", "embeddings_meta", 80000, 80, [
        _ID, ("chunk_id", "bigint NOT NULL"), ("model", "text NOT NULL"), ("dimensions", "integer NOT NULL"),
        ("norm", "double precision"), ("vector_ref", "text NOT NULL"), ("created_at", _TS)], _rows_embeddings_meta,
        indexes=[("chunk_id", "(chunk_id)")], fks=[("chunk_id", "mcp_documents.document_chunks", "id")]),
    _Table(D, "prompts", "prompts", 1500, 5, [
        _ID, ("project_id", "bigint NOT NULL"), ("created_by", "bigint NOT NULL"), ("name", "text NOT NULL"),
        ("description", "text"), ("created_at", _TS)], _rows_prompts,
        fks=[("project_id", "mcp_documents.projects", "id"), ("created_by", "mcp_documents.users", "id")]),
    _Table(D, "prompt_versions", "prompt_versions", 4000, 10, [
        _ID, ("prompt_id", "bigint NOT NULL"), ("version", "integer NOT NULL"), ("template", "text NOT NULL"),
        ("variables", "jsonb NOT NULL DEFAULT '{}'"), ("created_at", _TS)], _rows_prompt_versions,
        unique=["prompt_id, version"], fks=[("prompt_id", "mcp_documents.prompts", "id")]),
    _Table(D, "workflows", "workflows", 1000, 5, [
        _ID, ("project_id", "bigint NOT NULL"), ("name", "text NOT NULL"), ("definition", "jsonb NOT NULL"),
        ("is_active", "boolean NOT NULL DEFAULT true"), ("created_at", _TS)], _rows_workflows,
        fks=[("project_id", "mcp_documents.projects", "id")]),
    _Table(D, "workflow_runs", "workflow_runs", 30000, 20, [
        _ID, ("workflow_id", "bigint NOT NULL"), ("triggered_by", "bigint"), ("status", "text NOT NULL"),
        ("started_at", "timestamptz NOT NULL"), ("finished_at", "timestamptz"), ("input", "jsonb"),
        ("output", "jsonb"), ("error", "text")], _rows_workflow_runs,
        indexes=[("workflow_id_started_at", "(workflow_id, started_at)")],
        fks=[("workflow_id", "mcp_documents.workflows", "id"), ("triggered_by", "mcp_documents.users", "id")]),
    _Table(D, "tasks", "tasks", 75000, 50, [
        _ID, ("workflow_run_id", "bigint NOT NULL"), ("agent_id", "bigint NOT NULL"), ("title", "text NOT NULL"),
        ("status", "text NOT NULL DEFAULT 'pending'"), ("priority", "smallint NOT NULL DEFAULT 3"),
        ("payload", "jsonb"), ("result", "text"), ("created_at", _TS), ("updated_at", _TS)], _rows_tasks,
        indexes=[("workflow_run_id", "(workflow_run_id)"),
                 ("open", "(agent_id, priority) WHERE status IN ('pending', 'running', 'blocked')")],
        fks=[("workflow_run_id", "mcp_documents.workflow_runs", "id"), ("agent_id", "mcp_documents.agents", "id")]),
    _Table(D, "task_events", "task_events", 150000, 100, [
        _ID, ("task_id", "bigint NOT NULL"), ("event_type", "text NOT NULL"), ("message", "text"),
        ("data", "jsonb"), ("created_at", _TS)], _rows_task_events, indexes=[("task_id", "(task_id)")],
        fks=[("task_id", "mcp_documents.tasks", "id")]),
    _Table(D, "tool_invocations", "tool_invocations", 100000, 50, [
        _ID, ("tool_id", "bigint NOT NULL"), ("agent_id", "bigint NOT NULL"), ("task_id", "bigint"),
        ("arguments", "jsonb NOT NULL"), ("result", "text"), ("duration_ms", "integer NOT NULL"),
        ("success", "boolean NOT NULL"), ("created_at", _TS)], _rows_tool_invocations,
        indexes=[("agent_id_created_at", "(agent_id, created_at)")],
        fks=[("tool_id", "mcp_documents.tools", "id"), ("agent_id", "mcp_documents.agents", "id"),
             ("task_id", "mcp_documents.tasks", "id")]),
    _Table(D, "api_keys", "api_keys", 3000, 5, [
        _ID, ("user_id", "bigint NOT NULL"), ("name", "text NOT NULL"), ("prefix", "text NOT NULL"),
        ("key_hash", "bytea NOT NULL"), ("scopes", "text[] NOT NULL"), ("created_at", _TS),
        ("expires_at", "timestamptz"), ("revoked_at", "timestamptz")], _rows_api_keys, unique=["prefix"],
        fks=[("user_id", "mcp_documents.users", "id")]),
    _Table(D, "api_requests", "api_requests", 310000, 200, [
        _ID, ("request_id", "uuid NOT NULL"), ("agent_id", "bigint NOT NULL"), ("api_key_id", "bigint"),
        ("method", "text NOT NULL"), ("path", "text NOT NULL"), ("status_code", "smallint NOT NULL"),
        ("latency_ms", "integer NOT NULL"), ("tokens_in", "integer NOT NULL DEFAULT 0"),
        ("tokens_out", "integer NOT NULL DEFAULT 0"), ("request_body", "jsonb"), ("response_summary", "text"),
        ("error", "text"), ("client_ip", "inet"), ("created_at", _TS)], _rows_api_requests,
        unique=["request_id"],
        indexes=[("agent_id_created_at", "(agent_id, created_at)"), ("created_at", "(created_at)")],
        fks=[("agent_id", "mcp_documents.agents", "id"), ("api_key_id", "mcp_documents.api_keys", "id")]),
    _Table(D, "rate_limits", "rate_limits", 5000, 5, [
        _ID, ("api_key_id", "bigint NOT NULL"), ("window_start", "timestamptz NOT NULL"),
        ("limit_per_minute", "integer NOT NULL"), ("used", "integer NOT NULL DEFAULT 0"), ("updated_at", _TS)],
        _rows_rate_limits, indexes=[("api_key_id_window", "(api_key_id, window_start)")],
        fks=[("api_key_id", "mcp_documents.api_keys", "id")], checks=["used >= 0"]),
    _Table(D, "alerts", "alerts", 10000, 10, [
        _ID, ("ticket_no", "bigint NOT NULL DEFAULT nextval('mcp_documents.alert_ticket_seq')"),
        ("agent_id", "bigint"), ("severity", "mcp_documents.alert_severity NOT NULL DEFAULT 'warning'"),
        ("title", "text NOT NULL"), ("message", "text"), ("labels", "jsonb NOT NULL DEFAULT '{}'"),
        ("acknowledged_by", "bigint"), ("created_at", _TS), ("resolved_at", "timestamptz")], _rows_alerts,
        unique=["ticket_no"], indexes=[("unresolved", "(severity, created_at) WHERE resolved_at IS NULL")],
        fks=[("agent_id", "mcp_documents.agents", "id"), ("acknowledged_by", "mcp_documents.users", "id")]),
    _Table(D, "evaluations", "evaluations", 10000, 10, [
        _ID, ("prompt_version_id", "bigint NOT NULL"), ("dataset_id", "bigint NOT NULL"),
        ("agent_id", "bigint NOT NULL"), ("score", "numeric(5,4) NOT NULL"), ("metrics", "jsonb NOT NULL"),
        ("notes", "text"), ("created_at", _TS)], _rows_evaluations,
        fks=[("prompt_version_id", "mcp_documents.prompt_versions", "id"),
             ("dataset_id", "mcp_documents.datasets", "id"), ("agent_id", "mcp_documents.agents", "id")]),
    _Table(D, "feedback", "feedback", 15000, 10, [
        _ID, ("api_request_id", "bigint NOT NULL"), ("user_id", "bigint NOT NULL"), ("rating", "smallint NOT NULL"),
        ("comment", "text"), ("created_at", _TS)], _rows_feedback, indexes=[("api_request_id", "(api_request_id)")],
        fks=[("api_request_id", "mcp_documents.api_requests", "id"), ("user_id", "mcp_documents.users", "id")],
        checks=["rating BETWEEN 1 AND 5"]),
    _Table(D, "audit_log", "audit_log", 300000, 200, [
        _ID, ("occurred_at", _TS), ("actor_user_id", "bigint"), ("actor_agent_id", "bigint"),
        ("action", "text NOT NULL"), ("object_type", "text NOT NULL"), ("object_id", "text NOT NULL"),
        ("ip", "inet"), ("details", "jsonb")], _rows_audit_log, indexes=[("occurred_at", "(occurred_at)")],
        fks=[("actor_user_id", "mcp_documents.users", "id"), ("actor_agent_id", "mcp_documents.agents", "id")]),
    _Table(D, "webhooks", "webhooks", 500, 3, [
        _ID, ("project_id", "bigint NOT NULL"), ("url", "text NOT NULL"), ("secret_hint", "text"),
        ("events", "text[] NOT NULL DEFAULT '{}'"), ("is_active", "boolean NOT NULL DEFAULT true"),
        ("created_at", _TS)], _rows_webhooks, fks=[("project_id", "mcp_documents.projects", "id")]),
    _Table(D, "webhook_deliveries", "webhook_deliveries", 40000, 20, [
        _ID, ("webhook_id", "bigint NOT NULL"), ("event", "text NOT NULL"), ("payload", "jsonb NOT NULL"),
        ("response_status", "smallint"), ("attempt", "smallint NOT NULL DEFAULT 1"), ("delivered_at", "timestamptz"),
        ("created_at", _TS)], _rows_webhook_deliveries, indexes=[("webhook_id_created_at", "(webhook_id, created_at)")],
        fks=[("webhook_id", "mcp_documents.webhooks", "id")]),
    _Table(D, "schedules", "schedules", 1500, 3, [
        _ID, ("workflow_id", "bigint NOT NULL"), ("cron", "text NOT NULL"), ("timezone", "text NOT NULL DEFAULT 'UTC'"),
        ("next_run_at", "timestamptz"), ("last_run_at", "timestamptz"), ("is_enabled", "boolean NOT NULL DEFAULT true"),
        ("created_at", _TS)], _rows_schedules, fks=[("workflow_id", "mcp_documents.workflows", "id")]),
    _Table(D, "notifications", "notifications", 25000, 20, [
        _ID, ("user_id", "bigint NOT NULL"), ("kind", "text NOT NULL"), ("title", "text NOT NULL"), ("body", "text"),
        ("is_read", "boolean NOT NULL DEFAULT false"), ("created_at", _TS)], _rows_notifications,
        indexes=[("user_id_unread", "(user_id) WHERE NOT is_read")], fks=[("user_id", "mcp_documents.users", "id")]),
    # mcp_contexts
    _Table(C, "active_sessions", "active_sessions", 5000, 10, [
        ("session_id", "uuid NOT NULL"), ("agent_id", "bigint NOT NULL"), ("user_id", "bigint"),
        ("client_name", "text NOT NULL"), ("status", "text NOT NULL DEFAULT 'active'"),
        ("started_at", _TS), ("last_seen_at", _TS), ("state", "jsonb NOT NULL DEFAULT '{}'")],
        _rows_active_sessions, pk="session_id", identity=False, indexes=[("agent_id", "(agent_id)")],
        fks=[("agent_id", "mcp_documents.agents", "id"), ("user_id", "mcp_documents.users", "id")]),
    _Table(C, "context_snapshots", "context_snapshots", 20000, 20, [
        _ID, ("session_id", "uuid NOT NULL"), ("version", "integer NOT NULL"), ("content", "jsonb NOT NULL"),
        ("byte_size", "integer NOT NULL"), ("created_at", _TS)], _rows_context_snapshots,
        unique=["session_id, version"], fks=[("session_id", "mcp_contexts.active_sessions", "session_id")]),
    _Table(C, "context_links", "context_links", 15000, 10, [
        _ID, ("from_snapshot_id", "bigint NOT NULL"), ("to_snapshot_id", "bigint NOT NULL"),
        ("relation", "text NOT NULL"), ("weight", "real NOT NULL DEFAULT 1"), ("created_at", _TS)],
        _rows_context_links, indexes=[("from_snapshot_id", "(from_snapshot_id)")],
        fks=[("from_snapshot_id", "mcp_contexts.context_snapshots", "id"),
             ("to_snapshot_id", "mcp_contexts.context_snapshots", "id")]),
    _Table(C, "context_locks", "context_locks", 2000, 5, [
        _ID, ("session_id", "uuid NOT NULL"), ("resource", "text NOT NULL"), ("lock_mode", "text NOT NULL"),
        ("acquired_at", _TS), ("expires_at", "timestamptz NOT NULL")], _rows_context_locks, unique=["resource"],
        fks=[("session_id", "mcp_contexts.active_sessions", "session_id")]),
    _Table(C, "checkpoints", "ctx.checkpoints", 10000, 10, [
        _ID, ("session_id", "uuid NOT NULL"), ("snapshot_id", "bigint"), ("label", "text"),
        ("data", "jsonb NOT NULL"), ("created_at", _TS)], _rows_ctx_checkpoints,
        indexes=[("session_id", "(session_id)")],
        fks=[("session_id", "mcp_contexts.active_sessions", "session_id"),
             ("snapshot_id", "mcp_contexts.context_snapshots", "id")]),
    _Table(C, "context_conflicts", "context_conflicts", 3000, 5, [
        _ID, ("checkpoint_id", "bigint NOT NULL"), ("session_id", "uuid NOT NULL"), ("resource", "text NOT NULL"),
        ("resolution", "text"), ("details", "jsonb"), ("detected_at", _TS), ("resolved_at", "timestamptz")],
        _rows_context_conflicts,
        fks=[("checkpoint_id", "mcp_contexts.checkpoints", "id"),
             ("session_id", "mcp_contexts.active_sessions", "session_id")]),
    _Table(C, "session_events", "session_events", 210000, 100, [
        _ID, ("session_id", "uuid NOT NULL"), ("seq", "integer NOT NULL"), ("event_type", "text NOT NULL"),
        ("payload", "jsonb"), ("created_at", _TS)], _rows_session_events,
        indexes=[("session_id_seq", "(session_id, seq)")],
        fks=[("session_id", "mcp_contexts.active_sessions", "session_id")]),
    # l02_runtime
    _Table(R, "agent_state", "agent_state", 2000, 5, [
        ("agent_id", "bigint NOT NULL"), ("status", "text NOT NULL DEFAULT 'idle'"), ("state", "jsonb NOT NULL"),
        ("heartbeat_at", "timestamptz"), ("version", "integer NOT NULL DEFAULT 1"), ("updated_at", _TS)],
        _rows_agent_state, pk="agent_id", identity=False,
        fks=[("agent_id", "mcp_documents.agents", "id")]),
    _Table(R, "checkpoints", "rt.checkpoints", 15000, 10, [
        _ID, ("agent_id", "bigint NOT NULL"), ("step", "integer NOT NULL"), ("snapshot", "jsonb NOT NULL"),
        ("mcp_checkpoint_id", "bigint"), ("created_at", _TS)], _rows_rt_checkpoints,
        indexes=[("agent_id_step", "(agent_id, step)")],
        fks=[("agent_id", "l02_runtime.agent_state", "agent_id"),
             ("mcp_checkpoint_id", "mcp_contexts.checkpoints", "id")]),
]

TABLES = [t.qname for t in _TABLES]
_BY_NAME = dict((t.qname, t) for t in _TABLES)
# Each (row generator, _Table) pair must agree on the column count; checked by the unit tests.


def row_counts(scale=1.0):
    """The number of rows each table gets at ``scale`` ({"schema.table": n});
    depends on the scale only, never on the seed."""
    scale = _check_scale(scale)
    out = {}
    by_key = {}
    for t in _TABLES:
        if t.key == "agent_state":
            n = by_key["agents"]  # one state row per agent
        else:
            n = max(t.minimum, int(round(t.base * scale)))
        by_key[t.key] = n
        out[t.qname] = n
    return out


def _counts_by_key(scale):
    counts = row_counts(scale)
    return dict((t.key, counts[t.qname]) for t in _TABLES)


def _check_scale(scale):
    try:
        scale = float(scale)
    except (TypeError, ValueError):
        raise ConfigError("scale must be a number, got %r" % (scale,))
    if not 0 < scale <= 1000:
        raise ConfigError("scale %r is out of range" % scale, "Use a value above 0 (1.0 is about 1 GB)")
    return scale


def _session_ids(seed, n):
    rng = random.Random("drkit-sample:%s:session-ids" % seed)
    out = []
    for _i in range(n):
        h = rng.randbytes(16).hex()
        out.append("%s-%s-4%s-8%s-%s" % (h[:8], h[8:12], h[13:16], h[17:20], h[20:32]))
    return out


def rows_text(table, seed=42, scale=1.0, start=1, stop=None):
    """COPY text lines of ``table`` ("schema.table") for ids start..stop-1,
    exactly as :func:`generate` loads them (for tests and inspection)."""
    t = _BY_NAME.get(table)
    if t is None:
        raise ConfigError("Unknown sample table %r" % (table,), "Use one of sample_data.TABLES")
    counts = _counts_by_key(scale)
    last = counts[t.key] + 1
    stop = last if stop is None else min(stop, last)
    g = _Gen(seed, t.key, counts, _session_ids(seed, counts["active_sessions"]))
    lines = []
    pos = 1
    while pos < stop:  # same batches as the loader so the PRNG stream matches
        end = min(pos + _BATCH, last)
        batch = t.rows(g, pos, end)
        for i, line in enumerate(batch):
            if start <= pos + i < stop:
                lines.append(line)
        pos = end
    return lines


# --------------------------------------------------------------------------
# connections


def _psycopg():
    try:
        import psycopg  # pylint: disable=import-outside-toplevel
    except ImportError:
        raise ConfigError("The sample dataset needs the Python library psycopg (version 3)",
                          "Install it (pip install 'psycopg[binary]') in the Python that runs drkit")
    return psycopg


def _describe(conninfo, dbname):
    return "%s@%s:%s/%s" % (conninfo.get("user"), conninfo.get("host"), conninfo.get("port"), dbname)


def _connect(conninfo, dbname=None, autocommit=False):
    psycopg = _psycopg()
    if not isinstance(conninfo, dict):
        raise ConfigError("conninfo must be a dict with host, port, user, password and dbname")
    dbname = dbname or conninfo.get("dbname") or "postgres"
    kwargs = {"dbname": dbname, "application_name": APP_NAME, "connect_timeout": 10, "client_encoding": "UTF8"}
    for k in ("host", "port", "user", "password", "sslmode"):
        if conninfo.get(k) not in (None, ""):
            kwargs[k] = conninfo[k]
    try:
        return psycopg.connect(autocommit=autocommit, **kwargs)
    except psycopg.Error as e:
        raise SourceError("Cannot connect to PostgreSQL as %s: %s" % (_describe(conninfo, dbname),
                                                                      str(e).strip() or repr(e)),
                          "Check host, port, user and password, and that the server runs")


def _ident(*parts):
    from psycopg import sql  # pylint: disable=import-outside-toplevel
    return sql.Identifier(*parts)


def _sql(text):
    from psycopg import sql  # pylint: disable=import-outside-toplevel
    return sql.SQL(text)


def _check_database_name(database):
    if not database or not isinstance(database, str) or len(database) > 63 or "\x00" in database:
        raise ConfigError("database must be a non-empty name of at most 63 characters, got %r" % (database,))
    if database in ("postgres", "template0", "template1"):
        raise ConfigError("Refusing to load the sample dataset into %r" % database, "Name a database of its own")


# --------------------------------------------------------------------------
# generate

_BATCH = 2000          # rows per generator call
# Rough bytes per row, to start the heaviest tables first.
_WIDTH = {"documents": 3800, "document_chunks": 1100, "context_snapshots": 1100, "agents": 1100,
          "agent_state": 1000, "prompt_versions": 950, "api_requests": 860}
_WRITE_BYTES = 1 << 20  # bytes per COPY write


def _ddl_statements():
    """Schemas, types and sequences (tables are created by their loader)."""
    stmts = ["CREATE SCHEMA %s" % s for s in SCHEMAS]
    stmts.append("CREATE TYPE mcp_documents.alert_severity AS ENUM ('info', 'warning', 'error', 'critical')")
    stmts.append("CREATE SEQUENCE mcp_documents.alert_ticket_seq START 100001")
    stmts.append("COMMENT ON SCHEMA mcp_documents IS 'drkit sample dataset: documents, agents, API traffic'")
    stmts.append("COMMENT ON SCHEMA mcp_contexts IS 'drkit sample dataset: MCP sessions and contexts'")
    stmts.append("COMMENT ON SCHEMA l02_runtime IS 'drkit sample dataset: agent runtime state'")
    return stmts


def _create_table_sql(t):
    cols = ["%s %s" % (c, typ) for c, typ in t.columns]
    cols.extend("CHECK (%s)" % c for c in t.checks)
    return "CREATE TABLE %s (\n    %s\n)" % (t.qname, ",\n    ".join(cols))


def _post_load_statements(t):
    """Primary key, unique constraints, secondary indexes and ANALYZE of one
    loaded table (built after the load: much faster than maintaining them)."""
    out = ["ALTER TABLE %s ADD CONSTRAINT %s_pkey PRIMARY KEY (%s)" % (t.qname, t.name, t.pk)]
    for cols in t.unique:
        out.append("ALTER TABLE %s ADD CONSTRAINT %s_%s_key UNIQUE (%s)"
                   % (t.qname, t.name, cols.replace(", ", "_"), cols))
    out.extend("CREATE INDEX %s_%s_idx ON %s %s" % (t.name, suffix, t.qname, how) for suffix, how in t.indexes)
    out.append("ANALYZE %s" % t.qname)
    return out


def _fk_statements(t):
    """Foreign keys, once every key exists. On one connection: ADD FOREIGN
    KEY locks both tables, and parallel ones deadlock."""
    return ["ALTER TABLE %s ADD CONSTRAINT %s_%s_fkey FOREIGN KEY (%s) REFERENCES %s (%s)"
            % (t.qname, t.name, col, col, ref, refcol) for col, ref, refcol in t.fks]


def _session_setup(conn):
    with conn.cursor() as cur:
        cur.execute("SET synchronous_commit = off")
        cur.execute("SET maintenance_work_mem = '256MB'")
        cur.execute("SET statement_timeout = 0")
    conn.commit()


def _load_table(conn, t, counts, seed, sessions):
    """CREATE TABLE + COPY FREEZE in one transaction (so the rows are written
    frozen and all-visible, sparing a later hint-bit/vacuum pass); returns
    the number of rows."""
    n = counts[t.key]
    g = _Gen(seed, t.key, counts, sessions)
    cols = ", ".join(c for c, _typ in t.columns)
    with conn.cursor() as cur:
        cur.execute(_create_table_sql(t))
        with cur.copy("COPY %s (%s) FROM STDIN WITH (FREEZE)" % (t.qname, cols)) as cp:
            pending = []
            size = 0
            pos = 1
            while pos <= n:
                end = min(pos + _BATCH, n + 1)
                chunk = "\n".join(t.rows(g, pos, end))
                pending.append(chunk)
                size += len(chunk)
                pos = end
                if size >= _WRITE_BYTES or pos > n:
                    cp.write(("\n".join(pending) + "\n").encode("utf-8"))
                    pending = []
                    size = 0
    conn.commit()
    return n


class _DdlWorker(threading.Thread):
    """Second connection that builds keys and indexes (and ANALYZEs) each
    table as soon as it is loaded, while the main thread generates the next
    one: the server works while Python generates."""

    def __init__(self, conninfo, database):
        super(_DdlWorker, self).__init__(name="drkit-sample-ddl")
        self.daemon = True
        self.conninfo = conninfo
        self.database = database
        self.jobs = queue.Queue()
        self.error = None
        self.busy = 0.0

    def run(self):
        conn = None
        label = "connecting"
        try:
            conn = _connect(self.conninfo, self.database)
            _session_setup(conn)
            while True:
                job = self.jobs.get()
                if job is None:
                    return
                label, stmts = job
                t0 = time.time()
                with conn.cursor() as cur:
                    for stmt in stmts:
                        cur.execute(stmt)
                conn.commit()
                self.busy += time.time() - t0
        except Exception as e:  # noqa: BLE001 - reported by the main thread
            self.error = (label, e)
        finally:
            if conn is not None:
                conn.close()

    def check(self, conninfo, database):
        if self.error:
            label, e = self.error
            if isinstance(e, (ConfigError, SourceError)):
                raise e
            raise SourceError("Building %s in %s failed: %s" % (label, _describe(conninfo, database),
                                                                str(e).strip() or repr(e)))


def _prepare_database(conninfo, database, create_database, replace, progress):
    """Create (or recreate) the database, or check/clear our schemas in an
    existing one. Returns True when the database was created."""
    psycopg = _psycopg()
    created = False
    if create_database:
        admin_db = conninfo.get("dbname") or "postgres"
        if admin_db == database:  # cannot drop the database we are connected to
            admin_db = "postgres"
        admin = _connect(conninfo, admin_db, autocommit=True)
        try:
            with admin.cursor() as cur:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,))
                exists = cur.fetchone() is not None
                if exists and replace:
                    if progress:
                        progress("dropping database %s" % database)
                    cur.execute(_sql("DROP DATABASE {} WITH (FORCE)").format(_ident(database)))
                    exists = False
                if not exists:
                    cur.execute(_sql("CREATE DATABASE {}").format(_ident(database)))
                    created = True
        except psycopg.Error as e:
            raise SourceError("Cannot create database %r on %s: %s" % (database, _describe(conninfo, admin_db),
                                                                       str(e).strip()),
                              "The login needs CREATEDB (or superuser)")
        finally:
            admin.close()
    if created:
        return True
    conn = _connect(conninfo, database, autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT nspname FROM pg_namespace WHERE nspname = ANY(%s)", (SCHEMAS,))
            present = sorted(r[0] for r in cur.fetchall())
            if present and not replace:
                raise SafetyError("Database %r already has the sample schemas %s" % (database, ", ".join(present)),
                                  "Pass replace=True to drop and recreate them")
            for s in present:
                cur.execute(_sql("DROP SCHEMA {} CASCADE").format(_ident(s)))
    finally:
        conn.close()
    return False


def generate(conninfo, scale=1.0, seed=42, progress=None, create_database=True, database=DEFAULT_DATABASE,
             replace=False):
    """Create and load the sample dataset.

    conninfo: dict(host, port, user, password, dbname) of an admin
    connection (dbname is where CREATE DATABASE is issued). The database
    ``database`` is created if missing (``create_database``) or, with
    ``replace=True``, dropped and recreated; in an existing database the
    three schemas must not exist yet (or ``replace=True`` drops them).
    Row counts depend on ``scale`` only (see :func:`row_counts`), content on
    ``seed`` and ``scale``. scale 1.0 is about 1 GB, 0.01 about 11 MB of
    tables (pg_database_size adds the ~7.5 MB of an empty database).
    ``progress``: optional callable(str).

    Returns {"database", "tables": {"schema.table": rows}, "size_bytes",
    "seconds", "scale", "seed"}.
    """
    scale = _check_scale(scale)
    _check_database_name(database)
    psycopg = _psycopg()
    say = progress or (lambda msg: None)
    t_start = time.time()
    counts = _counts_by_key(scale)
    sessions = _session_ids(seed, counts["active_sessions"])
    _slot_table()
    _day_strings()

    _prepare_database(conninfo, database, create_database, replace, say)
    say("loading %d tables into %s: %s (scale %s, seed %s)" % (len(_TABLES), database, ", ".join(SCHEMAS),
                                                               scale, seed))
    conn = _connect(conninfo, database)
    ddl = _DdlWorker(conninfo, database)
    step = "the schemas"
    try:
        _session_setup(conn)
        with conn.cursor() as cur:
            for stmt in _ddl_statements():
                cur.execute(stmt)
        conn.commit()
        ddl.start()
        # Parents before children does not matter here (foreign keys come
        # last), so the biggest tables go first and the DDL worker finishes
        # soon after the last (small) table is loaded.
        for t in sorted(_TABLES, key=lambda t: -counts[t.key] * _WIDTH.get(t.key, 300)):
            ddl.check(conninfo, database)
            step = t.qname
            t0 = time.time()
            rows = _load_table(conn, t, counts, seed, sessions)
            say("loaded %s: %d rows (%.1fs)" % (t.qname, rows, time.time() - t0))
            ddl.jobs.put(("the keys and indexes of %s" % t.qname, _post_load_statements(t)))
        step = "keys and indexes"
        say("waiting for keys and indexes")
        ddl.jobs.put(None)
        ddl.join()
        ddl.check(conninfo, database)
        step = "foreign keys"
        say("adding foreign keys")
        with conn.cursor() as cur:
            for t in _TABLES:
                for stmt in _fk_statements(t):
                    cur.execute(stmt)
            for t in _TABLES:
                if t.identity:
                    cur.execute("SELECT setval(pg_get_serial_sequence(%s, 'id'), %s)", (t.qname, counts[t.key]))
            cur.execute("SELECT setval('mcp_documents.alert_ticket_seq', %s)", (100000 + counts["alerts"],))
        conn.commit()
        with conn.cursor() as cur:
            cur.execute("SELECT pg_database_size(current_database())")
            size = cur.fetchone()[0]
        conn.commit()
    except psycopg.Error as e:
        raise SourceError("Loading the sample dataset into %s failed at %s: %s"
                          % (_describe(conninfo, database), step, str(e).strip() or repr(e)))
    finally:
        if ddl.is_alive():
            ddl.jobs.put(None)
        conn.close()
    seconds = time.time() - t_start
    say("sample dataset %s: %d tables, %d rows, %.1f MB in %.1fs"
        % (database, len(_TABLES), sum(counts.values()), size / 1e6, seconds))
    return {"database": database, "tables": dict((t.qname, counts[t.key]) for t in _TABLES),
            "size_bytes": size, "seconds": round(seconds, 3), "scale": scale, "seed": seed}


# --------------------------------------------------------------------------
# row counts


def table_row_counts(conninfo, database):
    """Exact count(*) of every ordinary table outside the system schemas:
    {"schema.table": rows}."""
    psycopg = _psycopg()
    conn = _connect(conninfo, database)
    try:
        with conn.cursor() as cur:
            cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            cur.execute("SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                        "WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
                        "AND n.nspname NOT LIKE 'pg\\_%' ORDER BY 1, 2")
            names = cur.fetchall()
            out = {}
            for schema, table in names:
                cur.execute(_sql("SELECT count(*) FROM {}").format(_ident(schema, table)))
                out["%s.%s" % (schema, table)] = cur.fetchone()[0]
        conn.rollback()
        return out
    except psycopg.Error as e:
        raise SourceError("Counting rows in %s failed: %s" % (_describe(conninfo, database), str(e).strip()))
    finally:
        conn.close()


# --------------------------------------------------------------------------
# concurrent write load


def write_load(conninfo, database, seconds=None, stop_event=None, rate=None, seed=None):
    """Small write load on a loaded sample database, in short committed
    transactions on one connection: new API requests with their audit
    entries, session events and notifications (inserts); agent state
    heartbeats, session last-seen and task status changes (updates); old
    notifications and context locks (deletes).

    Runs until ``seconds`` have passed or ``stop_event`` (a threading.Event)
    is set, whichever comes first; at least one of them is required. ``rate``:
    transactions per second to aim for (None or 0: as fast as the server
    allows). Returns {"transactions", "inserts", "updates", "deletes",
    "seconds", "tables": {"schema.table": {"insert": n, "update": n,
    "delete": n}}}.
    """
    if seconds is None and stop_event is None:
        raise ConfigError("write_load needs seconds or stop_event", "Say how long the load should run")
    if rate is not None and rate < 0:
        raise ConfigError("rate must be positive, got %r" % (rate,))
    psycopg = _psycopg()
    rng = random.Random(seed)
    conn = _connect(conninfo, database)
    stats = {"transactions": 0, "inserts": 0, "updates": 0, "deletes": 0, "errors": 0}
    tables = {}

    pending = []

    def count(table, op, n):
        if n > 0:
            pending.append((table, op, n))

    def committed():
        for table, op, n in pending:
            stats[op + "s"] += n
            per = tables.setdefault(table, {"insert": 0, "update": 0, "delete": 0})
            per[op] += n
        del pending[:]
        stats["transactions"] += 1

    t0 = time.time()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT coalesce(max(id), 0) FROM mcp_documents.agents")
            n_agents = cur.fetchone()[0]
            cur.execute("SELECT coalesce(max(id), 0) FROM mcp_documents.users")
            n_users = cur.fetchone()[0]
            cur.execute("SELECT coalesce(max(id), 0) FROM mcp_documents.tasks")
            n_tasks = cur.fetchone()[0]
            cur.execute("SELECT session_id FROM mcp_contexts.active_sessions ORDER BY session_id LIMIT 2000")
            sessions = [r[0] for r in cur.fetchall()]
            cur.execute("SELECT agent_id FROM l02_runtime.agent_state ORDER BY agent_id LIMIT 5000")
            states = [r[0] for r in cur.fetchall()]
        conn.commit()
        if not (n_agents and n_users and sessions and states):
            raise ConfigError("Database %r does not hold the sample dataset" % database,
                              "Load it first with sample_data.generate()")
        deadline = None if seconds is None else t0 + float(seconds)
        words = _slot_table()

        def phrase(k):
            return " ".join(rng.choice(words) for _w in range(k))

        while True:
            now = time.time()
            if (deadline is not None and now >= deadline) or (stop_event is not None and stop_event.is_set()):
                break
            op = rng.random()
            try:
                with conn.cursor() as cur:
                    if op < 0.35:
                        agent = rng.randint(1, n_agents)
                        cur.execute(
                            "INSERT INTO mcp_documents.api_requests (request_id, agent_id, method, path, status_code, "
                            "latency_ms, tokens_in, tokens_out, request_body, response_summary, client_ip) "
                            "VALUES (gen_random_uuid(), %s, 'POST', %s, 200, %s, %s, %s, %s::jsonb, %s, '10.9.9.9') "
                            "RETURNING id",
                            (agent, "/v1/agents/%d/runs" % agent, rng.randint(20, 3000), rng.randint(20, 3000),
                             rng.randint(0, 2000), '{"load": true, "text": "%s"}' % phrase(12), phrase(20)))
                        req = cur.fetchone()[0]
                        count("mcp_documents.api_requests", "insert", 1)
                        cur.execute("INSERT INTO mcp_documents.audit_log (actor_agent_id, action, object_type, "
                                    "object_id, details) VALUES (%s, 'invoke', 'api_request', %s, %s::jsonb)",
                                    (agent, "api_request:%d" % req, '{"write_load": true}'))
                        count("mcp_documents.audit_log", "insert", 1)
                    elif op < 0.55:
                        sid = rng.choice(sessions)
                        cur.execute("INSERT INTO mcp_contexts.session_events (session_id, seq, event_type, payload) "
                                    "SELECT %s, coalesce(max(seq), 0) + 1, 'heartbeat', %s::jsonb "
                                    "FROM mcp_contexts.session_events WHERE session_id = %s",
                                    (sid, '{"text": "%s"}' % phrase(8), sid))
                        count("mcp_contexts.session_events", "insert", 1)
                        cur.execute("UPDATE mcp_contexts.active_sessions SET last_seen_at = now() "
                                    "WHERE session_id = %s", (sid,))
                        count("mcp_contexts.active_sessions", "update", cur.rowcount)
                    elif op < 0.75:
                        cur.execute("UPDATE l02_runtime.agent_state SET version = version + 1, heartbeat_at = now(), "
                                    "updated_at = now(), state = jsonb_set(state, '{errors}', to_jsonb(%s::int)) "
                                    "WHERE agent_id = %s", (rng.randint(0, 5), rng.choice(states)))
                        count("l02_runtime.agent_state", "update", cur.rowcount)
                    elif op < 0.85:
                        cur.execute("UPDATE mcp_documents.tasks SET status = %s, updated_at = now() WHERE id = %s",
                                    (rng.choice(_TASK_STATUS), rng.randint(1, max(1, n_tasks))))
                        count("mcp_documents.tasks", "update", cur.rowcount)
                    elif op < 0.93:
                        cur.execute("INSERT INTO mcp_documents.notifications (user_id, kind, title, body) "
                                    "VALUES (%s, %s, %s, %s)",
                                    (rng.randint(1, n_users), rng.choice(_NOTIFY), phrase(5), phrase(25)))
                        count("mcp_documents.notifications", "insert", 1)
                    elif op < 0.97:
                        cur.execute("DELETE FROM mcp_documents.notifications WHERE id = (SELECT id FROM "
                                    "mcp_documents.notifications WHERE is_read ORDER BY id LIMIT 1)")
                        count("mcp_documents.notifications", "delete", cur.rowcount)
                    else:
                        cur.execute("DELETE FROM mcp_contexts.context_locks WHERE id = (SELECT id FROM "
                                    "mcp_contexts.context_locks ORDER BY expires_at, id LIMIT 1)")
                        count("mcp_contexts.context_locks", "delete", cur.rowcount)
                conn.commit()
                committed()
            except (psycopg.errors.SerializationFailure, psycopg.errors.DeadlockDetected,
                    psycopg.errors.LockNotAvailable):
                conn.rollback()
                del pending[:]
                stats["errors"] += 1
            if rate:
                pause = t0 + stats["transactions"] / float(rate) - time.time()
                if pause > 0:
                    if stop_event is not None:
                        stop_event.wait(pause)
                    else:
                        time.sleep(pause)
    except psycopg.Error as e:
        raise SourceError("The write load on %s failed: %s" % (_describe(conninfo, database), str(e).strip()))
    finally:
        conn.close()
    stats["seconds"] = round(time.time() - t0, 3)
    stats["tables"] = tables
    return stats
