"""sage_ray_node, controller side: the options checked before any connection, and a node's status without a module.

The options are checked here against the module's own spec and rules (ray_node.ARGUMENT_SPEC and ARGUMENT_RULES,
in the collection sage.cluster's module_utils), as the deploy role's plugins check theirs: a bad one fails the task
on the controller.

query=status is what Ray's own table on the head cannot give: whether a raylet of this user runs on the node (and
at which node IP, to match it against the head's table) and what was deployed there; the head's adds Ray's table
itself, from the dashboard. One fixed shell command reads them (ray_node.probe_command), a second one a running
head's table (ray_node.state_api_command), with no module started on the node: about 0.35 s less CPU per node,
which on clusters whose nodes share cores is what status costs. The result is the module's `sage` dict (RETURN in
plugins/modules/sage_ray_node.py), built by the function
the module builds it with (node_report). When the probe fails, or a running head's dashboard gives no table, the
module runs instead. With python_path or ray_command `auto`, the probe reads what the module found on the node
(module_utils/detect_env.py's cache, while its Python exists) and a head's table is asked with that Python; without
such a finding the module runs (and finds them). Every other state and query runs the module; a start or restart
gets the controller's Ray release as ray_version when none is given.

auth_token_file names the token's file on the controller: read here (made first when missing, so that
ansible-playbook and AWX runs need no `sage` step before them) and passed on as the no_log auth_token. tls_ca_dir
names the cluster's CA on the controller (made when missing, plugin_utils/tls.py): a start reads the node's
certificate with one more fixed shell command and keeps it when it still does, else makes the node a new key and
certificate here and passes them as no_log module options; doctor gets the certificate's check (sage.doctor.tls) the
same way. For the same reason as the token's, the directory of the known_hosts file the inventory gives ssh
(ssh.known_hosts) is made here, before the node is contacted: ssh does not make it, and then learns no host key at
all.
"""
from __future__ import annotations

import shlex
import socket
from pathlib import Path

from ansible.module_utils.common.text.converters import to_bytes
from ansible_collections.sage.cluster.plugins.module_utils import detect_env
from ansible_collections.sage.cluster.plugins.module_utils import ray_node as logic
from ansible_collections.sage.cluster.plugins.module_utils import supervisor
from ansible_collections.sage.cluster.plugins.module_utils.remote_shell import shell_path
from ansible_collections.sage.cluster.plugins.plugin_utils import controller
from ansible_collections.sage.cluster.plugins.plugin_utils.checked_action import ProbedAction
from ansible_collections.sage.cluster.plugins.plugin_utils.ray_token import read_token


# Options read here, never passed to the node.
CONTROLLER_ONLY = ("auth_token_file", "auth_token_make", "tls_ca_dir", "tls_make", "tls_renew")


