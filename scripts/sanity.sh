#!/usr/bin/env bash
# ansible-test sanity on the collection, offline-capable and idempotent.
#
# Usage: scripts/sanity.sh [extra ansible-test sanity args, e.g. --test pep8]
#
# Why the detours:
# - ansible-test insists on running from .../ansible_collections/drkit/backup
#   and resolves symlinks (build/collections/... is a symlink for pytest), so we
#   rsync the working tree into build/sanity/ansible_collections/drkit/backup.
# - With --venv it bootstraps pip in each sanity venv by downloading
#   get-pip-<ver>.py from a CI file host this network cannot reach; it reads
#   ~/.ansible/test/cache/get_pip_<ver>.py first, so we seed that with a shim
#   that runs ensurepip and then pip-installs its arguments from PyPI.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${DRKIT_VENV:-$ROOT/.venv}"
PY="${DRKIT_SANITY_PYTHON:-3.11}"
DEST="$ROOT/build/sanity/ansible_collections/drkit/backup"

# One run at a time: concurrent runs would share the copy and the venvs that
# ansible-test builds under ~/.ansible/test/venv.
mkdir -p "$ROOT/build"
exec 9>"$ROOT/build/sanity.lock"
flock 9

if [ ! -x "$VENV/bin/ansible-test" ]; then
    echo "sanity.sh: $VENV/bin/ansible-test not found; run scripts/bootstrap.sh (make bootstrap) first" >&2
    exit 2
fi

# The pip version ansible-test bootstraps (get_venv_packages() in its source);
# read it rather than hard-code it, so an ansible-core upgrade keeps working.
PIP_VERSION="$("$VENV/bin/python" - <<'PYEOF'
import re, ansible_test, os
src = open(os.path.join(os.path.dirname(ansible_test.__file__), '_internal', 'python_requirements.py')).read()
print(re.search(r"pip='([0-9.]+)'", src).group(1))
PYEOF
)"
CACHE="$HOME/.ansible/test/cache/get_pip_${PIP_VERSION//./_}.py"
mkdir -p "$(dirname "$CACHE")"
cat > "$CACHE.tmp" <<'PYEOF'
# Offline stand-in for get-pip.py, written by drkit.backup scripts/sanity.sh.
# ansible-test runs it as: get_pip [pip options] pip==X [--no-setuptools] [--no-wheel]
import subprocess
import sys

args = [a for a in sys.argv[1:] if a not in ('--no-setuptools', '--no-wheel')]
subprocess.check_call([sys.executable, '-m', 'ensurepip', '--upgrade', '--default-pip'], stdout=subprocess.DEVNULL)
subprocess.check_call([sys.executable, '-m', 'pip', 'install', '--quiet'] + args)
if '--no-setuptools' in sys.argv:  # ensurepip always brings setuptools along
    subprocess.check_call([sys.executable, '-m', 'pip', 'uninstall', '--quiet', '-y', 'setuptools'])
PYEOF
if ! cmp -s "$CACHE.tmp" "$CACHE"; then mv "$CACHE.tmp" "$CACHE"; else rm -f "$CACHE.tmp"; fi

# A fresh copy of the working tree: what git would commit (tracked files and
# untracked ones not ignored, i.e. also other work in progress), so the caches
# and venvs that .gitignore names (.venv, .hypothesis, build/...) stay out.
# tests/output survives: it holds ansible-test's delegation venv (reused while
# its marker exists; recreating it costs ~10 s) and the last results.
mkdir -p "$DEST"
find "$DEST" -mindepth 1 -maxdepth 1 ! -name tests -exec rm -rf {} +
[ -d "$DEST/tests" ] && find "$DEST/tests" -mindepth 1 -maxdepth 1 ! -name output -exec rm -rf {} +
if git -C "$ROOT" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    # -z: NUL-separated names; files deleted but not yet staged are skipped.
    git -C "$ROOT" ls-files -z --cached --others --exclude-standard |
        while IFS= read -r -d '' f; do if [ -e "$ROOT/$f" ]; then printf '%s\0' "$f"; fi; done |
        rsync -a --from0 --files-from=- "$ROOT/" "$DEST/"
else
    rsync -a --exclude /.git/ --exclude '/.venv*/' --exclude /build/ --exclude /reports/ \
        --exclude /tests/output/ --exclude .ruff_cache/ --exclude .pytest_cache/ --exclude .hypothesis/ \
        --exclude __pycache__/ --exclude '*.pyc' --exclude '*.tar.gz' "$ROOT/" "$DEST/"
fi
# tests/sanity/ignore-*.txt ships in the collection tarball and names only files
# that ship with it; the exceptions for development-only files (scripts/,
# benchmarks/) are in scripts/sanity-ignore-dev.txt and join the copy's here.
DEV_IGNORES="$ROOT/scripts/sanity-ignore-dev.txt"
for f in "$DEST"/tests/sanity/ignore-*.txt; do
    if [ ! -f "$f" ] || [ ! -f "$DEV_IGNORES" ]; then continue; fi
    if [ -s "$f" ] && [ -n "$(tail -c 1 "$f")" ]; then echo >>"$f"; fi
    grep -Ev '^[[:space:]]*(#|$)' "$DEV_IGNORES" >>"$f" || true
done

cd "$DEST"
export PATH="$VENV/bin:$PATH"
# Without this ansible-test walks up from the copy, finds the checkout's .git
# and asks git for the files under build/ (ignored): "All targets skipped".
# Pinning the content root makes it list the copy's files itself.
export ANSIBLE_TEST_CONTENT_ROOT="$DEST"
# --venv: each sanity test gets its own cached venv under ~/.ansible/test/venv
# (first run installs the pinned tool versions from PyPI, later runs reuse them).
LOG="$DEST/tests/output/sanity.log"
mkdir -p "$(dirname "$LOG")"
run() {
    set +e
    ansible-test sanity --venv --python "$PY" --color no "$@" 2>&1 | tee "$LOG"
    rc=${PIPESTATUS[0]}
    set -e
}
run "$@"
# Seen once in a dozen cold runs: pip, uninstalling itself from a fresh
# sanity venv (ansible-test's last setup step), failed on a lazy import and
# left the venv without its marker. ansible-test rebuilds such a venv on the
# next run, so retry once for that setup failure only (never for test failures).
if [ "$rc" -ne 0 ] && grep -q '^pip is unavailable: ' "$LOG"; then
    echo "sanity.sh: a sanity venv failed to set up (pip); rebuilding it and retrying once" >&2
    run "$@"
fi
if [ "$rc" -ne 0 ]; then
    echo "sanity.sh: failed; details above, results in ${DEST#"$ROOT"/}/tests/output/" >&2
fi
exit "$rc"
