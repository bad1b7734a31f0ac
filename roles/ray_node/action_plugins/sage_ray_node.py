"""sage_ray_node, controller side: a node's status without a module, and the cluster start in one task.

A worker's status is two facts Ray's own table on the head cannot give: whether a raylet runs there (and at which
node IP, to match it against the head's table) and what was deployed there. The head's adds Ray's table itself,
from the dashboard. One fixed shell command reads them (module_utils/ray_node.py: probe_command), with no module
started on the node: about 0.35 s less CPU per node, which on clusters whose nodes share cores is what status
costs. The result is the module's `sage` dict (RETURN in library/sage_ray_node.py), built by the same pure
functions the module uses; when the dashboard does not answer, the head's module asks Ray itself.

The cluster start: when one task starts the head and workers together (playbooks/cluster.yml), each worker holds
here, on the controller, until the head says it may join (HeadSignal): "done" once the head's module returned;
with ray_node_start_overlap, "clear" at once when the head has neither this user's Ray nor anything on its GCS
port. Then the worker waits until the head's GCS port answers from it (PORT_PROBE), and runs its module as before.
The overlap starts each worker's `ray start` while the head's is still going (about 5 s of a 1 + 3 node start
when the nodes have CPUs of their own); a worker may join only the head's NEW GCS, hence "clear" only when no old
Ray is left there. Had it joined a GCS that died (the old head's, stopped for a changed token or
config, or the new head's, if its start then failed), it would sit there alone. When the head's start fails
("failed"), a waiting worker fails at once, and a worker that started meanwhile stops its Ray again: no Ray is
left behind, and every worker's line says the head failed. Every other task runs the module unchanged, and a
worker whose head is not in the task (sage worker start, scale add, --limit) checks the head itself, as before.
"""
from __future__ import annotations

import functools
import importlib.util
import json
import os
import shlex
import time
from pathlib import Path

from ansible import constants as C
from ansible.module_utils.common.text.converters import to_bytes
from ansible.module_utils.parsing.convert_bool import boolean
from ansible.plugins.action import ActionBase
from ansible.utils.vars import merge_hash

# Seconds between two looks at the head's signal and port: a worker starts at most this long after the head's
# GCS could take it, and a probe costs an SSH round trip on the open control master (a few ms of CPU).
POLL = 0.2


