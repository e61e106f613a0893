# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The engine's ScratchRedis plus a redis-py client for the tests (redis-py
is a test requirement; the engine speaks RESP itself and never imports it)."""

import redis

from ansible_collections.drkit.backup.plugins.module_utils.redis.scratch import ScratchRedis as _EngineScratchRedis


class ScratchRedis(_EngineScratchRedis):
    def client(self, **kwargs):
        """A redis.Redis connected to this server."""
        kw = dict(host=self.host, port=self.port, password=self.password, socket_timeout=30)
        kw.update(kwargs)
        return redis.Redis(**kw)
