# drkit.backup developer entry points. `make test` is what CI runs (.ci/run).
SHELL := /bin/bash
VENV ?= .venv
PYTEST ?= $(VENV)/bin/pytest
PYTEST_FLAGS ?= -q -p no:cacheprovider
# two workers, each test file whole on one (tests/conftest.py groups them); the slowest tests listed at the end
TEST_FLAGS ?= -n 2 --dist loadgroup --durations=25

.PHONY: bootstrap test unit integration molecule lint sanity changelog build demo bench-pitr

bootstrap:
	scripts/bootstrap.sh

# Everything, real services included (started by tests/conftest.py on loopback),
# then the quality gates. Any non-zero exit fails the target, pytest's 5 (no
# tests collected) included.
test: bootstrap
	$(PYTEST) $(PYTEST_FLAGS) $(TEST_FLAGS) tests
	scripts/lint.sh
	scripts/sanity.sh

# Fast tests that need no service.
unit:
	$(PYTEST) $(PYTEST_FLAGS) -m "not integration" tests/unit

integration:
	$(PYTEST) $(PYTEST_FLAGS) -m integration tests

# The molecule scenarios (molecule/*/) with their services, as root: the roles
# install for real on this machine. `make test` runs them too (tests/integration).
molecule: bootstrap
	$(PYTEST) $(PYTEST_FLAGS) tests/integration/test_molecule.py

# ruff + ansible-lint (production profile) + antsibull-changelog lint; tools in build/venv-lint.
lint:
	scripts/lint.sh

# ansible-test sanity (validate-modules, pep8, pylint, import, yamllint, ...) offline, on a copy in build/sanity.
sanity:
	scripts/sanity.sh

# Lint changelog fragments (changelogs/fragments/*.yml) and render CHANGELOG.md from
# them (as the coming release while they are unreleased). A release:
# build/venv-lint/bin/antsibull-changelog release --version X.Y.Z
changelog:
	scripts/changelog.sh

# The collection tarball, build/dist/drkit-backup-<version>.tar.gz, with CHANGELOG.md
# rendered first. galaxy.yml's build_ignore decides what it holds (collection content,
# LICENSE, CHANGELOG.md); tests/integration/test_collection_build.py checks it.
# ansible-galaxy of the lint venv (same ansible-core pin), which `changelog` sets up.
build: changelog
	"$${DRKIT_LINT_VENV:-build/venv-lint}/bin/ansible-galaxy" collection build --force --output-path build/dist

demo:
	scripts/demo.sh

# drkit physical backup/PITR against pgBackRest (numbers in docs/pitr.md). pgbackrest is
# a benchmark-only Debian package: installed here, not by bootstrap. Needs root.
bench-pitr: bootstrap
	@dpkg-query -W -f='$${Status}' pgbackrest 2>/dev/null | grep -q 'install ok installed' || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends pgbackrest; }
	$(VENV)/bin/python benchmarks/physical_vs_pgbackrest.py $(BENCH_ARGS)
