"""sage_wheelhouse: this machine's wheels of a Ray release for the task's node, built here and sent with rsync.

For a node whose pip reaches no index (or with sage_provision_wheelhouse): sage_cluster/provision.py builds
them once per (Ray release, Python, node platform) under ~/.sage/wheels/ (pip download --only-binary for the
node's platform and Python), and sage_deploy's sage_rsync action sends them to the same place under the node's
home, over the node's own ssh settings. Returns wheel_dir, the directory on the node. Check mode builds and sends
nothing.
"""
from __future__ import annotations

import sys
from pathlib import Path

from ansible.errors import AnsibleActionFail
from ansible_collections.sage.cluster.plugins.plugin_utils.checked_action import CheckedAction

try:
    from sage_cluster import provision
except ImportError:  # run from a checkout (ops staff, AWX): the package sits three levels up from this role
    sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
    from sage_cluster import provision

ARGS = {"ray_version": dict(type="str", required=True), "python_version": dict(type="str", required=True),
        "glibc": dict(type="str", default=""), "machine": dict(type="str", required=True)}
SAGE_RSYNC = Path(__file__).resolve().parents[2] / "sage_deploy" / "action_plugins"
REMOTE_DIR = ".sage/wheels"  # under the node's home (rsync's relative paths are)


class ActionModule(CheckedAction):
    ARGS = ARGS

    def act(self, result, args, task_vars):
        key = provision.wheelhouse_key(args["ray_version"], args["python_version"], args["glibc"], args["machine"])
        wheel_dir = f"~/{REMOTE_DIR}/{key}"
        if self._task.check_mode:
            result.update(changed=True, wheel_dir=wheel_dir)
            return result
        try:
            local = provision.build_wheelhouse(args["ray_version"], args["python_version"], args["glibc"] or None,
                                               args["machine"])
        except provision.WheelhouseError as exc:
            raise AnsibleActionFail(str(exc)) from None
        out = self._low_level_execute_command(f'umask 077 && mkdir -p -- "$HOME/{REMOTE_DIR}"')
        if out["rc"] != 0:
            raise AnsibleActionFail(f"cannot make ~/{REMOTE_DIR} on the node: {out['stderr'].strip()}")
        sent = self._rsync(task_vars, f"{local}/", f"{REMOTE_DIR}/{key}")
        if sent.get("failed"):
            raise AnsibleActionFail(sent.get("msg", "rsync failed"))
        result.update(changed=sent.get("changed", False), wheel_dir=wheel_dir)
        return result

    def _rsync(self, task_vars, src, dest):
        """sage_deploy's sage_rsync action, run for this task's host: one rsync, the connection's ssh command."""
        loader = self._shared_loader_obj.action_loader
        loader.add_directory(str(SAGE_RSYNC))
        task = self._task.copy()
        task.args = {"src": src, "dest": dest, "exclude": [".complete"]}
        action = loader.get("sage_rsync", task=task, connection=self._connection, play_context=self._play_context,
                            loader=self._loader, templar=self._templar, shared_loader_obj=self._shared_loader_obj)
        return action.run(task_vars=task_vars)
