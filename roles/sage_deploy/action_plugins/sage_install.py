"""sage_install, controller side: a deploy that installs nothing on a node starts no module there.

The node's deploy record is read with one `cat`; when module_utils/sage_install_plan.py (the module's own
decision) finds nothing to install, that is the result, and a changed record (new code, same packaging) is
written with one fixed shell command, the record on stdin. Otherwise, and in check mode, the module runs. A
deploy of code changes, or of none, so saves a Python start per node (about 0.35 s of CPU each).
"""
from __future__ import annotations

import importlib.util
import json
import shlex
from pathlib import Path

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase
from ansible.utils.vars import merge_hash

# Every parameter the decision reads; the role always passes them all.
PLANNED = ("dest", "install", "pip_args", "python_path", "conda_env", "packaged", "revision", "packaging_revision",
           "record")


def _plan_logic():
    path = Path(__file__).resolve().parent.parent / "module_utils" / "sage_install_plan.py"
    spec = importlib.util.spec_from_file_location("sage_install_plan", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class ActionModule(ActionBase):
    _supports_check_mode = True

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        args = self._task.args
        logic = _plan_logic()
        if not self._task.check_mode and all(k in args for k in PLANNED) and logic.valid_install(args["install"]):
            record = args["record"]
            path = '"$HOME"/' + shlex.quote(record[2:]) if record.startswith("~/") else shlex.quote(record)
            out = self._low_level_execute_command(f"cat -- {path} 2>/dev/null; exit 0")
            try:
                old = json.loads(out["stdout"]) if out["rc"] == 0 and out["stdout"].strip() else {}
            except ValueError:
                old = {}
            planned = logic.plan(args, old if isinstance(old, dict) else {})
            if not planned["needed"]:
                if planned["changed"]:
                    self._write_record(path, planned["record"])
                result.update(changed=planned["changed"], sage={"deploy": planned["report"]})
                return result
        result = merge_hash(result, self._execute_module(task_vars=task_vars))
        self._remove_tmp_path(self._connection._shell.tmpdir)
        return result

    def _write_record(self, path, record):
        """As the module's write_record: its directory 0700, the file 0600, replaced whole (a temp file, then mv)."""
        command = (f"umask 077 && dir=$(dirname -- {path}) && mkdir -p -- \"$dir\" && "
                   f"tmp=$(mktemp -- \"$dir/.deploy.XXXXXX\") && cat > \"$tmp\" && mv -f -- \"$tmp\" {path}")
        out = self._low_level_execute_command(command, in_data=json.dumps(record, indent=1).encode())
        if out["rc"] != 0:
            raise AnsibleActionFail(f"cannot write the deploy record {path}: {(out['stderr'] or out['stdout']).strip()}")