class ActionModule(ProbedAction):
    ARGS = logic.ARGUMENT_SPEC
    RULES = logic.ARGUMENT_RULES

    def act(self, result, args, task_vars):
        if args.get("blocked_by"):
            # A task of its own would cost every host of a start one more forked worker (a skip costs one too).
            result.update(failed=True, msg=args["blocked_by"])
            return result
        self._make_known_hosts_dir()
        failure = self._read_token(args) if args.get("auth_token_file") else None
        if failure is None and args.get("tls_ca_dir"):
            failure = self._tls(args, task_vars)
        if failure:
            result.update(failed=True, msg=failure)
            return result
        result = super().act(result, args, task_vars)
        if args.get("tls_ca_dir") and args.get("query") == "doctor" and "doctor" in result.get("sage", {}):
            result["sage"]["doctor"]["tls"] = self._tls_doctor(args)
        return result

    def module_args(self, args):
        out = {k: v for k, v in self._task.args.items() if k not in CONTROLLER_ONLY}
        out.update({k: args[k] for k in ("auth_token", "tls_ca_cert", "tls_cert", "tls_key") if args.get(k)})
        if args.get("state") in ("start", "restart") and not out.get("ray_version"):
            out["ray_version"] = controller.ray_version()
        return out

    def _read_token(self, checked):
        """Put the controller's token into checked["auth_token"]; the failure's line, or None."""
        token_file = checked["auth_token_file"]
        path = Path(token_file).expanduser()
        if checked.get("auth_token_make") is False and not path.exists():
            return (f"the Ray auth token file {token_file} is not on the controller, and this run may not make one "
                    "(ray_node_auth_token_make: false). Fix: give the run the cluster's token file (AWX: the sage "
                    "Ray token credential).")
        try:
            checked["auth_token"] = read_token(path)
        except OSError as exc:
            return (f"cannot read or make the Ray auth token file {token_file} on the controller ({exc.strerror}). "
                    "Fix: make it readable, or remove it for a new token.")
        return None

    def _tls(self, checked, task_vars):
        """Put the CA's cert into checked (and at a start, the node's cert, with a new key where the node needs one);
        the failure's line, or None. The CA is made here when missing (unless tls_make is false)."""
        from ansible_collections.sage.cluster.plugins.plugin_utils import tls  # `cryptography`: only runs with TLS

        try:
            ca = tls.ensure_ca(Path(checked["tls_ca_dir"]).expanduser(), make=checked.get("tls_make") is not False)
        except tls.CAError as exc:
            return str(exc)
        self._ca, self._names = ca, self._node_names(checked, task_vars)
        checked["tls_ca_cert"] = ca.cert_pem
        if checked.get("state") in ("start", "restart"):
            have = self._node_cert()
            if checked.get("tls_renew") or not have or tls.check(have, ca.cert_pem, self._names,
                                                                 tls.RENEW_DAYS) is not None:
                checked["tls_key"], checked["tls_cert"] = ca.issue(self._names, task_vars["inventory_hostname"])
        return None

    @staticmethod
    def _node_names(checked, task_vars):
        """What peers dial to reach the node: its Ray address (and what it resolves to here), its inventory name and
        ansible_host."""
        names = [checked.get("node_ip"), task_vars.get("inventory_hostname"), task_vars.get("ansible_host")]
        try:
            names.append(socket.gethostbyname(checked["node_ip"]))
        except (OSError, KeyError, TypeError):
            pass
        return names

    def _node_cert(self):
        """The node's certificate (PEM), None when it or its key is missing."""
        files = logic.tls_paths(self._task.args["tls_node_dir"])
        out = self.shell(f"cat -- {shell_path(files['cert'])} && test -s {shell_path(files['key'])}")
        # As read through a terminal, its lines may end in \r\n.
        return "".join(line + "\n" for line in out.splitlines() if line.strip()) if out else None

    def _tls_doctor(self, checked):
        """doctor's row of the node's certificate: fails when it is missing, from another CA, expired or not covering
        the node; warns within 30 days of its end."""
        from ansible_collections.sage.cluster.plugins.plugin_utils import tls

        fix = "run `sage cluster start`: it gives the node a new certificate (its Ray restarts on it)"
        have = self._node_cert()
        if not have:
            return {"ok": False, "warn": False, "detail": "no certificate (or key) on the node", "fix": fix}
        why = tls.check(have, self._ca.cert_pem, self._names)
        if why:
            return {"ok": False, "warn": False, "detail": why, "fix": fix}
        facts = tls.facts(have)
        detail = f"serial {facts['serial'][:12]}, expires {facts['not_after'][:10]} ({facts['days_left']} days)"
        soon = facts["days_left"] < tls.RENEW_DAYS
        return {"ok": True, "warn": soon, "detail": detail + (", soon" if soon else ""),
                "fix": "run `sage cluster start`: within 30 days of the end it renews the certificate" if soon else ""}

    def _make_known_hosts_dir(self):
        """The directory of each UserKnownHostsFile in the host's ssh_common_args (0700)."""
        if getattr(self._connection, "transport", None) != "ssh":
            return
        for arg in shlex.split(self._connection.get_option("ssh_common_args") or ""):
            if arg.startswith("UserKnownHostsFile="):
                for name in arg.partition("=")[2].split():
                    Path(name).expanduser().parent.mkdir(mode=0o700, parents=True, exist_ok=True)

    def probe(self, args):
        if args.get("query") != "status":
            return None
        # The check expands a `path` option's ~ with the controller's home; the node's own is meant.
        params = dict(args, **{k: v for k, v in self._task.args.items()
                               if logic.ARGUMENT_SPEC[k]["type"] == "path"})
        report = self._status(params)
        if report is None:
            return None
        answer = {"changed": False, "sage": report}
        if why := (logic.head_without_gcs(params["node_type"], report, params.get("fault_tolerance"))
                   or logic.raylet_not_working(report) or supervisor.unit_without_ray(report["supervisor"], report)):
            answer.update(failed=True, msg=why)
        return answer

    def _status(self, params):
        """A node's `sage` dict from the status probe, or None for the module to answer instead."""
        record_path = params.get("deploy_record")
        head_view = params["cluster_view"]
        auto = detect_env.AUTO in (params.get("python_path"), params.get("ray_command"))
        out = self.shell(logic.probe_command(record_path or "/dev/null", shlex.quote, detected=auto,
                                             python_path=params.get("python_path")))
        if out is None:
            return None
        procs, record, cached, states, facts, health = logic.parse_probe(out)
        if auto:
            # What the module found here, while it still exists; else the module finds it again.
            if "python_path" not in cached or cached.get("asked") != params.get("conda_env"):
                return None
            found = detect_env.resolve(params["python_path"], params["ray_command"], params.get("conda_env"),
                                       lambda: cached)
            params = dict(params, python_path=found["python_path"], ray_command=found["ray_command"])
        report = logic.node_report(params, logic.node_state(procs, states, health), record if record_path else None,
                                   supervisor=supervisor.describe(params.get("supervisor"), facts))
        if head_view and report["running"] and not logic.head_without_gcs(params["node_type"], report):
            ask = logic.state_api_input(params["dashboard_host"], params["dashboard_port"], params.get("auth_token"))
            nodes = logic.state_api_nodes(self.shell(logic.state_api_command(params["python_path"], shlex.quote),
                                                     to_bytes(ask)) or "")
            if nodes is None:
                return None
            report["cluster"] = logic.cluster_summary(nodes)
        return report
