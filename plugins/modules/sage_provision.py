#!/usr/bin/python
# Copyright: sage-cluster developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ansible module: the controller's Ray in a node's env, the env made (a venv) when it does not exist."""
from __future__ import annotations

DOCUMENTATION = r"""
module: sage_provision
short_description: The controller's Ray release in a node's Python env, a venv made when the env is missing
description:
  - C(stage=prepare) looks at the env of C(python_path). When it does not run, it makes a venv there from a Python
    of C(python_version) found on the node (C(pythonX.Y), C(/usr/bin/python3), a conda base) and fails, naming the
    version, when there is none. An env of another Python fails; one the user cannot write fails when Ray must be
    installed. Returns what the env needs and the node's platform (for wheels built elsewhere).
  - C(stage=install) installs C(ray[default]==ray_version) with the env's pip, from the node's index
    (C(pip_args) carry the user's own), or with C(wheel_dir) from those wheels only (C(--no-index)). When the
    node's index cannot give the release, it returns C(index_failed) instead of failing, so the wheels can be sent.
  - Nodes sharing one env (NFS) take turns through a lock file in the env; an env another node already brought to
    the release is not touched again.
  - Check mode reports what would change.
extends_documentation_fragment:
  - sage.cluster.attributes
  - sage.cluster.install_timeout
attributes:
  check_mode:
    details: Reports what would be done (a venv made, Ray installed), and changes nothing.
  action:
    details:
      - The action plugin fills in the controller's Ray release and Python, and at the prepare stage looks at the
        env with one shell command first; an env already right starts no module on the node.
  platform:
    details: Linux.
options:
  stage:
    description: prepare (look, make the venv) or install (Ray).
    type: str
    choices: [prepare, install]
    default: prepare
  python_path:
    description: The env's Python (absolute). Its env is the directory above its bin/.
    type: path
    required: true
  conda_env:
    description: Conda env name for CONDA_DEFAULT_ENV while pip runs; empty for none.
    type: str
    default: ""
  ray_version:
    description: The Ray release every node must run (the controller's).
    type: str
    required: true
  python_version:
    description: The cluster's Python, major.minor (the controller's).
    type: str
    required: true
  pip_args:
    description: Extra pip arguments (an index of the user's own).
    type: list
    elements: str
    default: []
  wheel_dir:
    description: Install from these wheels only (C(--no-index --find-links)); empty for the node's index.
    type: path
    default: ""
  log:
    description: pip's output goes here (on the node).
    type: path
    default: ~/.sage/provision.log
"""

EXAMPLES = r"""
- name: Ray 2.60.0 in the node's env
  sage_provision:
    stage: prepare
    python_path: /home/sage/envs/ray/bin/python
    ray_version: 2.60.0
    python_version: "3.11"
"""

RETURN = r"""
sage:
  description: Under C(provision), the env's python and ray (after this stage), ray_wanted, python_wanted, needed
    (Ray must be installed), summary (what was or would be done), and from prepare glibc and machine; from install
    source (index or wheels) and index_failed.
  returned: always
  type: dict
"""

import os
import platform
import shutil
import subprocess

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.sage.cluster.plugins.module_utils.detect_env import USUAL_BASES
from ansible_collections.sage.cluster.plugins.module_utils.node import (
    PROVISION_LOG, run_logged, telling_line, versions)
from ansible_collections.sage.cluster.plugins.module_utils.sage_env import env_prefix, node_env, unwritable_env
from ansible_collections.sage.cluster.plugins.module_utils.sage_env_lock import EnvLock
from ansible_collections.sage.cluster.plugins.module_utils.sage_provision import report

# pip's words when the node's index cannot give the release (unreachable, or without it): then wheels are sent.
INDEX_FAILED = ("No matching distribution found", "Could not find a version that satisfies")


def probe(python):
    """The env's {python, ray}, or None when that Python does not run."""
    return versions(python)[0]


def candidates(version):
    names = [shutil.which(f"python{version}"), f"/usr/bin/python{version}", f"/usr/local/bin/python{version}",
             "/usr/bin/python3", shutil.which("python3")]
    names += [os.path.expanduser(f"{base}/bin/python") for base in USUAL_BASES]
    seen, out = set(), []
    for name in names:
        if name and os.access(name, os.X_OK) and os.path.realpath(name) not in seen:
            seen.add(os.path.realpath(name))
            out.append(name)
    return out


def base_python(version):
    """A Python of `version` that can make a venv: (path, full version), or (None, what was found)."""
    looked = []
    for name in candidates(version):
        proc = subprocess.run([name, "-c", "import sys, venv, ensurepip; print('%d.%d.%d' % sys.version_info[:3])"],
                              capture_output=True, text=True, stdin=subprocess.DEVNULL)
        found = proc.stdout.strip()
        if proc.returncode == 0 and found.rsplit(".", 1)[0] == version:
            return name, found
        looked.append(f"{name} ({found or 'no venv module'})")
    return None, "; ".join(looked) or "no python3"


def node_platform():
    libc = os.confstr("CS_GNU_LIBC_VERSION") if hasattr(os, "confstr") else None
    return {"glibc": libc.split()[-1] if libc and libc.startswith("glibc") else None, "machine": platform.machine()}


