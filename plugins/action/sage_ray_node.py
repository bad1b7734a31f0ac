"""sage_ray_node, controller side: the options checked before any connection, and a node's status without a module.

The options are checked here against the module's own spec and rules (ray_node.ARGUMENT_SPEC and ARGUMENT_RULES,
in the collection sage.cluster's module_utils), as the deploy role's plugins check theirs: a bad one fails the task
on the controller.

query=status is what Ray's own table on the head cannot give: whether a raylet of this user runs on the node (and
at which node IP, to match it against the head's table) and what was deployed there; the head's adds Ray's table
itself, from the dashboard. One fixed shell command reads them (ray_node.probe_command), with no
module started on the node: about 0.35 s less CPU per node, which on clusters whose nodes share cores is what
status costs. The result is the module's `sage` dict (RETURN in library/sage_ray_node.py), built by the function
the module builds it with (node_report). When the probe fails, or a running head's dashboard gives no table, the
module runs instead. With python_path or ray_command `auto`, the probe reads what the module found on the node
(module_utils/detect_env.py's cache, while its Python exists) and a head's snippet runs with that Python; without
such a finding the module runs (and finds them). Every other state and query runs the module; a start or restart
gets the controller's Ray release as ray_version when none is given.
"""
from __future__ import annotations

import importlib.metadata
import shlex

from ansible.module_utils.common.text.converters import to_bytes
from ansible.plugins.action import ActionBase
from ansible.utils.vars import merge_hash
from ansible_collections.sage.cluster.plugins.module_utils import detect_env
from ansible_collections.sage.cluster.plugins.module_utils import ray_node as logic


def controller_ray():
    """This machine's Ray release: what a node must have to start (and what provision installs); "" without one
    (an execution environment without Ray): then no node is checked."""
    try:
        return importlib.metadata.version("ray")
    except importlib.metadata.PackageNotFoundError:
        return ""


class ActionModule(ActionBase):
    _supports_check_mode = True

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        _, checked = self.validate_argument_spec(argument_spec=logic.ARGUMENT_SPEC, **logic.ARGUMENT_RULES)
        if checked.get("blocked_by"):
            # A task of its own would cost every host of a start one more forked worker (a skip costs one too).
            result.update(failed=True, msg=checked["blocked_by"])
            return result
        if checked.get("query") == "status":
            # The check expands a `path` option's ~ with the controller's home; the node's own is meant.
            params = dict(checked, **{k: v for k, v in self._task.args.items()
                                      if logic.ARGUMENT_SPEC[k]["type"] == "path"})
            report = self._probe(logic, params)
            if report is not None:
                result.update(changed=False, sage=report)
                if why := logic.head_without_gcs(params["node_type"], report):
                    result.update(failed=True, msg=why)
                return result
        args = self._task.args
        if checked.get("state") in ("start", "restart") and not args.get("ray_version"):
            args = dict(args, ray_version=controller_ray())
        return merge_hash(result, self._execute_module(module_args=args, task_vars=task_vars))

    def _probe(self, logic, params):
        """A node's `sage` dict from the status probe, or None for the module to answer instead."""
        record_path = params.get("deploy_record")
        head_view = params["cluster_view"]
        auto = detect_env.AUTO in (params.get("python_path"), params.get("ray_command"))
        command = logic.probe_command(record_path or "/dev/null", shlex.quote,
                                      params["python_path"] if head_view else None, detected=auto)
        ask = (to_bytes(logic.state_api_input(params["dashboard_host"], params["dashboard_port"],
                                              params.get("auth_token")))
               if head_view else None)
        probe = self._low_level_execute_command(command, in_data=ask)
        if probe["rc"] != 0:
            return None
        procs, record, nodes_text, cached = logic.parse_probe(probe["stdout"])
        if auto:
            # What the module found here, while it still exists; else the module finds it again.
            if "python_path" not in cached or cached.get("asked") != params.get("conda_env"):
                return None
            found = detect_env.resolve(params["python_path"], params["ray_command"], params.get("conda_env"),
                                       lambda: cached)
            params = dict(params, python_path=found["python_path"], ray_command=found["ray_command"])
        report = logic.node_report(params, logic.node_state(procs), record if record_path else None)
        if head_view and report["running"] and not logic.head_without_gcs(params["node_type"], report):
            nodes = logic.state_api_nodes(nodes_text)
            if nodes is None:
                return None
            report["cluster"] = logic.cluster_summary(nodes)
        return report
