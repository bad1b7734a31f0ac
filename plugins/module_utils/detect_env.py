"""python_path / ray_command `auto`: the node finds its own Ray env (roles ray_node and sage_deploy alike).

The conda env named conda_env in conda's own base (CONDA_EXE, or `conda` on the login PATH) or one of the usual
bases; `base` is a base itself. Without one, the first python3 on the login PATH that imports Ray. ray_command is
the `ray` beside that Python. What was found is kept in node.ENV_RECORD on the node until its Python stops
existing, so a command costs no detection after the first.

Standard library only; the finding takes the filesystem root, home, PATH and environ as arguments (and the test
of whether a Python imports Ray as a function), so tests/unit/test_detect_env.py runs it on a fake tree.
"""
from __future__ import annotations

import os
import subprocess

from ansible_collections.sage.cluster.plugins.module_utils.node import ENV_RECORD, read_json, write_json

AUTO = "auto"
# Where conda is usually installed when it is not on PATH; ~ is the node user's home.
USUAL_BASES = ("~/miniconda3", "~/anaconda3", "~/miniforge3", "~/mambaforge", "/opt/conda", "/opt/miniconda3",
               "/opt/anaconda3")
# The login shell's PATH and CONDA_EXE, after a marker line (a chatty profile may print before it).
LOGIN_MARKER = "--- sage login env"
LOGIN_SCRIPT = f"printf '\\n%s\\n%s\\n%s\\n' '{LOGIN_MARKER}' \"$PATH\" \"${{CONDA_EXE:-}}\""


class NotFound(Exception):
    """Nothing found; the message is one line naming where it looked."""


def _in(root, path):
    """path on the node, as seen from root (/ on the node itself, a fake tree in tests)."""
    return os.path.join(root, path.lstrip("/"))


def _executable(root, path):
    return os.path.isfile(_in(root, path)) and os.access(_in(root, path), os.X_OK)


def conda_bases(home, path, environ, root="/"):
    """The conda bases to look in, in order: conda's own (CONDA_EXE, else `conda` on path), then the usual ones."""
    bases = []
    conda = environ.get("CONDA_EXE") or next(
        (os.path.join(d, "conda") for d in path.split(os.pathsep)
         if d.startswith("/") and _executable(root, os.path.join(d, "conda"))), None)
    if conda:
        # <base>/bin/conda or <base>/condabin/conda, maybe behind a symlink (/usr/local/bin/conda).
        real = os.path.realpath(_in(root, conda))
        bases.append(os.path.join("/", os.path.relpath(os.path.dirname(os.path.dirname(real)),
                                                       os.path.realpath(root))))
    for base in USUAL_BASES:
        base = home + base[1:] if base.startswith("~/") else base
        if base not in bases:
            bases.append(base)
    return bases


def find(conda_env, home, path, environ, imports_ray, root="/"):
    """{python_path, ray_command, conda_env (the env found, "" for none), found (how)}, or NotFound.

    imports_ray(python): whether that Python (a path on the node) imports Ray."""
    looked = []
    if conda_env:
        for base in conda_bases(home, path, environ, root):
            env = base if conda_env == "base" else os.path.join(base, "envs", conda_env)
            for name in ("python", "python3"):
                if _executable(root, os.path.join(env, "bin", name)):
                    return {"python_path": os.path.join(env, "bin", name),
                            "ray_command": os.path.join(env, "bin", "ray"), "conda_env": conda_env,
                            "found": f"conda env {conda_env} at {env}"}
            looked.append(env)
    for d in path.split(os.pathsep):
        python = os.path.join(d, "python3")
        if d.startswith("/") and _executable(root, python) and imports_ray(python):
            return {"python_path": python, "ray_command": os.path.join(d, "ray"), "conda_env": "",
                    "found": f"python3 on PATH with Ray at {d}"}
    where = f"no conda env {conda_env!r} in {', '.join(looked)}; " if conda_env else ""
    raise NotFound(f"python_path auto: {where}no python3 that imports Ray on the login PATH {path}; "
                   "install the env there, or set python_path and ray_command in the config")


def resolve(python_path, ray_command, conda_env, find_env):
    """The paths a node uses: explicit ones as they are, `auto` ones found (find_env(), called only if needed).
    Returns {python_path, ray_command, conda_env, found}; found is None when nothing was detected."""
    if python_path != AUTO and ray_command != AUTO:
        return {"python_path": python_path, "ray_command": ray_command, "conda_env": conda_env, "found": None}
    if python_path != AUTO:  # only ray auto: the one beside the given Python
        ray = os.path.join(os.path.dirname(python_path), "ray") if python_path else ray_command
        return {"python_path": python_path, "ray_command": ray, "conda_env": conda_env,
                "found": f"beside {python_path}"}
    found = find_env()
    if ray_command != AUTO:
        found = dict(found, ray_command=ray_command)
    return found


# --- on the node itself ---

def imports_ray(python):
    """Whether python finds the ray package, without importing it (a fraction of the import's time)."""
    try:
        return subprocess.run([python, "-I", "-c", "import importlib.util, sys; "
                               "sys.exit(importlib.util.find_spec('ray') is None)"],
                              stdin=subprocess.DEVNULL, capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def login_env():
    """(PATH, environ) as the user's login shell has them; this process's own when that shell says nothing."""
    environ = dict(os.environ)
    shell = environ.get("SHELL") or "/bin/sh"
    try:
        out = subprocess.run([shell, "-lc", LOGIN_SCRIPT], stdin=subprocess.DEVNULL, capture_output=True,
                             text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        out = ""
    _, marker, rest = out.rpartition(LOGIN_MARKER + "\n")
    if marker:
        path, _, conda_exe = rest.partition("\n")
        conda_exe = conda_exe.strip()
        if conda_exe:
            environ["CONDA_EXE"] = conda_exe
        return path or environ.get("PATH", ""), environ
    return environ.get("PATH", ""), environ


def read_cache(conda_env, cache=ENV_RECORD):
    """The cached finding for conda_env, or None when there is none or its Python stopped existing."""
    kept = read_json(cache)
    try:
        if kept.get("asked") == conda_env and _executable("/", kept["python_path"]):
            return {k: kept[k] for k in ("python_path", "ray_command", "conda_env", "found")}
    except (KeyError, TypeError, AttributeError):
        pass
    return None


def write_cache(conda_env, found, cache=ENV_RECORD):
    """Keep a finding (best effort: a node whose home cannot take it detects again next time). One key a line:
    ray_node's status probe reads python_path with sed."""
    try:
        write_json(cache, dict(found, asked=conda_env), indent=0, sort_keys=True)
    except OSError:
        pass


def find_here(conda_env, cache=ENV_RECORD):
    """find() on this node, through the cache."""
    kept = read_cache(conda_env, cache)
    if kept is not None:
        return kept
    path, environ = login_env()
    found = find(conda_env, os.path.expanduser("~"), path, environ, imports_ray)
    write_cache(conda_env, found, cache)
    return found


def resolve_here(python_path, ray_command, conda_env, cache=ENV_RECORD):
    return resolve(python_path, ray_command, conda_env, lambda: find_here(conda_env, cache))
