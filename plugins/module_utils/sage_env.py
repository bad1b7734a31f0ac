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


# What to do about an env the SSH user cannot write ({user}: that user); doctor gives it as its row's fix.
UNWRITABLE_FIX = ("make it {user}'s (chown -R), point remote.python_path at an env of {user}'s own, or at a path "
                  "where `sage cluster provision` makes one")


def unwritable(python_path):
    """What stops pip from installing into python_path's env as this user (an admin's shared env owned by root),
    or None: the env exists and this user cannot write to it."""
    prefix = env_prefix(python_path)
    if not os.path.isdir(prefix) or os.access(prefix, os.W_OK):
        return None
    return f"the env {prefix} belongs to {_user(os.stat(prefix).st_uid)} and {_user(os.geteuid())} cannot write to it"


def unwritable_env(python_path):
    """unwritable()'s line with what follows for an install, and the fix; None when the env can take one."""
    why = unwritable(python_path)
    return why and f"{why}, so pip cannot install there. Fix: " + UNWRITABLE_FIX.format(user=_user(os.geteuid()))
