# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""errors.py: messages with their hint, distinct non-zero exit codes."""

from ansible_collections.drkit.backup.plugins.module_utils.core.errors import (
    ConfigError,
    ConflictError,
    DrkitError,
    IntegrityError,
    NotFoundError,
    SafetyError,
    SourceError,
    StorageError,
    Terminated,
    ToolError,
    WaitTimeout,
)


def test_message_and_hint():
    e = StorageError("Could not write x.", "Free some space")
    assert str(e) == "Could not write x. Free some space"
    assert e.args == ("Could not write x. Free some space",)
    assert str(ConfigError("Bad")) == "Bad"
    assert ToolError("x", details={"rc": 1}).details == {"rc": 1}


def test_exit_codes_are_distinct_and_nonzero():
    classes = [DrkitError, ConfigError, StorageError, NotFoundError,
               ConflictError, ToolError, SourceError, IntegrityError,
               WaitTimeout, SafetyError]
    codes = [c.exit_code for c in classes]
    assert len(set(codes)) == len(codes) and 0 not in codes
    assert issubclass(NotFoundError, StorageError)
    assert issubclass(ConflictError, StorageError)
    assert all(issubclass(c, DrkitError) for c in classes)


def test_an_interrupt_is_not_caught_as_an_error():
    """``except DrkitError`` / ``except Exception`` around a best-effort step
    must not swallow a SIGTERM (core.signals raises Terminated)."""
    for handler in (DrkitError, Exception):
        try:
            try:
                raise Terminated("Interrupted by signal 15", "Nothing was recorded")
            except handler:
                raise AssertionError("caught by except %s" % handler.__name__)
        except Terminated as e:
            assert e.exit_code == 143
            assert str(e) == "Interrupted by signal 15. Nothing was recorded"
