# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Exception hierarchy of the drkit engine.

Every error carries a message that says what failed and what to do about it.
Modules catch DrkitError (and Terminated) once in main() and turn it into
fail_json; the CLI prints it on stderr and exits with ``exit_code``.

Terminated is not a DrkitError: like KeyboardInterrupt it derives from
BaseException, so no ``except DrkitError`` or ``except Exception`` meant for
a failed step (a metrics file, a best-effort query) can swallow a SIGTERM and
keep a stopped job running.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class _Explained(object):
    """A message, a hint saying what to do, details for the module result."""

    exit_code = 1

    def __init__(self, message, hint=None, details=None):
        self.message = message
        self.hint = hint
        self.details = details or {}
        super(_Explained, self).__init__(self.__str__())

    def __str__(self):
        if self.hint:
            return "%s. %s" % (self.message.rstrip("."), self.hint)
        return self.message


class DrkitError(_Explained, Exception):
    """Base class: anything the engine raises on purpose."""


class ConfigError(DrkitError):
    """Bad input: an option, URL or config file that cannot work."""

    exit_code = 2


class StorageError(DrkitError):
    """The storage backend failed: listing, reading, writing or deleting."""

    exit_code = 3


class NotFoundError(StorageError):
    """An object or backup that was asked for does not exist."""

    exit_code = 4


class ConflictError(StorageError):
    """An object exists already with different content (never overwritten)."""

    exit_code = 5


class ToolError(DrkitError):
    """An external tool (pg_dump, pg_restore, redis-check-rdb...) failed."""

    exit_code = 6


class SourceError(DrkitError):
    """The database server could not be reached or queried."""

    exit_code = 7


class IntegrityError(DrkitError):
    """Stored data does not match what the manifest promised."""

    exit_code = 8


class WaitTimeout(DrkitError):
    """Waited too long for something (a BGSAVE, a WAL segment...)."""

    exit_code = 9


class SafetyError(DrkitError):
    """An action was refused because it could lose data."""

    exit_code = 10


class Terminated(_Explained, BaseException):
    """Stopped by SIGTERM/SIGHUP (core.signals); exit 143 like a shell. An
    interrupt, not an error: see the module docstring."""

    exit_code = 143
