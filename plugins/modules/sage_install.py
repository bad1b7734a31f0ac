#!/usr/bin/python
# Copyright: sage-cluster developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ansible module: make the deployed project usable on a node: install it into the node's env when needed."""
from __future__ import annotations

DOCUMENTATION = r"""
module: sage_install
short_description: Install a deployed project into a node's Python env, only when something that matters changed
description:
  - Runs after the copy. Decides from the node's deploy record whether the install must run, runs it as an
    argument list (never through a shell) with the env Ray uses, and records the outcome.
  - C(install=auto) runs C(python_path -m pip install [pip_args] -e dest) when the source is a pip project
    (C(packaged)). Editable, so that a deploy that changes only code needs no new install; the env points at
    C(dest), which the copy keeps current. It runs again when C(packaging_revision) (pyproject.toml, setup.py,
    setup.cfg, requirements.txt) changed.
  - A command list runs in C(dest) and runs again whenever C(revision) (any deployed file) changed.
  - Either way it runs again after a failed or interrupted install, and when the command or env changed.
  - Nodes that share one env (NFS) take turns through a lock file in the env; an auto install that another
    node already made into the same env is not repeated.
extends_documentation_fragment:
  - sage.cluster.attributes
  - sage.cluster.install_timeout
attributes:
  action:
    details:
      - The action plugin reads the node's deploy record with one shell command and, when nothing needs installing,
        answers without starting the module on the node.
  check_mode:
    details: Reports whether the install would run, and installs nothing.
  platform:
    details: Linux.
options:
  dest:
    description: The project directory on the node (the copy's destination, or the source on the controller).
    type: path
    required: true
  install:
    description: C(auto), C(none), or the command as a list of arguments.
    type: raw
    default: auto
  pip_args:
    description: Extra arguments for pip in C(auto), e.g. an index or C(--no-index --find-links DIR).
    type: list
    elements: str
    default: []
  python_path:
    description:
      - The env's Python; its directory starts PATH.
      - V(auto) finds it on the node (module_utils/detect_env.py), as the conda env O(conda_env) in conda's own base
        or a usual one (C(~/miniconda3), C(~/anaconda3), C(~/miniforge3), C(~/mambaforge), C(/opt/conda),
        C(/opt/miniconda3), C(/opt/anaconda3)), else the first C(python3) on the login PATH that imports Ray;
        kept in C(~/.sage/env.json) until that Python stops existing. Nothing found fails the node when the
        install needs a Python.
    type: path
    required: true
  conda_env:
    description: Conda env name for CONDA_DEFAULT_ENV; empty for none.
    type: str
    default: ""
  packaged:
    description: Whether the source has pyproject.toml or setup.py (C(auto) installs only then).
    type: bool
    default: false
  revision:
    description: Content hash of the deployed files (from the sage_source action).
    type: str
    default: ""
  packaging_revision:
    description: Content hash of the packaging files.
    type: str
    default: ""
  record:
    description: The node's deploy record (JSON); the install log is written beside it (.log).
    type: path
    default: ~/.sage/deploy.json
"""

EXAMPLES = r"""
- name: Install the project when it changed
  sage_install:
    dest: /home/sage
    install: auto
    python_path: /opt/conda/envs/sage/bin/python
    packaged: true
    revision: 3f2a9c1e0b7d
    packaging_revision: 77aa01c2d3e4
"""

RETURN = r"""
sage:
  description: What the node now runs, under C(deploy).
  returned: always
  type: dict
  contains:
    deploy:
      description: revision, install (ran, skipped, not needed, would run, failed), install_ok, log.
      type: dict
"""

import os
import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.sage.cluster.plugins.module_utils.detect_env import AUTO, NotFound, resolve_here
from ansible_collections.sage.cluster.plugins.module_utils.node import (
    DEPLOY_RECORD, read_json, run_logged, telling_line, write_json)
