# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What `docker compose up -d` does for the tests' containers: create and
start each container of a spec file (JSON: docker_host, containers: name,
image, command, user, environment, volumes, healthcheck) on the host network,
unless one of that name runs already. The tests' Docker Engine has no
compose plugin; the DR rebuild runs this as its recreate command.

    python compose_up.py SPEC.json
"""

import json
import sys

import docker


def up(spec):
    api = docker.APIClient(base_url=spec["docker_host"], version="auto", timeout=120)
    for c in spec["containers"]:
        running = api.containers(all=True, filters={"name": "^/%s$" % c["name"]})
        if running and running[0]["State"] == "running":
            continue
        host_config = api.create_host_config(network_mode="host")
        cid = api.create_container(c["image"], command=c["command"], name=c["name"], host_config=host_config,
                                   healthcheck=c.get("healthcheck"), environment=c.get("environment"),
                                   volumes=c.get("volumes"), user=c.get("user"))["Id"]
        api.start(cid)
        print("created and started %s (%s)" % (c["name"], cid[:12]))


if __name__ == "__main__":
    with open(sys.argv[1]) as fh:
        up(json.load(fh))
