"""sage_rsync: copy a local directory to the task's host with one rsync run on the controller (plugin_utils/rsync.py
says why not ansible.posix.synchronize). Documented in plugins/modules/sage_rsync.py."""
from __future__ import annotations

from ansible_collections.sage.cluster.plugins.plugin_utils.checked_action import CheckedAction
from ansible_collections.sage.cluster.plugins.plugin_utils.rsync import rsync

ARGS = {"src": dict(type="path", required=True), "dest": dict(type="str", required=True),
        "exclude": dict(type="list", elements="str", default=[])}


class ActionModule(CheckedAction):
    ARGS = ARGS

    def act(self, result, args, task_vars):
        result.update(rsync(self._connection, args["src"], args["dest"], args["exclude"],
                            dry_run=bool(self._task.check_mode)))
        return result
