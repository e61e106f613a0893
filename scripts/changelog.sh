#!/usr/bin/env bash
# Render CHANGELOG.md with antsibull-changelog (changelogs/config.yaml), after
# linting the fragments (scripts/lint.sh changelog, which also builds the tool
# venv, build/venv-lint).
#
# `antsibull-changelog generate` renders released versions only. While there
# are fragments in changelogs/fragments/ (unreleased changes; before the first
# release, all of them), this script renders them as the coming release, the
# version in galaxy.yml: in a throwaway copy of the checkout it runs
# `antsibull-changelog release --version <that version>` with a release summary
# saying it is not released yet, and keeps only the CHANGELOG.md. The
# checkout's fragments and changelogs/changelog.yaml stay as they are. With no
# fragments left it runs `antsibull-changelog generate` in place.
#
# A real release is `build/venv-lint/bin/antsibull-changelog release --version X.Y.Z`
# in the checkout: it moves the fragments into changelogs/changelog.yaml,
# deletes them and writes CHANGELOG.md (then `make build`).
#
# Usage: scripts/changelog.sh           write CHANGELOG.md
#        scripts/changelog.sh --check   exit 1 if CHANGELOG.md is not what it renders
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LINT_VENV="${DRKIT_LINT_VENV:-$ROOT/build/venv-lint}"
cd "$ROOT"

check=0
case "${1:-}" in
    "") ;;
    --check) check=1 ;;
    *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

log() { printf 'changelog: %s\n' "$*" >&2; }

"$ROOT/scripts/lint.sh" changelog
ACL="$LINT_VENV/bin/antsibull-changelog"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/drkit-changelog.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
OUT="$WORK/CHANGELOG.md"

shopt -s nullglob
fragments=(changelogs/fragments/*.yml changelogs/fragments/*.yaml)
shopt -u nullglob

if [ "${#fragments[@]}" -eq 0 ]; then
    log "no unreleased fragments: antsibull-changelog generate"
    "$ACL" generate --output "$OUT" --output-format md
else
    version="$("$LINT_VENV/bin/python" - <<'PYEOF'
import sys
import yaml

version = str(yaml.safe_load(open("galaxy.yml"))["version"])
releases = (yaml.safe_load(open("changelogs/changelog.yaml")) or {}).get("releases") or {}
if version in releases:
    sys.exit("changelog: galaxy.yml's version %s is released already (changelogs/changelog.yaml); "
             "raise it for the changes in changelogs/fragments/" % version)
print(version)
PYEOF
)"
    log "${#fragments[@]} unreleased fragments: rendered as $version (not released)"
    # The copy must sit in .../ansible_collections/drkit/backup: antsibull-changelog
    # lists the new modules and plugins with ansible-doc. Same file set as
    # scripts/sanity.sh: what git would commit.
    COPY="$WORK/ansible_collections/drkit/backup"
    mkdir -p "$COPY"
    git ls-files -z --cached --others --exclude-standard |
        while IFS= read -r -d '' f; do if [ -e "$f" ]; then printf '%s\0' "$f"; fi; done |
        rsync -a --from0 --files-from=- ./ "$COPY/"
    if ! grep -qs '^release_summary:' "${fragments[@]}"; then
        cat >"$COPY/changelogs/fragments/zz-drkit-unreleased-summary.yml" <<EOF
release_summary: >-
  Not released yet. These are the changes so far (changelogs/fragments), rendered
  by scripts/changelog.sh; the release itself is made with antsibull-changelog release.
EOF
    fi
    (cd "$COPY" && PATH="$LINT_VENV/bin:$PATH" ANSIBLE_COLLECTIONS_PATH="$WORK" \
        "$ACL" release --version "$version" >&2)
    cp "$COPY/CHANGELOG.md" "$OUT"
fi

if [ "$check" = 1 ]; then
    if cmp -s "$OUT" CHANGELOG.md; then
        log "CHANGELOG.md is current"
        exit 0
    fi
    diff -u CHANGELOG.md "$OUT" >&2 || true
    log "CHANGELOG.md is not current: run scripts/changelog.sh (make changelog)"
    exit 1
fi
cp "$OUT" CHANGELOG.md
log "wrote CHANGELOG.md"
