"""What a deploy's install step must do on a node, decided from the node's deploy record: the pure part of
roles/sage_deploy's sage_install module, shared with its action plugin (which skips the module when nothing is
to be done). Standard library only."""
from __future__ import annotations

import hashlib
import json
import os
import time


def valid_install(install):
    return install in ("auto", "none") or (isinstance(install, list) and bool(install)
                                           and all(isinstance(a, str) and a for a in install))


def plan(p, old):
    """p: the module's parameters; old: the node's record ({} when none). Returns argv (the install command, []
    for none), key (what a successful install is recorded under), needed (the install must run), changed (the
    record changes), record (the record to write) and report (the `deploy` dict of the result)."""
    install = p["install"]
    if install == "auto":
        argv = ([p["python_path"], "-m", "pip", "install", "--disable-pip-version-check", *p["pip_args"],
                 "-e", p["dest"]] if p["packaged"] else [])
        basis = p["packaging_revision"]  # editable: only packaging changes need a new install
    elif install == "none":
        argv, basis = [], ""
    else:
        argv, basis = list(install), p["revision"]  # a command of the project's own: any change runs it again
    key = hashlib.sha256(json.dumps([argv, p["conda_env"], basis]).encode()).hexdigest()[:12]
    if old.get("dest") != p["dest"]:
        old = {}
    last = old.get("install") or {}
    done = bool(last.get("ok") and last.get("key") == key)
    needed = bool(argv) and not done
    record = {"dest": p["dest"], "revision": p["revision"], "deployed_at": time.time(),
              "install": last if done or not argv else {"key": key, "ok": False, "command": argv}}
    report = {"revision": p["revision"], "install_ok": bool(done or not argv),
              "log": os.path.splitext(p["record"])[0] + ".log",
              "install": "would run" if needed else ("skipped" if done else "not needed")}
    return {"argv": argv, "key": key, "needed": needed, "changed": needed or old.get("revision") != p["revision"],
            "record": record, "report": report}
