"""sage_provision, controller side: the release to install is this machine's, and an env already right starts
no module on the node.

ray_version and python_version default to this machine's Ray and Python (major.minor): the cluster runs what the
controller runs, so its drivers and `sage` agree with every node. At the prepare stage the env is looked at first
with one fixed shell command (the collection's module_utils/sage_provision.py: PROBE_COMMAND, the env's Python on
stdin); when it already has the release, that is the result, and a second provision costs one SSH round trip per
node. Otherwise, and for the install stage, the module runs (with the node's own Python: the env may not exist yet).
"""
from __future__ import annotations

from ansible.errors import AnsibleActionFail
from ansible_collections.sage.cluster.plugins.module_utils import sage_provision as logic
from ansible_collections.sage.cluster.plugins.plugin_utils import controller
from ansible_collections.sage.cluster.plugins.plugin_utils.checked_action import ProbedAction


class ActionModule(ProbedAction):
    def module_args(self, args):
        """The module's arguments, the release and Python filled in from this machine where left empty."""
        ray = args.get("ray_version") or controller.ray_version()
        if not ray:
            raise AnsibleActionFail("this machine has no Ray to give the nodes: install it here, or set "
                                    "sage_provision_ray_version")
        return dict(args, ray_version=ray, python_version=args.get("python_version") or controller.python_version())

    def probe(self, args):
        args = self.module_args(args)
        if args.get("stage", "prepare") != "prepare" or not str(args.get("python_path", "")).startswith("/"):
            return None
        found = self.shell_json(logic.PROBE_COMMAND, (args["python_path"] + "\n").encode())
        state, error = logic.report(found, args["ray_version"], args["python_version"])
        if found is not None and not error and not state["needed"]:
            return {"changed": False, "sage": {"provision": state}}
        return None
