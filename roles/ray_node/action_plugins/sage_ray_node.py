"""sage_ray_node, controller side: a worker's status without a module; everything else runs the module.

A worker's status is two facts Ray's own table on the head cannot give: whether a raylet runs there (and at which
node IP, to match it against the head's table) and what was deployed there. One fixed shell command reads both
(module_utils/ray_node.py: probe_command), with no Python started on the node: about 0.35 s less CPU per worker
than the module, which on clusters whose nodes share cores is what status costs. The result is the module's
`sage` dict (RETURN in library/sage_ray_node.py), built by the same pure functions the module uses.
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
        if args.get("state") != "status" or args.get("node_type") != "worker" or args.get("cluster_view"):
            result = merge_hash(result, self._execute_module(task_vars=task_vars))
            self._remove_tmp_path(self._connection._shell.tmpdir)
            return result
        logic = _node_logic()
        record_path = args.get("deploy_record") or ""
        probe = self._low_level_execute_command(logic.probe_command(record_path or "/dev/null", shlex.quote))
        if probe["rc"] != 0:
            result.update(failed=True, msg=f"status probe failed: {(probe['stderr'] or probe['stdout']).strip()}")
            return result
        procs, record = logic.parse_probe(probe["stdout"])
        report = dict(logic.node_state(procs), node_type="worker",
                      log_file=logic.log_file(args["log_dir"], "worker"), declared=logic.declared(args))
        if record_path:
            report["deploy"] = logic.deployed(record, args.get("source_revision") or "")
        result.update(changed=False, sage=report)
        return result
