# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Where a restore into a container puts the files: read from docker inspect."""

from ansible_collections.drkit.backup.plugins.module_utils.redis.restore_container import (
    command_line_settings,
    data_mount,
)


def test_settings_from_redis_server_arguments_and_a_shell_line():
    info = {"Config": {"Entrypoint": ["docker-entrypoint.sh"],
                       "Cmd": ["redis-server", "--appendonly", "YES", "--dir", "/var/lib/redis"]}}
    assert command_line_settings(info) == {"appendonly": "yes", "dir": "/var/lib/redis"}
    info = {"Config": {"Cmd": ["sh", "-c", 'exec redis-server - --port "$PORT" --dir /data --appendonly no '
                                           '--appendfilename "my.aof"']}}
    assert command_line_settings(info) == {"dir": "/data", "appendonly": "no", "appendfilename": "my.aof"}


def test_a_value_from_the_environment_is_not_guessed():
    info = {"Config": {"Cmd": ["sh", "-c", 'redis-server --dir "$DATA" --port 1']}}
    assert command_line_settings(info) == {}
    assert command_line_settings({"Config": {"Cmd": None, "Entrypoint": None}}) == {}


def test_the_mount_that_holds_the_data_directory():
    info = {"Mounts": [{"Destination": "/data", "Type": "volume"}, {"Destination": "/data/sub", "Type": "bind"}]}
    assert data_mount(info, "/data")["Type"] == "volume"
    assert data_mount(info, "/data/sub/x")["Type"] == "bind"
    assert data_mount(info, "/datab") is None
    assert data_mount({"Mounts": []}, "/data") is None


def test_the_plan_places_dump_rdb_beside_the_aof_only_when_there_is_one():
    from ansible_collections.drkit.backup.plugins.module_utils.redis.restore import plan_for

    target = {"data_dir": "/data", "dbfilename": "dump.rdb", "appenddirname": "appendonlydir",
              "appendfilename": "appendonly.aof", "appendonly": True, "appendonly_from": "appendonly option"}
    aof = {"kind": "redis_aof", "data": {"aof": {"appendfilename": "appendonly.aof"}}}
    conversion, layout, plan, why = plan_for(aof, target, [], "T")
    assert (conversion, layout, plan) == (None, "aof", ["place /data/appendonlydir"])
    rdb = {"kind": "redis_rdb", "data": {}}
    conversion, layout, plan, why = plan_for(rdb, target, ["/data/dump.rdb"], "T")
    assert conversion == "rdb->aof" and plan == [
        "move /data/dump.rdb aside to /data/dump.rdb.drkit-T", "place /data/appendonlydir",
        "place /data/dump.rdb too (loaded only if AOF is turned off)"]
    assert why == "the target has appendonly yes (appendonly option)"
