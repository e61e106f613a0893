# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Signals as exceptions: SIGTERM/SIGHUP raise Terminated, so every
``finally`` and ``with`` block runs (temp files removed, partial uploads
aborted, scratch databases and servers dropped) when a job is stopped.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import signal
from contextlib import contextmanager

from .errors import Terminated


@contextmanager
def _handled_by(handler):
    """SIGTERM and SIGHUP go to ``handler`` inside the block; the previous
    handlers come back on the way out."""
    old = {}
    try:
        for sig in (signal.SIGTERM, signal.SIGHUP):
            old[sig] = signal.signal(sig, handler)
    except ValueError:  # not in the main thread: leave signals alone
        old = {}
    try:
        yield
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)


@contextmanager
def signals_raise(hint="Scratch objects were cleaned up"):
    """Turn SIGTERM/SIGHUP into Terminated (exit 143) inside the block: the
    CLI around a whole command, the verifiers and restores again around
    their scratch objects (``hint`` says what the unwinding took care of)."""
    def handler(signum, _frame):
        # Raising from the handler unwinds through every finally/with block.
        raise Terminated("Interrupted by signal %d" % signum, hint)

    with _handled_by(handler):
        yield


@contextmanager
def signals_deferred():
    """Hold SIGTERM/SIGHUP until the block ends, then deliver the first one
    to whatever handles it outside. For a short call whose answer must not
    be lost: a container the Docker Engine creates after the client was
    interrupted would be left behind, its id never known."""
    got = []

    def handler(signum, _frame):
        got.append(signum)

    try:
        with _handled_by(handler):
            yield
    finally:
        if got:  # the outer handlers are back: theirs to act on
            os.kill(os.getpid(), got[0])
