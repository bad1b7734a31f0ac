"""The environment a node's Python tools run in: Ray (role ray_node) and the project's install (role sage_deploy)."""
from __future__ import annotations

import os


def node_env(python_path, conda_env, base=None):
    """PATH starts at python_path's directory; CONDA_PREFIX/CONDA_DEFAULT_ENV as `conda activate` would set
    them, when conda_env is not empty. No activation script runs: hosts without conda work the same."""
    env = dict(os.environ if base is None else base)
    bin_dir = os.path.dirname(python_path)
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "/usr/bin:/bin")
    if conda_env:
        env.update(CONDA_PREFIX=os.path.dirname(bin_dir), CONDA_DEFAULT_ENV=conda_env)
    return env