def prepare(module, p, prefix):
    found = probe(p["python_path"])
    state, error = report(found, p["ray_version"], p["python_version"], **node_platform())
    if error:
        module.fail_json(msg=error, sage={"provision": state})
    if found is not None:
        writable_or_fail(module, p, state)
        module.exit_json(changed=False, sage={"provision": state})
    base, what = base_python(p["python_version"])
    if base is None:
        module.fail_json(msg=f"no Python {p['python_version']} with its venv module on this node (found: {what}): "
                             f"install one (Debian/Ubuntu: apt install python{p['python_version']}-venv), or point "
                             f"remote.python_path at an env of Python {p['python_version']}", sage={"provision": state})
    state["summary"] = f"create a venv from {base} ({what}), install ray[default]=={p['ray_version']}"
    if module.check_mode:
        module.exit_json(changed=True, sage={"provision": dict(state, summary="would " + state["summary"])})
    try:
        os.makedirs(prefix, exist_ok=True)
    except OSError as exc:
        module.fail_json(msg=f"cannot make the env {prefix}: {exc.strerror}: choose a remote.python_path under a "
                             "directory the user may write", sage={"provision": state})
    with EnvLock(module, prefix, p["timeout"], "deploy.install_timeout", sage={"provision": state}):
        if probe(p["python_path"]) is None:  # another node sharing the env may have made it meanwhile
            proc = subprocess.run([base, "-m", "venv", prefix], capture_output=True, text=True,
                                  stdin=subprocess.DEVNULL)
            if proc.returncode != 0:
                why = telling_line((proc.stderr or proc.stdout).splitlines())
                module.fail_json(msg=f"{base} -m venv {prefix} failed: {why}",
                                 sage={"provision": state})
    found = probe(p["python_path"])
    if found is None:
        module.fail_json(msg=f"the venv at {prefix} has no {p['python_path']}: remote.python_path must be "
                             f"{prefix}/bin/python (or python3)", sage={"provision": state})
    state.update(python=found["python"], summary=f"venv from {base}")
    module.exit_json(changed=True, sage={"provision": state})


def writable_or_fail(module, p, state):
    if state["needed"] and (why := unwritable_env(p["python_path"])):
        module.fail_json(msg=why, sage={"provision": state})


def install(module, p, prefix):
    state, error = report(probe(p["python_path"]), p["ray_version"], p["python_version"])
    if error:
        module.fail_json(msg=error, sage={"provision": state})
    if not state["needed"]:
        module.exit_json(changed=False, sage={"provision": state})
    writable_or_fail(module, p, state)
    if module.check_mode:
        module.exit_json(changed=True, sage={"provision": dict(state, summary="would " + state["summary"])})
    source = "wheels from the controller" if p["wheel_dir"] else "the node's index"
    # Offline: only the wheels. Online: no retries, so an index that cannot be reached costs seconds, not minutes.
    where = ["--no-index", "--find-links", p["wheel_dir"]] if p["wheel_dir"] else ["--retries", "0", "--timeout", "20"]
    argv = [p["python_path"], "-m", "pip", "install", "--disable-pip-version-check", *p["pip_args"], *where,
            f"ray[default]=={p['ray_version']}"]
    with EnvLock(module, prefix, p["timeout"], "deploy.install_timeout", sage={"provision": state}):
        again, _ = report(probe(p["python_path"]), p["ray_version"], p["python_version"])
        if not again["needed"]:  # another node sharing the env installed it meanwhile
            module.exit_json(changed=False, sage={"provision": dict(again, summary=again["summary"] + " (shared env)")})
        rc, _, output = run_logged(argv, p["log"], p["timeout"], str(argv),
                                   env=node_env(p["python_path"], p["conda_env"]))
    if rc != 0 and not p["wheel_dir"] and any(words in output for words in INDEX_FAILED):
        module.exit_json(changed=False, sage={"provision": dict(state, index_failed=True,
                                                                summary="the node's index has no such release")})
    done, _ = report(probe(p["python_path"]), p["ray_version"], p["python_version"])
    if rc != 0 or done["needed"]:
        why = "timed out" if rc is None else f"exit {rc}"
        module.fail_json(msg=f"pip install ray[default]=={p['ray_version']} from {source} failed ({why}): "
                             f"{telling_line(output.splitlines())} (log on the node: {p['log']})",
                         sage={"provision": state})
    module.exit_json(changed=True, sage={"provision": dict(done, summary=f"{state['summary']} ({source})",
                                                           source=source)})


def main():
    module = AnsibleModule(argument_spec=dict(
        stage=dict(type="str", choices=["prepare", "install"], default="prepare"),
        python_path=dict(type="path", required=True),
        conda_env=dict(type="str", default=""),
        ray_version=dict(type="str", required=True),
        python_version=dict(type="str", required=True),
        pip_args=dict(type="list", elements="str", default=[]),
        wheel_dir=dict(type="path", default=""),
        log=dict(type="path", default=PROVISION_LOG),
        timeout=dict(type="int", default=1200),
    ), supports_check_mode=True)
    p = module.params
    if not os.path.isabs(p["python_path"]):
        module.fail_json(msg=f"remote.python_path must be an absolute path for provision, not {p['python_path']!r}: "
                             "it names where the env is, or is to be made")
    prefix = env_prefix(p["python_path"])
    (prepare if p["stage"] == "prepare" else install)(module, p, prefix)


if __name__ == "__main__":
    main()
