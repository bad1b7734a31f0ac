"""sage_provision, controller side: the release to install is this machine's, and an env already right starts
no module on the node.

ray_version and python_version default to this machine's Ray and Python (major.minor): the cluster runs what the
controller runs, so its drivers and `sage` agree with every node. At the prepare stage the env is looked at first
with one fixed shell command (the collection's module_utils/sage_provision.py: PROBE_COMMAND, the env's Python on
stdin); when it already has the release, that is the result, and a second provision costs one SSH round trip per
node. Otherwise, and for the install stage, the module runs (with the node's own Python: the env may not exist yet).
"""
from __future__ import annotations

import importlib.metadata
import json
import sys

from ansible.plugins.action import ActionBase
from ansible.utils.vars import merge_hash
from ansible_collections.sage.cluster.plugins.module_utils import sage_provision as logic


def controller_release(args: dict) -> dict:
    """The module's arguments, the release and Python filled in from this machine where left empty."""
    return dict(args, ray_version=args.get("ray_version") or importlib.metadata.version("ray"),
                python_version=args.get("python_version") or "%d.%d" % sys.version_info[:2])


class ActionModule(ActionBase):
    _supports_check_mode = True

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        args = controller_release(self._task.args)
        if args.get("stage", "prepare") == "prepare" and str(args.get("python_path", "")).startswith("/"):
            out = self._low_level_execute_command(logic.PROBE_COMMAND, in_data=(args["python_path"] + "\n").encode())
            try:
                found = json.loads(out["stdout"]) if out["rc"] == 0 and out["stdout"].strip() else None
            except ValueError:
                found = None
            state, error = logic.report(found, args["ray_version"], args["python_version"])
            if found is not None and not error and not state["needed"]:
                result.update(changed=False, sage={"provision": state})
                return result
        result = merge_hash(result, self._execute_module(module_args=args, task_vars=task_vars))
        return result
