# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Fixtures shared by the storage tests."""

import pytest


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    for var in list(__import__("os").environ):
        if var.startswith("AWS_") or var.lower().endswith("_proxy") or var == "DRKIT_S3_CLIENT":
            monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.aws/config
    return monkeypatch
