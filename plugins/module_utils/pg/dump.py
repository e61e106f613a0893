# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""pg_dump archives: formats and artifact names, table filters, listing an
archive with pg_restore --list, and running pg_restore (settings, sections,
fed from storage).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import fnmatch
import os
import re
import shutil
import time

from ..core.errors import ConfigError, IntegrityError, ToolError
from ..core.janitor import private_dir
from ..core.options import Option
from ..core.process import BackgroundReader, ProcessFeeder, shares_files
from ..core.tar import TarStreamExtractor
from .client import ToolEnv, stderr_errors

FORMATS = ("custom", "directory")
ARTIFACT = {"custom": "database.pgdump.zst", "directory": "database.dir.tar.zst"}
NATIVE_ARTIFACT = "database.pgdump"

# Options of pg_dump and pg_restore runs (pg_backup, pg_restore, pg_verify).
JOBS = Option("jobs", "int", default=1, min=1, flags=("--jobs", "-j"),
              help="parallel pg_dump/pg_restore jobs (default 1)")
NO_OWNER = Option("no_owner", "bool", default=False, flags=("--no-owner",), help="pg_restore --no-owner")
NO_PRIVILEGES = Option("no_privileges", "bool", default=False, flags=("--no-privileges",),
                       help="pg_restore --no-privileges")
SESSION_SETTINGS = Option(
    "restore_settings", "dict", flags=("--restore-setting",), metavar="NAME=VALUE",
    help="server setting for pg_restore's sessions (default maintenance_work_mem=256MB, synchronous_commit=off; "
         "NAME= leaves the server's value); repeatable")


def dump_filter_args(filters):
    args = []
    for s in filters["schemas"]:
        args += ["--schema", s]
    for s in filters["exclude_schemas"]:
        args += ["--exclude-schema", s]
    for t in filters["tables"]:
        args += ["--table", t]
    for t in filters["exclude_tables"]:
        args += ["--exclude-table", t]
    return args


def table_selected(schema, table, filters):
    """Mirror of pg_dump's -n/-N/-t/-T selection for plain names and shell
    wildcards ('*', '?'); unqualified table patterns match any schema."""
    def match(patterns, name):
        return any(fnmatch.fnmatchcase(name, p) for p in patterns)

    def match_table(patterns):
        return any(fnmatch.fnmatchcase("%s.%s" % (schema, table), p) if "." in p
                   else fnmatch.fnmatchcase(table, p) for p in patterns)

    if filters["tables"]:
        if not match_table(filters["tables"]):
            return False
    elif filters["schemas"] and not match(filters["schemas"], schema):
        return False
    if match(filters["exclude_schemas"], schema) and not filters["tables"]:
        return False
    if match_table(filters["exclude_tables"]):
        return False
    return True


def dump_format(manifest):
    """The pg_dump format of a logical backup (manifests from before the
    option was recorded hold custom-format dumps)."""
    return manifest.get("options", {}).get("format", "custom")


def check_in_container(runner, fmt, jobs, restore=False):
    """A tool in a container reads and writes only the exec's stdin and
    stdout (nothing is written inside the container, no docker cp): so the
    custom format, one job. ConfigError otherwise (before anything runs).
    ``runner`` None: a container that is not started yet (a scratch one)."""
    if runner is not None and shares_files(runner):
        return
    if fmt != "custom":
        raise ConfigError("A %s in the directory format cannot run through a container: pg_%s -Fd needs "
                          "the dump as a directory on the tool's own disk" % (
                              "restore of a backup" if restore else "backup", "restore" if restore else "dump"),
                          "Restore it on a host with the PostgreSQL client tools (leave container unset)"
                          if restore else "Use format: custom with container")
    if jobs > 1:
        raise ConfigError("jobs > 1 cannot run through a container: parallel pg_restore needs the dump as "
                          "a file on its own disk, and drkit streams into the container's pg_restore",
                          "Use jobs: 1 with container, or restore from a host with the client tools")


