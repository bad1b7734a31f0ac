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
from ansible.plugins.action import ActionBase
from ansible.utils.vars import merge_hash
from ansible_collections.sage.cluster.plugins.module_utils import detect_env, sage_install_plan
from ansible_collections.sage.cluster.plugins.module_utils.remote_shell import shell_path

# Every parameter the decision reads; the role always passes them all.
PLANNED = ("dest", "install", "pip_args", "python_path", "conda_env", "packaged", "revision", "packaging_revision",
           "record")


class ActionModule(ActionBase):
    _supports_check_mode = True

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        args = self._task.args
        # A detected Python (`auto`) is the module's to find: it decides then.
        if (not self._task.check_mode and all(k in args for k in PLANNED) and args["python_path"] != detect_env.AUTO
                and sage_install_plan.valid_install(args["install"])):
            path = shell_path(args["record"])
            out = self._low_level_execute_command(f"cat -- {path} 2>/dev/null; exit 0")
            try:
                old = json.loads(out["stdout"]) if out["rc"] == 0 and out["stdout"].strip() else {}
            except ValueError:
                old = {}
            planned = sage_install_plan.plan(args, old if isinstance(old, dict) else {})
            if not planned["needed"]:
                if planned["changed"]:
                    self._write_record(path, planned["record"])
                result.update(changed=planned["changed"], sage={"deploy": planned["report"]})
                return result
        # The module's remote tmp dir (none with pipelining) goes in ActionBase.cleanup(), which the executor calls.
        return merge_hash(result, self._execute_module(task_vars=task_vars))

    def _write_record(self, path, record):
        """As the module's write_record: its directory 0700, the file 0600, replaced whole (a temp file, then mv)."""
        command = (f"umask 077 && dir=$(dirname -- {path}) && mkdir -p -- \"$dir\" && "
                   f"tmp=$(mktemp -- \"$dir/.deploy.XXXXXX\") && cat > \"$tmp\" && mv -f -- \"$tmp\" {path}")
        out = self._low_level_execute_command(command, in_data=json.dumps(record, indent=1).encode())
        if out["rc"] != 0:
            why = (out["stderr"] or out["stdout"]).strip()
            raise AnsibleActionFail(f"cannot write the deploy record {path}: {why}")
