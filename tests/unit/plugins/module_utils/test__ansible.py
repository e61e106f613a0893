# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""_ansible.run_engine with a stand-in for AnsibleModule: a real run first
removes dead drkit processes' temp directories (reported as
leftovers_removed), a check-mode run removes nothing."""

import tempfile

import pytest
from ansible_collections.drkit.backup.plugins.module_utils import _ansible
from support.unit_helpers import dead_tag


class Exited(Exception):
    pass


class FakeModule(object):
    def __init__(self, params, check_mode):
        self.params = params
        self.check_mode = check_mode
        self.result = None

    def exit_json(self, **result):
        self.result = result
        raise Exited()

    def fail_json(self, **result):
        self.result = result
        raise Exited()


@pytest.mark.parametrize("check_mode", [False, True])
def test_run_engine_sweeps_dead_processes_dirs_unless_check_mode(tmp_path, monkeypatch, check_mode):
    work = tmp_path / "work"
    leftover = work / ("drkit-dump-%s-abcd1234" % dead_tag())
    leftover.mkdir(parents=True)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    module = FakeModule({"work_dir": str(work)}, check_mode)
    with pytest.raises(Exited):
        _ansible.run_engine(module, lambda: (False, {"msg": "done"}))
    assert leftover.exists() is check_mode
    assert module.result.get("leftovers_removed") == (None if check_mode else [str(leftover)])
    assert module.result["msg"] == "done"
