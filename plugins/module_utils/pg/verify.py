# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Verification of PostgreSQL backups, by level:

* ``checksum``: every artifact is read back from storage; size and sha256
  must match the manifest.
* ``structure``: plus ``pg_restore --list`` on the decompressed stream.
* ``restore``: plus a real restore into a scratch database (unique name,
  dropped afterwards on every path, SIGTERM included) and a comparison of
  every table's row count with the counts recorded from pg_dump's snapshot,
  plus optional SQL checks.

With ``container`` the structure level runs the container's own
``pg_restore --list`` (custom format, one job), as pg_restore does; the
restore level runs in a scratch container of the container's image
(pg/scratch_container.py: its own PostgreSQL, started for the test and
removed), or with ``verify_in: container`` in the production server itself.

Each run writes a verification record next to the manifest (never rewriting
it): ``backups/<id>/verify-<UTC time>-<rand>.json``, see
docs/verification-records.md, and updates the job's metrics.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ..container.client import DOCKER, SCRATCH_VERIFY, docker_settings, inspect_any, open_client
from ..container.runner import open_runner
from ..core import metrics
from ..core.crypto import DECRYPTION, Keyring
from ..core.errors import ConfigError, IntegrityError
from ..core.options import Option, Options, resolve
from ..core.process import LocalRunner
from ..core.signing import VERIFYING, Trust
from ..repo import manifest as mf
from ..repo.verification import LEVEL, Verification, planned
from ..storage.factory import STORAGE, open_storage, storage_options
from .checks import failed_checks, normalise_checks, run_checks
from .client import (
    CONNECTION,
    MAINTENANCE_DB,
    conn_params,
    connect,
    create_database,
    drop_database,
    locate_tool,
    server_facts,
)
from .dump import (
    JOBS,
    NO_OWNER,
    NO_PRIVILEGES,
    SESSION_SETTINGS,
    check_in_container,
    dump_format,
    list_archive,
    run_pg_restore,
)
from .dump_fetch import ArtifactFetch
from .janitor import SCRATCH, sweep_databases, unique_name
from .rowcounts import compare_counts, count_rows, expected_counts
from .scratch_container import PostgresInContainer
from .verify_physical import PHYSICAL_OPTIONS, verify_physical

# drkit.backup.pg_verify / drkit verify
OPTIONS = Options(
    CONNECTION, STORAGE, metrics.METRICS, mf.BACKUP_SELECTOR, DOCKER, SCRATCH_VERIFY,
    Option("source_database", "str", flags=("--source-database",), help="latest backup of this database"),
    LEVEL,
    JOBS,
    Option("checks", "list", elements="raw"),
    # a test restore into a scratch database owns everything as the connecting role
    NO_OWNER.but(default=True, flags=()), NO_PRIVILEGES.but(default=True, flags=()),
    MAINTENANCE_DB,
    Option("work_dir", "path", flags=("--work-dir",), help="where jobs > 1 decompresses the dump"),
    SESSION_SETTINGS,
    PHYSICAL_OPTIONS,
    DECRYPTION,
    VERIFYING,
)


