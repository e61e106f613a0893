# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""scratch.py: free loopback ports, and scratch directories that other users
(the postgres OS user) can traverse but not list."""

import os
import socket
import stat

from ansible_collections.drkit.backup.plugins.module_utils.core.osutil import check_traversable
from ansible_collections.drkit.backup.plugins.module_utils.core.scratch import (free_port, free_ports, make_scratch_dir,
                                                                                port_is_free)


def test_free_port_is_bindable_on_loopback():
    port = free_port()
    assert 1024 < port < 65536
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
    finally:
        s.close()


def test_free_ports_are_distinct():
    ports = free_ports(20)
    assert len(set(ports)) == 20


def test_port_is_free_sees_a_listener():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    try:
        assert not port_is_free(s.getsockname()[1])
    finally:
        s.close()


def test_make_scratch_dir_is_traversable_not_listable(tmp_path):
    path = make_scratch_dir(parent=str(tmp_path))
    try:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o711
    finally:
        os.rmdir(path)


def test_make_scratch_dir_default_is_reachable_by_other_users():
    path = make_scratch_dir()
    try:
        # nobody (65534) with no groups can enter it: every ancestor has o+x
        check_traversable(os.path.join(path, "data"), 65534, set())
    finally:
        os.rmdir(path)
