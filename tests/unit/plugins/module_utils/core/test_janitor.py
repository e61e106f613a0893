# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""core/janitor.py with real processes: the owner tag, who counts as dead
(a reaped child, a zombie, a reused pid; never a live process, never another
host, never the unknown), and sweep_dirs (a dead process's directories go,
with a server still running inside; nothing else does)."""

import os
import signal
import subprocess
import sys
import tempfile

import pytest
from ansible_collections.drkit.backup.plugins.module_utils.core import janitor
from support.unit_helpers import dead_pid


def tag_of(pid, host=None):
    """The owner tag a process with this pid has (or, for a dead pid, any)."""
    st = janitor._proc_stat(pid)
    return "%s_%d_%s" % (host or janitor.host_id(), pid, janitor.start_value(st[1]) if st else "abcdef")


@pytest.fixture
def sleeper():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


# --------------------------------------------------------------------------
# the tag and who is dead


def test_owner_tag_names_this_process():
    host, pid, start = janitor.owner_tag().split("_")
    assert (len(host), int(pid), len(start)) == (8, os.getpid(), 6)
    assert janitor.owner_tag() == tag_of(os.getpid())
    assert janitor.is_dead(host, pid, start) is False


def test_a_reaped_process_is_dead_another_hosts_never():
    pid = dead_pid()
    assert janitor.is_dead(janitor.host_id(), str(pid), "abcdef") is True
    assert janitor.is_dead("0badc0de", str(pid), "abcdef") is False


def test_a_live_process_is_alive_a_reused_pid_is_dead(sleeper):
    host, pid, start = tag_of(sleeper.pid).split("_")
    assert janitor.is_dead(host, pid, start) is False
    other = "000000" if start != "000000" else "111111"
    assert janitor.is_dead(host, pid, other) is True  # same pid, another start time: reused


def test_a_zombie_is_dead(sleeper):
    host, pid, start = tag_of(sleeper.pid).split("_")
    os.kill(sleeper.pid, signal.SIGKILL)
    os.waitid(os.P_PID, sleeper.pid, os.WEXITED | os.WNOWAIT)  # exited, not reaped
    assert janitor._proc_stat(sleeper.pid)[0] == "Z"
    assert janitor.is_dead(host, pid, start) is True


def test_what_cannot_be_told_is_alive(monkeypatch, sleeper):
    host, pid, start = tag_of(sleeper.pid).split("_")
    monkeypatch.setattr(janitor, "_proc_stat", lambda pid: None)  # /proc hidden (hidepid)
    assert janitor.is_dead(host, pid, "000000") is False
    assert janitor.is_dead(host, "0", start) is False


def test_a_child_after_fork_has_its_own_tag():
    parent = janitor.owner_tag()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.close(r)
        os.write(w, janitor.owner_tag().encode())
        os._exit(0)
    os.close(w)
    child = os.read(r, 100).decode()
    os.close(r)
    os.waitpid(pid, 0)
    assert child.split("_")[1] == str(pid) and child != parent


# --------------------------------------------------------------------------
# directories


def test_private_dir_is_tagged_0700_and_matches(tmp_path):
    path = janitor.private_dir("dump", str(tmp_path))
    name = os.path.basename(path)
    assert name.startswith("drkit-dump-%s-" % janitor.owner_tag())
    assert oct(os.stat(path).st_mode & 0o777) == "0o700"
    assert janitor.DIR_NAME.match(name).groups() == tuple(janitor.owner_tag().split("_"))
    assert janitor.DIR_NAME.match("." + os.path.basename(tempfile.mkdtemp(
        prefix=janitor.dir_prefix("redis-verify"), dir=str(tmp_path))))


def test_sweep_removes_only_dead_processes_dirs(tmp_path, sleeper):
    dead = tag_of(dead_pid())
    made = {
        "dead": tmp_path / ("drkit-restore-%s-abcd1234" % dead),
        "dead dot": tmp_path / (".drkit-restore-%s-abcd_234" % dead),
        "live": tmp_path / ("drkit-restore-%s-abcd1234" % tag_of(sleeper.pid)),
        "ours": tmp_path / ("drkit-dump-%s-abcd1234" % janitor.owner_tag()),
        "other host": tmp_path / ("drkit-restore-%s-abcd1234" % tag_of(dead_pid(), host="0badc0de")),
        "untagged": tmp_path / "drkit-restore-abcd1234",
        "not ours": tmp_path / ("mine-%s-abcd1234" % dead),
    }
    for path in made.values():
        path.mkdir()
        (path / "database.pgdump").write_bytes(b"x")
    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / "keep").write_bytes(b"x")
    link = tmp_path / ("drkit-toc-%s-abcd1234" % dead)
    link.symlink_to(target)  # a symlink with a dead name: never followed, never removed
    messages = []
    removed = janitor.sweep_dirs([str(tmp_path), str(tmp_path), None, str(tmp_path / "missing")], messages.append)
    assert sorted(removed) == sorted([str(made["dead"]), str(made["dead dot"])])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [made[k].name for k in ("live", "ours", "other host", "untagged", "not ours")] + ["elsewhere", link.name])
    assert (target / "keep").exists()
    assert len(messages) == 2 and all("left by dead drkit process" in m for m in messages)


def test_sweep_stops_a_server_still_running_in_a_dead_processes_dir(tmp_path):
    """A scratch server runs in its own session in the scratch directory and
    outlives drkit's SIGKILL: the janitor stops it before removing the
    directory."""
    path = tmp_path / ("drkit-verify-phys-%s-abcd1234" % tag_of(dead_pid()))
    (path / "pg").mkdir(parents=True)
    server = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], cwd=str(path / "pg"),
                              start_new_session=True)
    try:
        assert janitor._processes_inside(str(path)) == {server.pid: os.getpid()}
        messages = []
        assert janitor.sweep_dirs([str(tmp_path)], messages.append) == [str(path)]
        assert server.wait(timeout=60) == -signal.SIGTERM
        assert not path.exists()
        assert "stopped processes [%d]" % server.pid in messages[0]
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def test_stop_strays_escalates_to_sigkill(tmp_path):
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); " \
           "time.sleep(600)"
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=str(tmp_path), stdout=subprocess.PIPE)
    try:
        assert proc.stdout.readline() == b"ready\n"  # SIGTERM is ignored from here on
        assert janitor.stop_strays(str(tmp_path), wait=0.5) == [proc.pid]
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_sweep_looks_in_the_temp_dir_and_the_work_dir(tmp_path, monkeypatch):
    tmp, work = tmp_path / "tmp", tmp_path / "work"
    dead = tag_of(dead_pid())
    for d in (tmp, work):
        (d / ("drkit-restore-%s-abcd1234" % dead)).mkdir(parents=True)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    assert len(janitor.sweep({"work_dir": str(work)})) == 2
    assert list(tmp.iterdir()) == list(work.iterdir()) == []
    assert janitor.sweep(None) == []