def list_archive(runner, pg_restore, fmt, name, reread):
    """Structure check: ``reread(consumer)`` reads the stored object back
    (checking size and sha256) and hands the decompressed stream to consumer;
    pg_restore --list runs on it. Returns the number of TOC entries."""
    if fmt == "custom":
        handle = runner.spawn([pg_restore, "--list"], stdin=True)
        with handle:
            reader = BackgroundReader(handle.stdout)
            reader.start()
            feeder = ProcessFeeder(handle)
            try:
                reread(feeder)
            finally:
                feeder.close()
            rc = handle.wait(600)
            reader.join()
            if rc != 0:
                raise IntegrityError("pg_restore --list rejected the stored %s: %s" % (
                    name, handle.stderr_text().strip()[-1000:]),
                    "The dump is not a readable archive; nothing was recorded as a backup")
            listing = reader.data.decode("utf-8", "replace")
    else:
        tmp = private_dir("toc")
        try:
            # Only toc.dat is needed for --list: stop unpacking once it is out.
            extractor = TarStreamExtractor(os.path.join(tmp, "dump"), "dump/", only=["toc.dat"])
            extractor.start()
            try:
                reread(extractor.feed)
            finally:
                extractor.close()
            extractor.join()
            if extractor.error or not os.path.exists(os.path.join(tmp, "dump", "toc.dat")):
                raise IntegrityError("The stored %s holds no readable toc.dat (%s)" % (name, extractor.error),
                                     "The dump is not a readable archive; nothing was recorded as a backup")
            rc, out, err = runner.run([pg_restore, "--list", os.path.join(tmp, "dump")], timeout=600)
            if rc != 0:
                raise IntegrityError("pg_restore --list rejected the stored %s: %s" % (name, err.strip()[-1000:]))
            listing = out.decode("utf-8", "replace")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    entries = [line for line in listing.splitlines() if line and not line.startswith(";")]
    if not entries:
        raise IntegrityError("pg_restore --list found no entries in the stored %s" % name)
    return len(entries)


# Settings for pg_restore's own sessions (PGOPTIONS), the tuning PostgreSQL's
# "Populating a Database" advice gives for restores. synchronous_commit off is
# safe here: the database is renamed into place by a synchronous commit that
# comes after every restore commit in the WAL, so it is durable before it is
# visible under the target name.
RESTORE_SETTINGS = {"maintenance_work_mem": "256MB", "synchronous_commit": "off"}


_SETTING_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")
_SETTING_VALUE = re.compile(r"^[A-Za-z0-9_.:+-]+$")


def session_options(settings=None):
    """PGOPTIONS for pg_restore: RESTORE_SETTINGS overridden by ``settings``
    (a value of "" or None drops that setting), after any inherited PGOPTIONS."""
    merged = dict(RESTORE_SETTINGS)
    merged.update(settings or {})
    parts = []
    for name in sorted(merged):
        value = merged[name]
        if value is None or value == "":
            continue
        value = str(value).lower() if isinstance(value, bool) else str(value)
        if not _SETTING_NAME.match(str(name)) or not _SETTING_VALUE.match(value):
            raise ConfigError("restore_settings: %s=%r is not a plain setting name and value" % (name, value),
                              "Use names like maintenance_work_mem and values like 512MB or off "
                              "(letters, digits, _ . : + - only)")
        parts.append("-c %s=%s" % (name, value))
    inherited = os.environ.get("PGOPTIONS", "").strip()
    return " ".join(([inherited] if inherited else []) + parts)


def restore_argv(pg_restore, dbname, jobs, params, source=None, sections=()):
    argv = [pg_restore, "--no-password", "--dbname", dbname, "--exit-on-error"]
    if jobs > 1:
        argv += ["--jobs", str(jobs)]
    for section in sections:
        argv.append("--section=%s" % section)
    if params.get("no_owner"):
        argv.append("--no-owner")
    if params.get("no_privileges"):
        argv.append("--no-privileges")
    if params.get("role"):
        argv += ["--role", params["role"]]
    if source:
        argv.append(source)
    return argv


