# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Prometheus textfile-collector metrics, one ``drkit_<job>.prom`` per job.

The file is rewritten atomically (temp file, fsync, rename) so node_exporter
never reads half a file.  Values of earlier runs (e.g. the last success time)
are carried over from the previous file, so a failed run does not erase when
the job last succeeded.  Metric names are documented in docs/metrics.md.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import math
import os
import re

from .errors import ConfigError, StorageError
from .options import Option
from .osutil import atomic_write

# Metrics options (doc fragment drkit.backup.storage.metrics). A job's name
# defaults per command (pg_<database>, redis_<port>, rotate, ...).
METRICS_DIR = Option("metrics_dir", "path", flags=("--metrics-dir",),
                     help="node_exporter textfile collector directory for the job's metrics")
JOB_NAME = Option("job_name", "str", flags=("--job-name",), help="name of the job in metrics and the .prom file")
METRICS = (METRICS_DIR, JOB_NAME)

HELP = {
    "drkit_backup_last_attempt_timestamp_seconds": ("gauge", "Unix time the last backup attempt finished."),
    "drkit_backup_last_success_timestamp_seconds": ("gauge", "Unix time the last successful backup finished."),
    "drkit_backup_last_status": ("gauge", "1 if the last backup attempt succeeded, 0 if it failed."),
    "drkit_backup_duration_seconds": ("gauge", "Duration of the last backup attempt."),
    "drkit_backup_size_bytes": ("gauge", "Stored size of the last successful backup."),
    "drkit_backup_raw_size_bytes": ("gauge", "Uncompressed size of the last successful backup."),
    "drkit_verify_last_attempt_timestamp_seconds": ("gauge", "Unix time the last verification finished."),
    "drkit_verify_last_success_timestamp_seconds": ("gauge", "Unix time the last passing verification finished."),
    "drkit_verify_last_status": ("gauge", "1 if the last verification passed, 0 if it failed."),
    "drkit_verify_duration_seconds": ("gauge", "Duration of the last verification."),
    "drkit_restore_duration_seconds": ("gauge", "Duration of the last test restore (measured RTO)."),
    "drkit_backup_age_at_verify_seconds": ("gauge", "Age of the backup when last verified (achieved RPO)."),
    "drkit_rotate_last_success_timestamp_seconds": ("gauge", "Unix time the last successful rotation finished."),
    "drkit_rotate_last_status": ("gauge", "1 if the last rotation succeeded, 0 if it failed."),
    "drkit_rotate_deleted_backups": ("gauge", "Backups deleted by the last rotation."),
    "drkit_rotate_kept_backups": ("gauge", "Backups kept by the last rotation."),
    "drkit_rotate_not_counted_backups": ("gauge", "Backups the last rotation left alone because they do not count "
                                                  "(artifacts missing, or dated in the future)."),
    "drkit_dr_rehearsal_last_attempt_timestamp_seconds": ("gauge", "Unix time the last DR rehearsal finished."),
    "drkit_dr_rehearsal_last_success_timestamp_seconds": ("gauge", "Unix time the last passing DR rehearsal finished."),
    "drkit_dr_rehearsal_last_status": ("gauge", "1 if the last DR rehearsal passed, 0 if it failed."),
    "drkit_dr_rehearsal_rto_seconds": ("gauge", "Measured RTO of the last DR rehearsal."),
    "drkit_dr_rehearsal_rpo_seconds": ("gauge", "Achieved RPO (backup age at restore) of the last DR rehearsal."),
    "drkit_dr_rehearsal_wal_rpo_seconds": ("gauge", "Age of the newest archived WAL file at the last DR rehearsal: "
                                           "the RPO of a point-in-time recovery then."),
    "drkit_wal_push_last_success_timestamp_seconds": ("gauge", "Unix time a WAL file was last archived."),
    "drkit_wal_push_failures_total": ("counter", "WAL archive attempts that failed."),
    "drkit_copy_last_status": ("gauge", "1 if the last repository copy succeeded, 0 if it failed."),
    "drkit_copy_last_attempt_timestamp_seconds": ("gauge", "Unix time the last repository copy finished."),
    "drkit_copy_last_success_timestamp_seconds": ("gauge", "Unix time of the last successful repository copy."),
    "drkit_copy_backups_total": ("counter", "Backups copied into the second repository."),
    "drkit_copy_bytes_total": ("counter", "Bytes copied into the second repository (backups and WAL)."),
    "drkit_copy_newest_backup_timestamp_seconds": ("gauge", "Finish time of the newest backup the second "
                                                   "repository holds after the last successful copy."),
    "drkit_wal_stream_up": ("gauge", "1 while the streaming archiver's pg_receivewal runs."),
    "drkit_wal_stream_gap": ("gauge", "1 if the streaming archiver found a gap in the archive (take a base backup)."),
    "drkit_wal_stream_segments_archived_total": ("counter", "Segments the streaming archiver stored in full."),
    "drkit_wal_stream_last_segment_timestamp_seconds": ("gauge", "Unix time the last full segment was stored."),
    "drkit_wal_stream_last_archived_timestamp_seconds": ("gauge", "Unix time WAL last reached the archive (a full "
                                                                  "segment or a streamed partial)."),
    "drkit_wal_stream_slot_retained_bytes": ("gauge", "WAL the server keeps for the archiver's replication slot."),
    "drkit_wal_stream_archive_lag_bytes": ("gauge", "WAL the server has flushed that the archive does not hold yet."),
    "drkit_wal_stream_unarchived_seconds": ("gauge", "How long the oldest WAL not yet in the archive has been on the "
                                            "server: the RPO if the server were lost now."),
    "drkit_wal_stream_updated_timestamp_seconds": ("gauge", "Unix time the streaming archiver last wrote its "
                                                   "metrics (every 5 s while it runs)."),
    "drkit_standby_last_check_timestamp_seconds": ("gauge", "Unix time drkit standby-check last ran."),
    "drkit_standby_up": ("gauge", "1 if the standby answered the last check."),
    "drkit_standby_in_recovery": ("gauge", "1 while the server is a standby (0 once promoted)."),
    "drkit_standby_streaming": ("gauge", "1 if the standby's WAL receiver was streaming from the primary."),
    "drkit_standby_primary_reachable": ("gauge", "1 if the check reached the primary too."),
    "drkit_standby_replay_lag_seconds": ("gauge", "Seconds the standby took to replay what the primary had flushed "
                                                  "when the check began (NaN: the primary did not answer)."),
    "drkit_standby_replay_lag_bytes": ("gauge", "WAL the primary has flushed that the standby has not replayed."),
    "drkit_standby_last_replay_timestamp_seconds": ("gauge", "Commit time of the last transaction the standby "
                                                             "replayed."),
    "drkit_standby_last_message_timestamp_seconds": ("gauge", "Unix time the standby's WAL receiver last heard "
                                                              "from the primary."),
    "drkit_standby_slot_retained_bytes": ("gauge", "WAL the primary keeps for the standby's replication slot "
                                                   "(current position minus the slot's restart_lsn)."),
    "drkit_standby_slot_safe_wal_bytes": ("gauge", "WAL the primary may still write before the slot loses what the "
                                                   "standby needs (max_slot_wal_keep_size); NaN when unbounded."),
    "drkit_standby_slot_lost": ("gauge", "1 if the primary removed WAL the standby's slot needed (wal_status "
                                         "lost): the standby can no longer stream."),
}

