# drkit.backup developer entry points. `make test` is what CI runs (.ci/run).
SHELL := /bin/bash
VENV ?= .venv
PYTEST ?= $(VENV)/bin/pytest
PYTEST_FLAGS ?= -q -p no:cacheprovider

.PHONY: bootstrap test unit integration lint sanity changelog demo

bootstrap:
	scripts/bootstrap.sh

# Everything, real services included (started by tests/conftest.py on loopback).
# Any non-zero pytest exit fails the target, 5 (no tests collected) included.
test: bootstrap
	$(PYTEST) $(PYTEST_FLAGS) tests

# Fast tests that need no service.
unit:
	$(PYTEST) $(PYTEST_FLAGS) -m "not integration" tests/unit

integration:
	$(PYTEST) $(PYTEST_FLAGS) -m integration tests

# ruff + ansible-lint (production profile) + antsibull-changelog lint; tools in build/venv-lint.
lint:
	scripts/lint.sh

# ansible-test sanity (validate-modules, pep8, pylint, import, yamllint, ...) offline, on a copy in build/sanity.
sanity:
	scripts/sanity.sh

# Lint changelog fragments (changelogs/fragments/*.yml). A release: antsibull-changelog release --version X.Y.Z
changelog:
	scripts/lint.sh changelog

demo:
	scripts/demo.sh