def pg_verify(params, check_mode=False, runner=None, progress=None):
    progress = progress or (lambda msg: None)
    p = resolve(OPTIONS, params)
    level = p["level"]
    checks = normalise_checks(p["checks"])
    trust = Trust.from_params(p)
    storage = open_storage(p["storage_url"], must_exist=True, **storage_options(p))
    entry = mf.resolve(storage, p["backup_id"], before=p["before"], database=p["source_database"], trust=trust)
    manifest = entry.manifest
    kind = manifest["kind"]
    if kind == "pg_physical":
        if p["container"]:
            raise ConfigError("container is for logical backups: a physical backup is verified by a scratch "
                              "server that drkit starts on this host (%s is physical)" % entry.backup_id,
                              "Leave container unset; the host needs the server binaries (pg_bin_dir)")
        return verify_physical(p, entry, check_mode=check_mode, runner=runner or LocalRunner(),
                               progress=progress)
    if kind != "pg_logical":
        raise ConfigError("Backup %s is a %s backup" % (entry.backup_id, kind),
                          "Use drkit.backup.redis_verify for Redis backups")
    if p["verify_in"] == "container" and not p["container"]:
        raise ConfigError("verify_in: container needs container", "Name the container, or leave verify_in unset")
    in_scratch = bool(p["container"]) and level == "restore" and p["verify_in"] == "scratch"
    if in_scratch:
        # only the image is used: the production container may even be stopped
        check_in_container(None, dump_format(manifest), p["jobs"], restore=True)
        docker = _scratch_image(p)
    elif level != "checksum":
        runner = runner or open_runner(p)
        check_in_container(runner, dump_format(manifest), p["jobs"], restore=True)
    if check_mode:
        return planned(entry, level)

    job = p["job_name"] or "pg_%s" % manifest["source"].get("database", "unknown")
    tables, check_results, scratch, verified_in = [], [], None, None
    v = Verification(storage, p, entry, level, job, progress)
    with v:
        fetch = ArtifactFetch(storage, manifest, p["work_dir"], progress, Keyring(p["encryption_identity_file"]))
        v.cleanup(fetch.cleanup)
        v.check_artifacts(skip=[fetch.artifact["name"]])
        if level == "checksum":
            progress("checking size and sha256 of %s" % fetch.artifact["name"])
            fetch.check_only(step="verify")
            v.timings["download_seconds"] = round(fetch.seconds, 3)
        elif level == "structure":
            pg_restore = locate_tool(runner, "pg_restore", manifest["source"].get("server_version_num"),
                                     p["pg_bin_dir"])[0]
            fetch.require_reader(runner, pg_restore)
            progress("checking %s and listing it with pg_restore --list" % fetch.artifact["name"])
            with v.timed("download_seconds"):
                toc = list_archive(runner, pg_restore, fetch.fmt, fetch.artifact["name"],
                                   lambda consumer: fetch.check_only(consumer=consumer, step="verify"))
            expected_toc = manifest.get("data", {}).get("toc_entries")
            if expected_toc is not None and toc != expected_toc:
                raise IntegrityError("pg_restore --list shows %d entries, the manifest recorded %d" % (
                    toc, expected_toc))
        else:
            cp = conn_params(p)
            if in_scratch:
                api, docker_host, image = docker
                progress("starting a scratch PostgreSQL in a container of image %s" % image)
                srv = PostgresInContainer(api, docker_host, image, manifest["source"].get("server_version_num"),
                                          p["pg_bin_dir"], p["timeout"])
                v.cleanup(srv.close)
                with v.timed("scratch_start_seconds"):
                    srv.start()
                cp, runner = srv.cp, srv.runner
                verified_in = "scratch container of image %s (PostgreSQL %s)" % (image, srv.version)
            elif p["container"]:
                verified_in = "container %s" % p["container"]
            conn = connect(cp, p["maintenance_db"], autocommit=True)
            v.cleanup(conn.close)
            facts = server_facts(conn)
            sweep_databases(conn, progress)
            pg_restore = locate_tool(runner, "pg_restore", facts["server_version_num"], p["pg_bin_dir"])[0]
            fetch.require_reader(runner, pg_restore)
            scratch = unique_name("", SCRATCH)
            progress("restoring %s into scratch database %s" % (entry.backup_id, scratch))
            create_database(conn, scratch)
            v.cleanup(_drop_scratch, conn, scratch, progress)
            jobs = p["jobs"]
            opts = {"no_owner": p["no_owner"], "no_privileges": p["no_privileges"],
                    "restore_settings": p["restore_settings"]}
            v.timings.update(run_pg_restore(runner, cp, fetch, pg_restore, scratch, jobs, opts, progress))
            with v.timed("check_seconds"):
                expected, notes = expected_counts(manifest.get("data", {}), cp, scratch)
                for note in notes:
                    v.finding(note, fails=False)
                if expected is not None:
                    tables, problems = compare_counts(expected, count_rows(cp, scratch, expected, jobs))
                    for problem in problems:
                        v.finding(problem)
                else:
                    v.finding("the manifest holds no row counts (row_counts was off): "
                              "only the restore itself was checked", fails=False)
                if checks:
                    check_results = run_checks(cp, scratch, checks)
                    for problem in failed_checks(check_results):
                        v.finding(problem)
    extra = {"verified_in": verified_in} if verified_in else {}
    return v.finish(tables=tables, checks=check_results, scratch_database=scratch, **extra)


def _scratch_image(p):
    """(client, docker host, image) of the scratch server: ``image``, or the
    container's own (it may be stopped)."""
    s = docker_settings(p)
    api = open_client(s)
    image = p["image"] or inspect_any(api, s["container"], s["docker_host"]).get("Image")
    return api, s["docker_host"], image


def _drop_scratch(conn, name, progress):
    progress("dropping scratch database %s" % name)
    drop_database(conn, name)