JOB_RE = re.compile(r"^[A-Za-z0-9_.-]+$")
# Label values are quoted and may hold '}' or escaped quotes.
_LINE_RE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[^"}]|"(?:[^"\\]|\\.)*")*\})?\s+(\S+)$')


def _escape(value):
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels):
    if not labels:
        return ""
    return "{%s}" % ",".join('%s="%s"' % (k, _escape(labels[k])) for k in sorted(labels))


def read_textfile(path):
    """{(name, labelstring): value} from a .prom file we wrote; {} if absent."""
    out = {}
    try:
        with open(path) as fh:
            for line in fh:
                m = _LINE_RE.match(line.strip())
                if m:
                    try:
                        out[(m.group(1), m.group(2) or "")] = float(m.group(3))
                    except ValueError:
                        continue
    except (IOError, OSError):
        return {}
    return out


def metrics_path(directory, job):
    if not JOB_RE.match(job or ""):
        raise ConfigError("Invalid metrics job name %r" % (job,),
                          "Use letters, digits, '.', '_' and '-' only")
    return os.path.join(directory, "drkit_%s.prom" % job)


def update_textfile(directory, job, values, labels=None):
    """Merge ``values`` ({metric: number}) into the job's .prom file.

    Counters ending in _total are added to, not replaced."""
    if not directory:
        return None
    labels = dict(labels or {})
    labels.setdefault("drkit_job", job)
    path = metrics_path(directory, job)
    current = read_textfile(path)
    lbl = _labels(labels)
    for name, value in values.items():
        if value is None:
            continue
        if name not in HELP:
            raise ConfigError("Unknown metric %s" % name)
        if name.endswith("_total"):
            value = current.get((name, lbl), 0.0) + value
        current[(name, lbl)] = float(value)
    lines = []
    for name in sorted(set(key[0] for key in current)):
        kind, text = HELP.get(name, ("gauge", name))
        lines.append("# HELP %s %s" % (name, text))
        lines.append("# TYPE %s %s" % (name, kind))
        for (n, series), v in sorted(current.items()):
            if n == name:
                lines.append("%s%s %s" % (n, series, _fmt(v)))
    try:
        if not os.path.isdir(directory):
            os.makedirs(directory, 0o755)
        # node_exporter runs as its own user: the file must be world-readable.
        # No directory fsync (wal-push writes this file for every segment):
        # after a crash the previous values may show, never half a file.
        atomic_write(path, "\n".join(lines) + "\n", mode=0o644, sync_dir=False)
    except (IOError, OSError) as e:
        raise StorageError("Could not write metrics file %s: %s" % (path, e),
                           "Check metrics_dir exists and is writable by this user")
    return path


def _fmt(v):
    if math.isnan(v):  # a value that is not known now, rather than an old one
        return "NaN"
    if v == int(v) and abs(v) < 1e15:
        return str(int(v))
    return repr(v)