@functools.cache  # loaded once per process: a worker's wait asks for PORT_PROBE every POLL seconds
def _node_logic():
    """module_utils/ray_node.py (standard library only), loaded by path: the controller has no import path to it."""
    path = Path(__file__).resolve().parent.parent / "module_utils" / "ray_node.py"
    spec = importlib.util.spec_from_file_location("sage_ray_node_logic", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class HeadSignal:
    """What the head's start tells the workers starting in the same task: {"state": clear|done|failed, "msg"}.

    The action plugins of one task run in forked processes of one ansible-playbook. Its local temp dir
    (C.DEFAULT_LOCAL_TMP, ansible-local-<pid>...: made once by that process before it forks, whatever
    ANSIBLE_LOCAL_TEMP says, and removed when it exits) is unique per run and shared by them, so the file needs no
    cleanup of its own; the task's uuid keeps two start tasks of one run apart.
    """

    def __init__(self, task_uuid: str) -> None:
        self.path = os.path.join(C.DEFAULT_LOCAL_TMP, f"sage-ray-head-{task_uuid}.json")

    def write(self, state: str, msg: str = "") -> None:
        tmp = f"{self.path}.{os.getpid()}"
        with open(tmp, "w") as fh:
            json.dump({"state": state, "msg": msg}, fh)
        os.replace(tmp, self.path)  # a reader sees the old state or the new one, never half a file

    def read(self) -> dict:
        try:
            with open(self.path) as fh:
                return json.load(fh)
        except FileNotFoundError:
            return {}


class ActionModule(ActionBase):
    _supports_check_mode = True

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        args = self._task.args
        if args.get("state") == "status":
            report, error = self._probe_report(args)
            if error:
                result.update(failed=True, msg=error)
                return result
            if report is not None:
                result.update(changed=False, sage=report)
                return result
        head = self._head_starting_alongside(task_vars)
        if head is None:
            outcome = self._execute_module(task_vars=task_vars)
        elif args["node_type"] == "head":
            outcome = self._start_head(HeadSignal(self._task._uuid), args, task_vars)
        else:
            outcome = self._start_worker(HeadSignal(self._task._uuid), head, args, task_vars)
        self._remove_tmp_path(self._connection._shell.tmpdir)
        return merge_hash(result, outcome)

    def _probe_report(self, args):
        """A node's `sage` dict from the status probe: (report, None); (None, why the probe failed); or (None, None)
        when a running head's dashboard gave no table (no dashboard yet, or any more): the module asks Ray's GCS."""
        logic = _node_logic()
        record_path = args.get("deploy_record") or ""
        head_view = bool(args.get("cluster_view"))
        command = logic.probe_command(record_path or "/dev/null", shlex.quote,
                                      args["python_path"] if head_view else None)
        ask = (to_bytes(logic.state_api_input(args["dashboard_host"], args["dashboard_port"], args.get("auth_token")))
               if head_view else None)
        probe = self._low_level_execute_command(command, in_data=ask)
        if probe["rc"] != 0:
            return None, f"status probe failed: {(probe['stderr'] or probe['stdout']).strip()}"
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
            if nodes is None:
                return None, None
            report["cluster"] = logic.cluster_summary(nodes)
        return report, None

    def _head_starting_alongside(self, task_vars):
        """The head's inventory name when this task starts the head and workers together, else None.

        In check mode nothing starts, so nothing waits. With the linear strategy every host of the play's batch
        runs this same task now; the inventory gives each node its ray_node_type.
        """
        if self._task.args.get("state") not in ("start", "restart") or self._play_context.check_mode:
            return None
        hostvars = task_vars["hostvars"]
        types = {host: hostvars[host].get("ray_node_type") for host in task_vars.get("ansible_play_batch", ())}
        heads = [host for host, node_type in types.items() if node_type == "head"]
        return heads[0] if len(heads) == 1 and "worker" in types.values() else None

    def _port_open(self, args):
        """Whether the head's GCS port answers from this node (the host name is resolved there, as Ray does)."""
        probe = self._low_level_execute_command(_node_logic().PORT_PROBE,
                                                in_data=to_bytes(f"{args['head_host']} {args['head_port']}\n"))
        return probe["stdout"].strip() == "open"

    def _start_head(self, signal, args, task_vars):
        overlap = boolean(self._templar.template(task_vars.get("ray_node_start_overlap", False)), strict=False)
        try:
            logic = _node_logic()
            probe = self._low_level_execute_command(logic.probe_command("/dev/null", shlex.quote))
            procs = logic.parse_probe(probe["stdout"])[0]
            # No Ray of ours to replace, and nothing else on the port: what answers there next is the new GCS.
            # Anything else (an old Ray, a squatter, a failed probe) keeps the workers waiting for the verdict.
            if overlap and probe["rc"] == 0 and not procs and not self._port_open(args):
                signal.write("clear")
            outcome = self._execute_module(task_vars=task_vars)
        except Exception as exc:  # unreachable, or the module could not run: the workers must not wait it out
            signal.write("failed", str(exc))
            raise
        signal.write("failed" if outcome.get("failed") else "done", outcome.get("msg", ""))
        return outcome

    def _start_worker(self, signal, head, args, task_vars):
        timeout = int(args["timeout"])
        started = time.monotonic()
        said = signal.read()
        while not (said.get("state") in ("clear", "done") and self._port_open(args)):
            if said.get("state") == "failed":
                return self._head_failed(head, said, args, task_vars, ran=None)
            if time.monotonic() - started > timeout:
                return self._failed(args, f"the head {head}'s GCS {args['head_host']}:{args['head_port']} did not "
                                          f"answer here within {timeout} s (the head: {said.get('state') or 'no word'})")
            time.sleep(POLL)
            said = signal.read()
        outcome = self._execute_module(task_vars=task_vars)
        # The head's verdict decides whether the head this worker joined stays. Its start is bounded by its own
        # timeout (plus a stop of an old Ray), so the verdict comes within twice the timeout of this task's start.
        while said.get("state") not in ("done", "failed") and time.monotonic() - started < 2 * timeout:
            time.sleep(POLL)
            said = signal.read()
        if said.get("state") == "done":
            return outcome
        if said.get("state") != "failed":
            said = {"msg": f"no word from it within {2 * timeout} s"}
        return self._head_failed(head, said, args, task_vars, ran=outcome)

    def _head_failed(self, head, said, args, task_vars, ran):
        """This worker's result when the head's start failed; `ran`: its own module's result, None if not run."""
        failed = f"the head {head} failed to start Ray: {said.get('msg') or 'no reason given'}"
        if ran is None:
            return self._failed(args, f"{failed}; this worker did not start")
        if ran.get("failed"):  # a failed start leaves no Ray (the module terminates what it began)
            return dict(ran, msg=f"{failed}; this worker's start failed with it: {ran.get('msg')}")
        stop = self._execute_module(module_args=dict(self._task.args, state="stop"), task_vars=task_vars)
        what = "stopped again" if not stop.get("failed") else f"NOT stopped ({stop.get('msg')})"
        return dict(failed=True, changed=True, sage=stop.get("sage", ran.get("sage")),
                    msg=f"{failed}; the Ray this worker started meanwhile was {what}")

    def _failed(self, args, msg):
        report, _ = self._probe_report(args)  # RETURN: `sage` is always there, as after a failed module
        return dict(failed=True, changed=False, msg=msg, sage=report or {})
