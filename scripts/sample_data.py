#!/usr/bin/env python3
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Load the drkit sample dataset (shaped like the audited platform: schemas
mcp_documents, mcp_contexts, l02_runtime; 36 tables) into a PostgreSQL server.

    PGPASSWORD=... scripts/sample_data.py --host 127.0.0.1 --port 5433 \\
        --user postgres --dbname agentic_platform --scale 1.0 --replace

--scale 1.0 is about 1 GB; 0.01 about 10 MB. The password is read from
PGPASSWORD only (never from the command line). Prints the result as JSON.
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _engine import engine_module  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    ap.add_argument("--host", default=os.environ.get("PGHOST", "127.0.0.1"))
    ap.add_argument("--port", type=int, default=int(os.environ.get("PGPORT", "5432")))
    ap.add_argument("--user", default=os.environ.get("PGUSER", "postgres"))
    ap.add_argument("--dbname", default="agentic_platform", help="database to create and load")
    ap.add_argument("--admin-dbname", default="postgres", help="database to connect to for CREATE DATABASE")
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--replace", action="store_true", help="drop and recreate the database if it exists")
    ap.add_argument("--quiet", "-q", action="store_true", help="no progress on stderr")
    args = ap.parse_args(argv)

    errors = engine_module("core.errors")
    sample_data = engine_module("demo.sample_data")
    conninfo = {"host": args.host, "port": args.port, "user": args.user,
                "password": os.environ.get("PGPASSWORD") or None, "dbname": args.admin_dbname}
    t0 = time.time()

    def progress(msg):
        if not args.quiet:
            sys.stderr.write("[%6.1fs] %s\n" % (time.time() - t0, msg))
            sys.stderr.flush()

    try:
        result = sample_data.generate(conninfo, scale=args.scale, seed=args.seed, progress=progress,
                                      database=args.dbname, replace=args.replace)
    except errors.DrkitError as e:
        sys.stderr.write("sample_data: %s\n" % e)
        return e.exit_code
    json.dump(result, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
