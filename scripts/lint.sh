#!/usr/bin/env bash
# Lint gates: ruff (Python), ansible-lint with the production profile (roles,
# playbooks, galaxy.yml, meta/), and antsibull-changelog lint (fragments).
#
# ruff comes from .venv (requirements/test.txt). ansible-lint and
# antsibull-changelog live in their own venv, build/venv-lint
# (requirements/lint.txt), so the test venv stays small; it is (re)built only
# when requirements/lint.txt changes.
#
# Usage: scripts/lint.sh            all three
#        scripts/lint.sh ruff|ansible-lint|changelog   one of them
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${DRKIT_VENV:-$ROOT/.venv}"
LINT_VENV="${DRKIT_LINT_VENV:-$ROOT/build/venv-lint}"
PYTHON="${PYTHON:-python3}"
cd "$ROOT"

log() { printf 'lint: %s\n' "$*" >&2; }

ensure_lint_venv() {
    local stamp="$LINT_VENV/.drkit-requirements.sha256" want have=""
    want="$(sha256sum requirements/lint.txt | cut -d' ' -f1)"
    [ -f "$stamp" ] && have="$(cat "$stamp")"
    if [ "$want" = "$have" ] && [ -x "$LINT_VENV/bin/ansible-lint" ] && [ -x "$LINT_VENV/bin/antsibull-changelog" ]; then
        return
    fi
    log "installing requirements/lint.txt into $LINT_VENV"
    [ -x "$LINT_VENV/bin/python" ] || "$PYTHON" -m venv "$LINT_VENV"
    "$LINT_VENV/bin/python" -m pip install --disable-pip-version-check -q -r requirements/lint.txt
    printf '%s\n' "$want" >"$stamp"
}

# The collection must be importable as drkit.backup for ansible-lint's syntax
# check of playbooks that call drkit.backup.* modules (offline: no galaxy
# install). Same relative symlink tests/conftest.py makes.
ensure_collection_link() {
    local link="$ROOT/build/collections/ansible_collections/drkit/backup"
    if [ ! -L "$link" ]; then
        mkdir -p "$(dirname "$link")"
        ln -s ../../../.. "$link"
    fi
}

run_ruff() {
    local dirs=() d
    for d in plugins bin tests scripts benchmarks roles; do
        [ -e "$d" ] && dirs+=("$d")
    done
    log "ruff check ${dirs[*]}"
    "$VENV/bin/ruff" check "${dirs[@]}"
}

run_ansible_lint() {
    ensure_lint_venv
    ensure_collection_link
    log "ansible-lint (profile production, .ansible-lint)"
    PATH="$LINT_VENV/bin:$PATH" ANSIBLE_COLLECTIONS_PATH="$ROOT/build/collections" \
        "$LINT_VENV/bin/ansible-lint" --nocolor
}

run_changelog() {
    ensure_lint_venv
    log "antsibull-changelog lint"
    "$LINT_VENV/bin/antsibull-changelog" lint
    "$LINT_VENV/bin/antsibull-changelog" lint-changelog-yaml changelogs/changelog.yaml
}

what="${1:-all}"
rc=0
case "$what" in
    ruff) run_ruff ;;
    ansible-lint) run_ansible_lint ;;
    changelog) run_changelog ;;
    all)
        # Run every gate and report all failures, not just the first.
        run_ruff || rc=1
        run_ansible_lint || rc=1
        run_changelog || rc=1
        ;;
    *) echo "usage: $0 [all|ruff|ansible-lint|changelog]" >&2; exit 2 ;;
esac
if [ "$rc" -eq 0 ]; then log "all passed"; else log "FAILED"; fi
exit "$rc"
