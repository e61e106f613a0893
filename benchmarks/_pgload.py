# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the loss-measuring benchmarks share: directories and secret files
owned by the postgres user, and a client that logs every commit it was
told succeeded (the loss is what it logged and the survivor lacks)."""

import os
import pwd
import threading
import time

PG = pwd.getpwnam("postgres")


def pg_dir(path, mode=0o700):
    os.makedirs(path, mode, exist_ok=True)
    os.chown(path, PG.pw_uid, PG.pw_gid)
    return path


def write_secret(path, text):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chown(path, PG.pw_uid, PG.pw_gid)


class Committer(threading.Thread):
    """Commits numbered rows into ``acks``, one per tick, and logs each
    once COMMIT returned."""

    def __init__(self, port, password, tick):
        super(Committer, self).__init__(daemon=True)
        self.port, self.password, self.tick = port, password, tick
        self.acked = []  # (id, time the commit returned)
        self.stop = threading.Event()

    def run(self):
        import psycopg
        try:
            with psycopg.connect(host="127.0.0.1", port=self.port, user="postgres", password=self.password,
                                 dbname="postgres", autocommit=True, connect_timeout=5) as conn:
                n = 0
                while not self.stop.is_set():
                    n += 1
                    conn.execute("INSERT INTO acks (id) VALUES (%s)", (n,))
                    self.acked.append((n, time.time()))
                    time.sleep(self.tick)
        except psycopg.Error:
            pass  # the server was lost: what was acknowledged is logged
