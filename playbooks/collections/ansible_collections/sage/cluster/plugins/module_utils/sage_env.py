"""The environment a node's Python tools run in: Ray (role ray_node) and the project's install (role sage_deploy),
and what can be told of that env without starting its Python."""
from __future__ import annotations

import glob
import os
import pwd


def node_env(python_path, conda_env, base=None):
    """PATH starts at python_path's directory; CONDA_PREFIX/CONDA_DEFAULT_ENV as `conda activate` would set
    them, when conda_env is not empty. No activation script runs: hosts without conda work the same."""
    env = dict(os.environ if base is None else base)
    bin_dir = os.path.dirname(python_path)
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "/usr/bin:/bin")
    if conda_env:
        env.update(CONDA_PREFIX=os.path.dirname(bin_dir), CONDA_DEFAULT_ENV=conda_env)
    return env


def env_prefix(python_path):
    # Not resolved: a venv's bin/python is a link to the base Python, whose prefix is not the venv's.
    return os.path.dirname(os.path.dirname(python_path))


def installed_ray(python_path):
    """The Ray releases in python_path's env, read from its dist-info directories (no Python started, so it costs
    a start nothing); [] when none is there (a system Python whose Ray lives elsewhere, say): unknown."""
    pattern = os.path.join(env_prefix(python_path), "lib", "python*", "site-packages", "ray-*.dist-info")
    return sorted({os.path.basename(path)[len("ray-"):-len(".dist-info")] for path in glob.glob(pattern)})


def _user(uid):
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def unwritable_env(python_path):
    """Why pip cannot install into python_path's env as this user (an admin's shared env owned by root), or None."""
    prefix = env_prefix(python_path)
    if not os.path.isdir(prefix) or os.access(prefix, os.W_OK):
        return None
    me = _user(os.geteuid())
    return (f"the env {prefix} belongs to {_user(os.stat(prefix).st_uid)} and {me} cannot write to it, so pip cannot "
            f"install there. Fix: make it {me}'s (chown -R), point remote.python_path at an env of {me}'s own, or "
            "at a path where `sage cluster provision` makes one")