def _feed(runner, argv, env, produce):
    """Run argv with produce(consumer) writing its stdin; (rc, stderr)."""
    handle = runner.spawn(argv, env=env, stdin=True, stdout=False)
    with handle:
        feeder = ProcessFeeder(handle)
        try:
            produce(feeder)
        finally:
            feeder.close()
        rc = handle.wait()
        return rc, handle.stderr_text()


def run_pg_restore(runner, cp, fetch, pg_restore, dbname, jobs, params, progress):
    """Restore the fetched artifact into dbname. Returns timings."""
    timings = {}
    with ToolEnv(cp, dbname, local=shares_files(runner)) as tenv:
        tenv.env["PGOPTIONS"] = session_options(params.get("restore_settings"))
        if jobs <= 1 and fetch.fmt == "custom":
            # Stream: storage -> sha256 -> zstd -> pg_restore stdin, no local copy.
            progress("streaming %s into pg_restore (database %s)" % (fetch.artifact["name"], dbname))
            t0 = time.time()
            rc, err = _feed(runner, restore_argv(pg_restore, dbname, 1, params), tenv.env,
                            lambda feeder: fetch.check_only(consumer=feeder, step="restore"))
            timings["download_seconds"] = round(fetch.seconds, 3)
            timings["restore_seconds"] = round(time.time() - t0, 3)
            timings["streamed"] = True
        elif fetch.fmt == "custom":
            # Parallel pg_restore needs the whole file; its pre-data section
            # (schemas, tables) needs only the table of contents at the head:
            # restore that from the bytes that have arrived, while the rest
            # is still downloading.
            if not fetch.started:
                progress(fetch.describe_download())
                fetch.start()
            progress("pg_restore --section=pre-data into database %s while the dump downloads" % dbname)
            t0 = time.time()
            rc, err = _feed(runner, restore_argv(pg_restore, dbname, 1, params, sections=("pre-data",)),
                            tenv.env, fetch.follow)
            t1 = time.time()
            if rc != 0 or stderr_errors(err):
                fetch.raise_failure()  # a failed download explains a failed pre-data
            else:
                source = fetch.wait()
                t2 = time.time()
                progress("pg_restore -j %d --section=data --section=post-data into database %s" % (jobs, dbname))
                rc, _out, err = runner.run(restore_argv(pg_restore, dbname, jobs, params, source,
                                                        sections=("data", "post-data")), env=tenv.env)
                t3 = time.time()
                fetch.finish()  # a damaged artifact explains a failed restore: its error first
                # restore_offset_seconds: when pre-data began, counted from the download's start
                timings.update({"pre_data_seconds": round(t1 - t0, 3), "wait_seconds": round(t2 - t1, 3),
                                "restore_seconds": round(t1 - t0 + t3 - t2, 3),
                                "restore_offset_seconds": round(t0 - fetch.start_time, 3)})
            timings["download_seconds"] = round(fetch.seconds, 3)
            timings["streamed"] = False
        else:
            progress(fetch.describe_download())
            source = fetch.to_local()
            timings["download_seconds"] = round(fetch.seconds, 3)
            progress("pg_restore -j %d into database %s" % (jobs, dbname))
            t0 = time.time()
            rc, _out, err = runner.run(restore_argv(pg_restore, dbname, jobs, params, source), env=tenv.env)
            timings["restore_seconds"] = round(time.time() - t0, 3)
            timings["streamed"] = False
    errors = stderr_errors(err)
    if rc != 0 or errors:
        raise ToolError("pg_restore into %s failed (exit code %s): %s" % (
            dbname, rc, "; ".join(errors[:5]) or err.strip()[-1500:]),
            "If roles are missing on this server, set no_owner/no_privileges or create the roles first")
    return timings
