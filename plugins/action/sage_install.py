"""sage_install, controller side: a deploy that installs nothing on a node starts no module there.

The node's deploy record is read with one `cat`; when sage_install_plan (the module's own decision, shared
through the collection sage.cluster) finds nothing to install, that is the result, and a changed record (new
code, same packaging) is written with one fixed shell command, the record on stdin. Otherwise, in check mode, and
with python_path `auto` (found by the module on the node), the module runs. A
deploy of code changes, or of none, so saves a Python start per node (about 0.35 s of CPU each).
"""
from __future__ import annotations

import json

from ansible.errors import AnsibleActionFail
from ansible_collections.sage.cluster.plugins.module_utils import detect_env, sage_install_plan
from ansible_collections.sage.cluster.plugins.module_utils.remote_shell import shell_path
from ansible_collections.sage.cluster.plugins.plugin_utils.checked_action import ProbedAction

# Every parameter the decision reads; the role always passes them all.
PLANNED = ("dest", "install", "pip_args", "python_path", "conda_env", "packaged", "revision", "packaging_revision",
           "record")


class ActionModule(ProbedAction):
    def probe(self, args):
        # A detected Python (`auto`) is the module's to find: it decides then.
        if (self._task.check_mode or not all(k in args for k in PLANNED) or args["python_path"] == detect_env.AUTO
                or not sage_install_plan.valid_install(args["install"])):
            return None
        path = shell_path(args["record"])
        old = self.shell_json(f"cat -- {path} 2>/dev/null; exit 0")
        planned = sage_install_plan.plan(args, old if isinstance(old, dict) else {})
        if planned["needed"]:
            return None
        if planned["changed"]:
            self._write_record(path, planned["record"])
        return {"changed": planned["changed"], "sage": {"deploy": planned["report"]}}

    def _write_record(self, path, record):
        """As the module's write_json: its directory 0700, the file 0600, replaced whole (a temp file, then mv)."""
        command = (f"umask 077 && dir=$(dirname -- {path}) && mkdir -p -- \"$dir\" && "
                   f"tmp=$(mktemp -- \"$dir/.deploy.XXXXXX\") && cat > \"$tmp\" && mv -f -- \"$tmp\" {path}")
        out = self._low_level_execute_command(command, in_data=json.dumps(record, indent=1).encode())
        if out["rc"] != 0:
            why = (out["stderr"] or out["stdout"]).strip()
            raise AnsibleActionFail(f"cannot write the deploy record {path}: {why}")
