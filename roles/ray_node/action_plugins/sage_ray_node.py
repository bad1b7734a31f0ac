"""sage_ray_node, controller side: a node's status without a module; everything else runs the module.

A worker's status is two facts Ray's own table on the head cannot give: whether a raylet runs there (and at which
node IP, to match it against the head's table) and what was deployed there. The head's adds Ray's table itself,
from the dashboard. One fixed shell command reads them (module_utils/ray_node.py: probe_command), with no module
started on the node: about 0.35 s less CPU per node, which on clusters whose nodes share cores is what status
costs. The result is the module's `sage` dict (RETURN in library/sage_ray_node.py), built by the same pure
functions the module uses; when the dashboard does not answer, the head's module asks Ray itself.
"""
from __future__ import annotations

import importlib.util
import shlex
from pathlib import Path

from ansible.plugins.action import ActionBase
from ansible.utils.vars import merge_hash


def _node_logic():
    """module_utils/ray_node.py (standard library only), loaded by path: the controller has no import path to it."""
    path = Path(__file__).resolve().parent.parent / "module_utils" / "ray_node.py"
    spec = importlib.util.spec_from_file_location("sage_ray_node_logic", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class ActionModule(ActionBase):
    _supports_check_mode = True

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        args = self._task.args
        if args.get("state") != "status":
            return self._module(result, task_vars)
        logic = _node_logic()
        record_path = args.get("deploy_record") or ""
        head_view = bool(args.get("cluster_view"))
        command = logic.probe_command(record_path or "/dev/null", shlex.quote,
                                      args["python_path"] if head_view else None)
        ask = logic.state_api_input(args["dashboard_host"], args["dashboard_port"], args.get("auth_token"))
        probe = self._low_level_execute_command(command, in_data=ask.encode() if head_view else None)
        if probe["rc"] != 0:
            result.update(failed=True, msg=f"status probe failed: {(probe['stderr'] or probe['stdout']).strip()}")
            return result
        procs, record, nodes_text = logic.parse_probe(probe["stdout"])
        report = dict(logic.node_state(procs), node_type=args["node_type"],
                      log_file=logic.log_file(args["log_dir"], args["node_type"]), declared=logic.declared(args))
        if record_path:
            report["deploy"] = logic.deployed(record, args.get("source_revision") or "")
        if args["node_type"] == "head":
            report["dashboard_url"] = logic.dashboard_url(args["dashboard_host"], args["head_host"],
                                                          args["dashboard_port"])
        if head_view and report["running"]:
            nodes = logic.state_api_nodes(nodes_text)
            if nodes is None:  # no dashboard (yet, or any more): the module asks Ray's GCS
                return self._module(result, task_vars)
            report["cluster"] = logic.cluster_summary(nodes)
        result.update(changed=False, sage=report)
        return result

    def _module(self, result, task_vars):
        result = merge_hash(result, self._execute_module(task_vars=task_vars))
        self._remove_tmp_path(self._connection._shell.tmpdir)
        return result
