# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Fixtures shared by the engine's unit tests (the services are in
tests/conftest.py).

function fs   FileStorage rooted at tmp_path/root (not created until written to)
"""

import pytest
from ansible_collections.drkit.backup.plugins.module_utils.storage.file import FileStorage


@pytest.fixture
def fs(tmp_path):
    return FileStorage(str(tmp_path / "root"))
