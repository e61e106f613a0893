# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Scratch containers are removed on every way out, a signal in the middle
of their creation included."""

import os
import signal
import time

import pytest
from ansible_collections.drkit.backup.plugins.module_utils.container.scratch import LABEL, ScratchContainer
from ansible_collections.drkit.backup.plugins.module_utils.core.errors import Terminated
from ansible_collections.drkit.backup.plugins.module_utils.core.signals import signals_raise


class FakeClient(object):
    def __init__(self, interrupt=False):
        self.interrupt = interrupt
        self.created, self.removed = [], []

    def create_host_config(self, **kwargs):
        return kwargs

    def create_container(self, image, **kwargs):
        self.created.append((image, kwargs))
        if self.interrupt:  # the Engine made it, the answer never arrived
            raise Terminated("Interrupted by signal 15")
        return {"Id": "c0ffee"}

    def remove_container(self, cid, force=False, v=False):
        self.removed.append((cid, force, v))


def test_removed_by_id_with_its_own_volumes():
    client = FakeClient()
    with ScratchContainer(client, "unix:///x", "img", ["86400"], entrypoint=["sleep"]) as box:
        assert box.id == "c0ffee"
    assert client.removed == [("c0ffee", True, True)]
    assert LABEL in client.created[0][1]["labels"]


def test_a_signal_during_create_removes_it_by_name():
    client = FakeClient(interrupt=True)
    box = ScratchContainer(client, "unix:///x", "img", ["86400"], volumes_from=["target"])
    with pytest.raises(Terminated):
        with box:
            pass
    # by name; the shared volumes of the target are not removed with it
    assert client.removed == [(box.name, True, False)]


def test_never_created_nothing_removed():
    client = FakeClient()
    ScratchContainer(client, "unix:///x", "img", ["x"]).remove()
    assert client.removed == []


class SlowEngine(FakeClient):
    """The Engine goes on creating after the client is interrupted: a
    removal by name before the create has finished finds nothing."""

    def __init__(self):
        super(SlowEngine, self).__init__()
        self.exists, self.removed_ok = set(), []

    def create_container(self, image, **kwargs):
        self.created.append((image, kwargs))
        os.kill(os.getpid(), signal.SIGTERM)  # arrives while the Engine is still at work
        time.sleep(0.05)
        self.exists.update(("c0ffee", kwargs["name"]))
        return {"Id": "c0ffee"}

    def remove_container(self, cid, force=False, v=False):
        from docker.errors import NotFound  # pylint: disable=import-outside-toplevel
        if cid not in self.exists:
            raise NotFound("no such container")
        self.removed_ok.append(cid)


def test_a_sigterm_during_create_waits_for_the_id_and_removes_it():
    client = SlowEngine()
    with pytest.raises(Terminated):
        with signals_raise():
            with ScratchContainer(client, "unix:///x", "img", ["86400"]):
                pass
    assert client.removed_ok == ["c0ffee"]
