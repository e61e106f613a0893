#!/usr/bin/env bash
# README's first command: set up what is missing, then run the DR rehearsal
# on localhost (sandbox PostgreSQL + sample data -> backup -> restore -> verify
# -> report). Pass --s3 to back up to a local SeaweedFS instead of a directory.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
echo "==> Setting up (Debian packages and .venv, only what is missing)"
scripts/bootstrap.sh
echo "==> DR rehearsal"
exec .venv/bin/python scripts/demo.py "$@"
