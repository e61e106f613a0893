# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Progress of long work: byte meters fed by the data path, shown three ways.

The engine's entry points take ``progress``: a callable for one-line
messages. The front doors pass a ``Progress`` (``for_terminal``), which is
that callable and also makes byte meters::

    with meter(progress, "upload", "database.pgdump", total=size, estimate=True) as m:
        ...                                   # m.update(len(chunk)) per chunk

* on a terminal: a tqdm bar per step (bytes done, rate, time left);
* not on a terminal (cron, systemd): a log line every
  DRKIT_PROGRESS_INTERVAL seconds (default 60) per running step;
* quiet (``drkit -q``, the Ansible modules): nothing is shown, the steps are
  only recorded.

Whatever is shown, every meter becomes a step of ``steps()`` (bytes, seconds,
bytes/s), which the CLI's ``--json`` and the module results carry. A plain
callable (tests, older callers) gets a meter that counts and records nothing.
tqdm is imported only for a terminal: modules and cron never need it.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import sys
import threading
import time

from .errors import ConfigError
from .options import Option

INTERVAL = Option(
    "progress_interval", "float", default=60, min=0, env=("DRKIT_PROGRESS_INTERVAL",), module=False,
    help="seconds between progress lines when stderr is not a terminal (default 60)",
    hint="Set DRKIT_PROGRESS_INTERVAL to a number of seconds (0 or more; default 60), or unset it")

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def human_bytes(n):
    """1288490189 -> '1.2 GiB'; exact below 1 KiB ('512 B')."""
    n = float(n or 0)
    for unit in _UNITS:
        if abs(n) < 1024 or unit == _UNITS[-1]:
            return "%d %s" % (n, unit) if unit == "B" else "%.1f %s" % (n, unit)
        n /= 1024.0
    return "%.1f %s" % (n, _UNITS[-1])  # not reached


