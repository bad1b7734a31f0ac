"""What a node's env needs, decided from one look at it: the pure part of plugins/modules/sage_provision.py, shared
with plugins/action/sage_provision.py (which looks with one fixed shell command and starts no module when the env is
already right). Standard library only."""
from __future__ import annotations

import re

from ansible_collections.sage.cluster.plugins.module_utils.node import VERSIONS

# The probe through a shell with no value in its text: the env's Python comes on stdin.
PROBE_COMMAND = "IFS= read -r py; \"$py\" -c '" + VERSIONS.replace("'", "'\"'\"'") + "' 2>/dev/null; exit 0"


def minor(version):
    return ".".join(str(version).split(".")[:2])


def _release(version):
    return tuple(int(n) for n in re.findall(r"\d+", version.split("+")[0])[:3])


def verdict(found, ray_version, python_version):
    """found: the probe's answer ({python, ray}), None when the env does not run. Returns (needed, summary, error):
    error (a one-line reason the env cannot be used) or whether Ray must be installed, and what that means."""
    if found is None:
        return True, f"create a venv, install ray[default]=={ray_version}", None
    if minor(found["python"]) != python_version:
        return False, "", (f"the env's Python is {found['python']}, the cluster's is {python_version}: point "
                           f"remote.python_path at a Python {python_version} env, or remove this env and provision "
                           f"again (a venv is then made from a Python {python_version} of the node)")
    have = found.get("ray")
    if have == ray_version:
        return False, f"ray {have}, python {found['python']}", None
    if not have:
        return True, f"install ray[default]=={ray_version}", None
    way = "upgrade" if _release(have) < _release(ray_version) else "downgrade"
    return True, f"{way} ray {have} -> {ray_version}", None


def report(found, ray_version, python_version, **more):
    """The `provision` dict of a result: the env's versions and what it needs (for the action and the module)."""
    needed, summary, error = verdict(found, ray_version, python_version)
    return dict({"python": (found or {}).get("python"), "ray": (found or {}).get("ray"), "ray_wanted": ray_version,
                 "python_wanted": python_version, "needed": needed, "summary": summary}, **more), error
