# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Test-only stdout callback: every task result as one JSON document.

ansible-core 2.19 no longer ships the ``json`` callback (it moved to
ansible.posix, which these tests do not install), so the integration tests
bring this small one.  It writes the results to the file named by
``DRKIT_TEST_RESULTS_FILE`` when the playbook ends (stdout stays free for
warnings) and prints one line per task for humans reading a failed test."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = """
    name: drkit_test_json
    type: stdout
    short_description: task results as JSON, for the drkit.backup tests
    description:
      - Writes every task result to the file named by DRKIT_TEST_RESULTS_FILE.
"""

import json
import os
import time

from ansible.plugins.callback import CallbackBase


def _parts(result):
    # 2.19+: .task/.host/.result; older: ._task/._host/._result
    task = getattr(result, "task", None) or result._task
    host = getattr(result, "host", None) or result._host
    data = getattr(result, "result", None)
    if data is None:
        data = result._result
    return task, host, dict(data)


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "stdout"
    CALLBACK_NAME = "drkit_test_json"

    def __init__(self, *args, **kwargs):
        super(CallbackModule, self).__init__(*args, **kwargs)
        self.results = []
        self.stats = {}
        self._started = time.time()

    def v2_playbook_on_task_start(self, task, is_conditional):
        self._started = time.time()

    def _record(self, status, result, ignore_errors=False):
        task, host, data = _parts(result)
        self.results.append({"task": task.get_name(), "action": task.action, "host": host.get_name(),
                             "status": status, "ignore_errors": bool(ignore_errors), "result": data,
                             "seconds": round(time.time() - self._started, 3)})
        self._display.display("%s | %s | %s | %.2fs" % (status.upper(), host.get_name(), task.get_name(),
                                                        self.results[-1]["seconds"]))

    def v2_runner_on_ok(self, result):
        self._record("ok", result)

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._record("failed", result, ignore_errors)

    def v2_runner_on_skipped(self, result):
        self._record("skipped", result)

    def v2_runner_on_unreachable(self, result):
        self._record("unreachable", result)

    def v2_playbook_on_stats(self, stats):
        for host in sorted(stats.processed.keys()):
            self.stats[host] = stats.summarize(host)
        path = os.environ.get("DRKIT_TEST_RESULTS_FILE")
        if path:
            with open(path, "w") as fh:
                json.dump({"results": self.results, "stats": self.stats}, fh, default=str)
