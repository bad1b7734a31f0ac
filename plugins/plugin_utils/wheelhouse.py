"""This machine's wheels of a Ray release for a node whose pip reaches no index (the sage_wheelhouse action).

The wheels are built here once per (Ray release, Python, node platform) with `pip download --only-binary` for the
node's platform and Python (this machine's pip and its index), cached under ~/.sage/wheels/, sent with rsync and
installed there with --no-index. Figures (size, time, pip against uv): docs/performance.md.
"""
from __future__ import annotations

import fcntl
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from ansible_collections.sage.cluster.plugins.module_utils.node import WHEELS_DIR as NODE_WHEELS_DIR, telling_line

WHEELS_DIR = Path("~", NODE_WHEELS_DIR)  # this machine's cache, where the nodes keep theirs
# The legacy manylinux names pip knows for these machines (PEP 599): older wheels still name only those.
LEGACY = {"x86_64": ["manylinux2014", "manylinux2010", "manylinux1"], "i686": ["manylinux2014", "manylinux2010",
          "manylinux1"], "aarch64": ["manylinux2014"], "ppc64le": ["manylinux2014"], "s390x": ["manylinux2014"]}


class WheelhouseError(Exception):
    """The wheels could not be built here (one line: why)."""


def platforms(glibc: str, machine: str) -> list[str]:
    """The platform tags a glibc node's pip takes, newest first. pip download --platform takes each as it is
    (it does not widen manylinux_2_36 to the older ones the node also runs), so all are named."""
    try:
        major, minor = (int(n) for n in glibc.split(".")[:2])
    except ValueError:
        raise WheelhouseError(f"glibc {glibc!r} is not a version") from None
    tags = [f"manylinux_{major}_{m}_{machine}" for m in range(minor, 16, -1)]
    return tags + [f"{name}_{machine}" for name in LEGACY.get(machine, []) if minor >= 17]


def wheelhouse_key(ray_version: str, python: str, glibc: str, machine: str) -> str:
    return f"ray-{ray_version}-cp{python.replace('.', '')}-glibc{glibc}-{machine}"


def build_wheelhouse(ray_version: str, python: str, glibc: str | None, machine: str,
                     root: Path | None = None) -> Path:
    """The directory of wheels for ray[default]==ray_version on such a node, built when not yet cached. Parallel
    builders (one per node of a run) take turns; the second finds the first one's."""
    if not glibc:
        raise WheelhouseError("the node has no glibc (musl?): this machine can build wheels for glibc Linux only; "
                              "give the node an index (deploy.pip_args) or install Ray there yourself")
    root = (root or WHEELS_DIR).expanduser()
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    dest = root / wheelhouse_key(ray_version, python, glibc, machine)
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (dest / ".complete").exists():
            return dest
        tmp = Path(tempfile.mkdtemp(dir=root, prefix=".build-"))
        argv = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--quiet",
                "--only-binary=:all:", "--implementation", "cp", "--python-version", python,
                *[arg for tag in platforms(glibc, machine) for arg in ("--platform", tag)],
                "--dest", str(tmp), f"ray[default]=={ray_version}"]
        proc = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False)
        if proc.returncode != 0:
            shutil.rmtree(tmp, ignore_errors=True)
            why = telling_line((proc.stderr or proc.stdout).splitlines(), none=f"exit {proc.returncode}")
            raise WheelhouseError(f"pip download of ray[default]=={ray_version} for Python {python}, glibc {glibc} "
                                  f"{machine} failed here: {why}")
        (tmp / ".complete").touch()
        shutil.rmtree(dest, ignore_errors=True)
        tmp.rename(dest)
    return dest
