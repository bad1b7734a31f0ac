"""sage_wheelhouse: this machine's wheels of a Ray release for the task's node, built here
(plugin_utils/wheelhouse.py) and sent with rsync (plugin_utils/rsync.py). Documented in
plugins/modules/sage_wheelhouse.py."""
from __future__ import annotations

from ansible.errors import AnsibleActionFail
from ansible_collections.sage.cluster.plugins.module_utils.node import WHEELS_DIR as REMOTE_DIR
from ansible_collections.sage.cluster.plugins.plugin_utils.checked_action import CheckedAction
from ansible_collections.sage.cluster.plugins.plugin_utils.rsync import rsync
from ansible_collections.sage.cluster.plugins.plugin_utils.wheelhouse import (WheelhouseError, build_wheelhouse,
                                                                              wheelhouse_key)

ARGS = {"ray_version": dict(type="str", required=True), "python_version": dict(type="str", required=True),
        "glibc": dict(type="str", default=""), "machine": dict(type="str", required=True)}


class ActionModule(CheckedAction):
    ARGS = ARGS

    def act(self, result, args, task_vars):
        key = wheelhouse_key(args["ray_version"], args["python_version"], args["glibc"], args["machine"])
        wheel_dir = f"~/{REMOTE_DIR}/{key}"
        if self._task.check_mode:
            result.update(changed=True, wheel_dir=wheel_dir)
            return result
        try:
            local = build_wheelhouse(args["ray_version"], args["python_version"], args["glibc"] or None,
                                     args["machine"])
        except WheelhouseError as exc:
            raise AnsibleActionFail(str(exc)) from None
        out = self._low_level_execute_command(f'umask 077 && mkdir -p -- "$HOME/{REMOTE_DIR}"')
        if out["rc"] != 0:
            raise AnsibleActionFail(f"cannot make ~/{REMOTE_DIR} on the node: {out['stderr'].strip()}")
        sent = rsync(self._connection, f"{local}/", f"{REMOTE_DIR}/{key}", [".complete"], dry_run=False)
        if sent.get("failed"):
            raise AnsibleActionFail(sent.get("msg", "rsync failed"))
        result.update(changed=sent["changed"], wheel_dir=wheel_dir)
        return result