def human_duration(seconds):
    """Seconds in the largest two units that matter: '45 s', '3 min 5 s', '2 h 10 min', '3 d 4 h'."""
    s = int(round(max(0.0, seconds)))
    if s < 60:
        return "%d s" % s
    if s < 3600:
        return "%d min %d s" % (s // 60, s % 60) if s % 60 else "%d min" % (s // 60)
    if s < 86400:
        return "%d h %d min" % (s // 3600, s % 3600 // 60) if s % 3600 // 60 else "%d h" % (s // 3600)
    return "%d d %d h" % (s // 86400, s % 86400 // 3600) if s % 86400 // 3600 else "%d d" % (s // 86400)


def human_age(seconds):
    """How long ago, in one unit: 'just now', '40 s ago', '3 h ago', '12 d ago'; a
    negative age (a clock ahead of this one) is 'in the future'."""
    if seconds < 0:
        return "in the future"
    s = int(seconds)
    if s < 5:
        return "just now"
    for limit, div, unit in ((60, 1, "s"), (3600, 60, "min"), (86400, 3600, "h")):
        if s < limit:
            return "%d %s ago" % (s // div, unit)
    return "%d d ago" % (s // 86400)


def interval_from_env(environ=None):
    """DRKIT_PROGRESS_INTERVAL in seconds (ConfigError naming it when it is not a number >= 0)."""
    value = (os.environ if environ is None else environ).get("DRKIT_PROGRESS_INTERVAL")
    if value is None or not str(value).strip():
        return INTERVAL.default
    try:
        return INTERVAL.check(value)
    except ConfigError as e:
        raise ConfigError("DRKIT_PROGRESS_INTERVAL must be a number of seconds, 0 or more, got %r" % value,
                          e.hint)


def step_record(step, what, done, seconds):
    """One entry of ``steps``: what moved how many bytes in how long."""
    seconds = round(max(0.0, seconds), 3)  # the rate from the seconds shown: they agree
    return {"step": step, "what": what, "bytes": int(done), "seconds": seconds,
            "bytes_per_second": int(done / seconds) if seconds > 0 else None}


def log_line(step, what, done, total, estimate, seconds):
    """The line a meter logs when stderr is no terminal:
    'upload database.pgdump: 1.2 GiB of ~2.0 GiB (estimate, 60%), 20.5 MiB/s, about 40 s left'."""
    rate = done / seconds if seconds > 0 else 0.0
    text = "%s %s: %s" % (step, what, human_bytes(done)) if what else "%s: %s" % (step, human_bytes(done))
    if total:
        pct = min(100.0, 100.0 * done / total)
        text += " of %s%s (%s%d%%)" % ("~" if estimate else "", human_bytes(total),
                                       "estimate, " if estimate else "", pct)
    text += ", %s/s" % human_bytes(rate)
    if total and rate > 0 and done < total:
        text += ", %s%s left" % ("about " if estimate else "", human_duration((total - done) / rate))
    return text


def end_line(step, what, done, seconds, failed=False):
    """'upload database.pgdump: done, 91.0 MiB in 2 min 5 s (745.5 KiB/s)'."""
    return "%s: %s, %s in %s (%s/s)" % ("%s %s" % (step, what) if what else step, "failed" if failed else "done",
                                        human_bytes(done), human_duration(seconds),
                                        human_bytes(done / seconds if seconds > 0 else 0))


class Meter(object):
    """Counts the bytes of one step; ``update(n)`` per chunk (cheap: an
    addition and, when logging, one clock read). Shows itself through its
    Progress; ``close()`` (or the end of ``with``) records the step."""

    def __init__(self, owner, step, what=None, total=None, estimate=False):
        self.owner = owner
        self.step = step
        self.what = what
        self.total = int(total) if total else None
        self.estimate = bool(estimate and self.total)
        self.done = 0
        self.closed = False
        clock = owner.clock if owner is not None else time.monotonic
        self.started = clock()
        self.seconds = 0.0
        self.next_log = None
        self.tqdm_bar = None
        if owner is not None:
            owner.opened(self)

    def update(self, n):
        self.done += n
        if self.estimate and self.done > self.total:
            # The estimate was short (an estimate of a dump's size from the
            # database's): grow it so the bar never passes 100 %.
            self.total = self.done + self.done // 10
            if self.tqdm_bar is not None:
                self.tqdm_bar.total = self.total
        if self.tqdm_bar is not None:
            self.tqdm_bar.update(n)
        elif self.next_log is not None:
            now = self.owner.clock()
            if now >= self.next_log:
                self.owner.log(self, now)

    def __call__(self, data):
        """A tap: count a chunk (TeeReader-style callers)."""
        self.update(len(data))

    def close(self, failed=False):
        """Record the step (``failed``: it did not finish; a bar keeps its count)."""
        if self.closed:
            return
        self.closed = True
        if self.owner is not None:
            self.owner.closed(self, failed)

    def record(self):
        return step_record(self.step, self.what, self.done, self.seconds)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.close(failed=exc_type is not None)
        return False


class Progress(object):
    """The front doors' ``progress``: ``progress(msg)`` shows a message,
    ``progress.meter(...)`` a byte meter (see the module docstring).

    mode      "bar" (tqdm on ``stream``), "log" (a line every ``interval``
              seconds) or "quiet" (record only)
    clock     monotonic seconds (tests inject one)
    """

    def __init__(self, mode="quiet", stream=None, interval=None, clock=None, wall=None):
        if mode not in ("bar", "log", "quiet"):
            raise ValueError("mode must be bar, log or quiet, not %r" % mode)
        self.mode = mode
        self.stream = stream if stream is not None else sys.stderr
        self.interval = INTERVAL.default if interval is None else float(interval)
        self.clock = clock or time.monotonic
        self.wall = wall or time.strftime  # the HH:MM:SS prefix of a line
        self._steps = []
        self._lock = threading.Lock()
        self._bars = 0
        self._tqdm = _tqdm_class() if mode == "bar" else None

    # -- messages

    def __call__(self, msg):
        if self.mode == "quiet":
            return
        line = "%s drkit: %s" % (self.wall("%H:%M:%S"), msg)
        with self._lock:
            if self._bars:
                self._tqdm.write(line, file=self.stream)  # above the bar, not through it
                return
            self.stream.write(line + "\n")
            self.stream.flush()

    # -- meters

    def meter(self, step, what=None, total=None, estimate=False):
        return Meter(self, step, what, total, estimate)

    def opened(self, m):
        if self.mode == "bar":
            desc = "%s %s" % (m.step, m.what) if m.what else m.step
            if m.estimate:
                desc += " (estimate)"
            with self._lock:
                self._bars += 1
                m.tqdm_bar = self._tqdm(total=m.total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024,
                                        file=self.stream, leave=True, dynamic_ncols=True, mininterval=0.5)
        elif self.mode == "log":
            m.next_log = m.started + self.interval

    def log(self, m, now):
        """Write ``m``'s line and schedule the next one."""
        m.next_log = now + self.interval
        self(log_line(m.step, m.what, m.done, m.total, m.estimate, now - m.started))

    def closed(self, m, failed=False):
        m.seconds = self.clock() - m.started
        if m.tqdm_bar is not None:
            with self._lock:
                if m.estimate and not failed:
                    m.tqdm_bar.total = m.done  # the true size, now that it is known
                    m.tqdm_bar.refresh()
                m.tqdm_bar.close()
                self._bars -= 1
        elif self.mode == "log" and m.seconds >= self.interval:
            # long enough to have logged on the way: say how it ended
            self(end_line(m.step, m.what, m.done, m.seconds, failed))
        if not failed:
            with self._lock:
                self._steps.append(m.record())

    def steps(self):
        """Every closed meter so far, in order: [{step, what, bytes, seconds, bytes_per_second}]."""
        with self._lock:
            return list(self._steps)


class DirectoryGrowth(object):
    """Feeds ``meter`` with the growth of the files in ``path`` while a tool
    writes them where no stream passes through drkit (``pg_dump -Fd``):
    polled every ``every`` seconds by a thread, and once more at the end."""

    def __init__(self, path, meter, every=1.0):
        self.path = path
        self.meter = meter
        self.every = every
        self._seen = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="drkit-progress-dir")
        self._thread.daemon = True

    def size(self):
        total = 0
        try:
            entries = list(os.scandir(self.path))
        except OSError:
            return 0  # not created yet
        for entry in entries:
            try:
                if entry.is_file(follow_symlinks=False):
                    total += entry.stat(follow_symlinks=False).st_size
            except OSError:
                pass  # removed meanwhile
        return total

    def poll(self):
        size = self.size()
        if size > self._seen:
            self.meter.update(size - self._seen)
            self._seen = size

    def _run(self):
        while not self._stop.wait(self.every):
            self.poll()

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, exc_type, exc, tb):
        self._stop.set()
        self._thread.join()
        self.poll()
        return False


def meter(progress, step, what=None, total=None, estimate=False):
    """A Meter from ``progress`` when it makes them (a Progress), else one
    that counts for nobody (a plain callable, None)."""
    make = getattr(progress, "meter", None)
    if make is None:
        return Meter(None, step, what, total, estimate)
    return make(step, what, total, estimate)


def for_terminal(stream=None, quiet=False, environ=None):
    """The CLI's Progress: bars when ``stream`` (stderr) is a terminal, log
    lines every DRKIT_PROGRESS_INTERVAL seconds otherwise, nothing shown
    with ``quiet``."""
    stream = stream if stream is not None else sys.stderr
    interval = interval_from_env(environ)
    if quiet:
        return Progress("quiet", stream, interval)
    isatty = getattr(stream, "isatty", None)
    if isatty is None or not isatty():
        return Progress("log", stream, interval)
    try:
        return Progress("bar", stream, interval)
    except ConfigError as e:
        # an older runtime without tqdm: progress lines rather than a failed backup
        progress = Progress("log", stream, interval)
        progress("note: %s" % e)
        return progress


def _tqdm_class():
    try:
        from tqdm import tqdm  # pylint: disable=import-outside-toplevel
    except ImportError:
        raise ConfigError("Progress bars on a terminal need the Python library tqdm; showing progress lines "
                          "instead", "Install it (pip install tqdm) in the Python that runs drkit")
    return tqdm
