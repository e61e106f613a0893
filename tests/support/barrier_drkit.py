# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Run ``bin/drkit`` with a barrier in front of the moment it changes the
storage: the racing-writers tests start real drkit processes with it and
release them together, so that all of them are inside the window between
"is the name free?" and "store it" (or "what may I delete?" and "delete it")
on every round, not by luck.

    python barrier_drkit.py BARRIER_DIR commit|delete KEY_REGEX -- wal-push --storage-url ... %p %f

The process loads the engine exactly as bin/drkit does and runs the same
``cli.main``; the only change is in the file:// and s3:// backends:

* ``commit``: the ``commit()`` of a writer whose key matches KEY_REGEX
  (``re.search``) waits first. ``commit()`` is where a write becomes visible
  (rename or link of the temp file, the PUT, the multipart completion).
* ``delete``: a ``delete(keys)`` call with a key matching KEY_REGEX waits
  first (once per process: the first such call).

Waiting means: create ``BARRIER_DIR/arrived-<pid>``, then wait until
``BARRIER_DIR/release`` exists. Nothing is timed: the test waits for the
arrival files, then creates the release file. If no release comes within 10
minutes the process gives up (exit 99), so a broken test cannot hang the
suite.

``race(commands, barrier_dir, key_regex, at="commit", during=None)`` does all
that from a test; ``during()`` runs while every process waits at the barrier
(a rotation while a backup is about to write its manifest, say).
"""

import glob
import importlib.machinery
import importlib.util
import os
import re
import subprocess
import sys
import time
from collections import namedtuple

HERE = os.path.dirname(os.path.abspath(__file__))
DRKIT = os.path.join(os.path.dirname(os.path.dirname(HERE)), "bin", "drkit")
GIVE_UP_SECONDS = 600
POINTS = ("commit", "delete")


def load_drkit():
    loader = importlib.machinery.SourceFileLoader("drkit_bin", DRKIT)
    spec = importlib.util.spec_from_loader("drkit_bin", loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod


def wait_at_barrier(directory):
    with open(os.path.join(directory, "arrived-%d" % os.getpid()), "w"):
        pass
    release = os.path.join(directory, "release")
    deadline = time.monotonic() + GIVE_UP_SECONDS
    while not os.path.exists(release):
        if time.monotonic() > deadline:
            sys.stderr.write("barrier_drkit: no release within %d s\n" % GIVE_UP_SECONDS)
            os._exit(99)
        time.sleep(0.002)


def install(directory, point, pattern):
    rx = re.compile(pattern)
    state = {"waited": False}

    def wrap_writer(cls):
        original = cls.writer

        def writer(self, key, *args, **kwargs):
            w = original(self, key, *args, **kwargs)
            if rx.search(key):
                commit = w.commit

                def commit_after_barrier():
                    wait_at_barrier(directory)
                    return commit()
                w.commit = commit_after_barrier
            return w
        cls.writer = writer

    def wrap_delete(cls):
        original = cls.delete

        def delete(self, keys):
            keys = list(keys)
            if not state["waited"] and any(rx.search(k) for k in keys):
                state["waited"] = True
                wait_at_barrier(directory)
            return original(self, keys)
        cls.delete = delete

    from drkit_engine.storage.file import FileStorage  # pylint: disable=import-error
    from drkit_engine.storage.s3 import S3Storage  # pylint: disable=import-error
    for cls in (FileStorage, S3Storage):
        (wrap_writer if point == "commit" else wrap_delete)(cls)


Outcome = namedtuple("Outcome", ["returncode", "stdout", "stderr"])


def race(commands, barrier_dir, key_regex, at="commit", config=None, during=None, env=None):
    """Start one drkit process per argument list in ``commands``, wait until
    every one of them has reached the barrier (or has exited before getting
    there), run ``during()`` if given, release them together and return
    their Outcomes in the same order. ``config``: a dict given to every
    process as a 0600 --config file (how secrets reach drkit, never argv)."""
    if at not in POINTS:
        raise ValueError("at must be one of %s" % (POINTS,))
    os.makedirs(barrier_dir)
    if config is not None:
        import yaml  # pylint: disable=import-outside-toplevel

        path = os.path.join(barrier_dir, "drkit.yml")
        with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as fh:
            yaml.safe_dump(config, fh)
        commands = [list(args) + ["--config", path] for args in commands]
    procs, logs = [], []
    try:
        for i, args in enumerate(commands):
            out = open(os.path.join(barrier_dir, "stdout-%d" % i), "w+")
            err = open(os.path.join(barrier_dir, "stderr-%d" % i), "w+")
            logs.append((out, err))
            procs.append(subprocess.Popen([sys.executable, os.path.abspath(__file__), barrier_dir, at, key_regex,
                                           "--"] + list(args), stdout=out, stderr=err, env=env))
        deadline = time.monotonic() + GIVE_UP_SECONDS
        while True:
            arrived = len(glob.glob(os.path.join(barrier_dir, "arrived-*")))
            exited = sum(1 for p in procs if p.poll() is not None)
            if arrived + exited >= len(procs):
                break
            if time.monotonic() > deadline:
                raise AssertionError("the racing processes did not reach the barrier")
            time.sleep(0.002)
        if during is not None:
            during()
        with open(os.path.join(barrier_dir, "release"), "w"):
            pass
        outcomes = []
        for p, (out, err) in zip(procs, logs):
            rc = p.wait(timeout=GIVE_UP_SECONDS)
            out.seek(0)
            err.seek(0)
            outcomes.append(Outcome(rc, out.read(), err.read()))
        return outcomes
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for out, err in logs:
            out.close()
            err.close()


def main(argv):
    if len(argv) < 5 or argv[1] not in POINTS or argv[3] != "--":
        sys.stderr.write(__doc__)
        return 2
    directory, point, pattern, args = argv[0], argv[1], argv[2], argv[4:]
    load_drkit().load_engine()
    install(directory, point, pattern)
    from drkit_engine.cli import main as cli_main  # pylint: disable=import-error
    return cli_main(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