from ansible_collections.sage.cluster.plugins.module_utils.sage_env import env_prefix, node_env, unwritable_env
from ansible_collections.sage.cluster.plugins.module_utils.sage_env_lock import EnvLock
from ansible_collections.sage.cluster.plugins.module_utils.sage_install_plan import plan, valid_install


def main():
    module = AnsibleModule(argument_spec=dict(
        dest=dict(type="path", required=True),
        install=dict(type="raw", default="auto"),
        pip_args=dict(type="list", elements="str", default=[]),
        python_path=dict(type="path", required=True),
        conda_env=dict(type="str", default=""),
        packaged=dict(type="bool", default=False),
        revision=dict(type="str", default=""),
        packaging_revision=dict(type="str", default=""),
        record=dict(type="path", default=DEPLOY_RECORD),
        timeout=dict(type="int", default=1200),
    ), supports_check_mode=True)
    p = module.params
    if not valid_install(p["install"]):
        module.fail_json(msg=f"install must be auto, none or a command list, not {p['install']!r}")
    if p["python_path"] == AUTO:
        try:
            found = resolve_here(AUTO, None, p["conda_env"])
            p.update(python_path=found["python_path"], conda_env=found["conda_env"])
        except NotFound as exc:
            if p["install"] != "none" and (p["install"] != "auto" or p["packaged"]):
                module.fail_json(msg=str(exc), sage={"deploy": {"install": "failed"}})
    planned = plan(p, read_json(p["record"]))
    argv, key, needed, record, report = (planned[k] for k in ("argv", "key", "needed", "record", "report"))
    log_path, install, changed = report["log"], p["install"], planned["changed"]
    # Before the lock (a file in the env) and before the check's "would run": pip's own Permission denied says less.
    if needed and (why := unwritable_env(p["python_path"])):
        module.fail_json(msg=why, sage={"deploy": dict(report, install="failed")})
    if module.check_mode or not needed:
        if changed and not module.check_mode:
            write_json(p["record"], record, indent=1)
        module.exit_json(changed=changed, sage={"deploy": report})

    write_json(p["record"], record, indent=1)  # a crash from here on leaves "not ok": the next deploy installs again
    prefix = env_prefix(p["python_path"])
    marker = os.path.join(prefix, ".sage-installed-" + key)
    with EnvLock(module, prefix, p["timeout"], "deploy.install_timeout", sage={"deploy": {"install": "failed"}}):
        shared = install == "auto" and os.path.exists(marker)  # another node installed the same into this env
        rc, output = (0, "") if shared else run(module, argv, p, log_path)
        if rc == 0 and install == "auto" and not shared:
            try:
                open(marker, "w").close()
            except OSError:
                pass
    record["install"] = {"key": key, "ok": rc == 0, "rc": rc, "command": argv, "at": time.time()}
    write_json(p["record"], record, indent=1)
    report.update(install="shared env" if shared else "ran", install_ok=rc == 0)
    if rc != 0:
        why = f"timed out after {p['timeout']} s" if rc is None else f"exit {rc}"
        module.fail_json(msg=f"install failed ({why}): {telling_line(output.splitlines())} (log on the node: "
                             f"{log_path})",
                         sage={"deploy": dict(report, install="failed")})
    module.exit_json(changed=True, sage={"deploy": report})


def run(module, argv, p, log_path):
    """The install's exit code (None when it timed out) and output, which a fresh log keeps."""
    try:
        rc, _seconds, output = run_logged(argv, log_path, p["timeout"], f"in {p['dest']}: {argv}",
                                          env=node_env(p["python_path"], p["conda_env"]), cwd=p["dest"], fresh=True)
    except OSError as exc:
        how = "not found" if isinstance(exc, FileNotFoundError) else "is not executable"
        module.fail_json(msg=f"install command {argv[0]!r} {how} (run in {p['dest']}; config deploy.install)",
                         sage={"deploy": {"install": "failed"}})
    return rc, output


if __name__ == "__main__":
    main()
