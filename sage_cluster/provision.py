"""`sage cluster provision`: this machine's Ray in every node's env (playbooks/provision.yml, roles/sage_provision),
and what the controller does for it: the wheels for nodes whose pip reaches no index, and the run's verdict on
Python versions.

The wheels are built here once per (Ray release, Python, node platform) with `pip download --only-binary` for the
node's platform and Python (this machine's pip and its index), cached under ~/.sage/wheels/, sent with rsync and
installed there with --no-index. Measured for ray[default]==2.60.0, cp311, glibc 2.36 x86_64: 57 wheels, 108 MB,
about 25 s from PyPI.

The installer is the env's own pip. Measured here, those 57 wheels into a fresh venv, offline: pip 17.6 s, uv 4.7 s;
uv would be a 37 MB binary per platform sent to every node, for 13 s once per node and Ray release (a provision
with nothing to do runs no installer at all).
"""
from __future__ import annotations

import fcntl
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from ansible_collections.sage.cluster.plugins.module_utils import ray_node
from sage_cluster import operations
from sage_cluster import report, sshsetup
from sage_cluster.config import STATE_DIR, Config, Endpoint, is_this_machine
from sage_cluster.lock import cluster_lock
from sage_cluster.runner import RunResult

WHEELS_DIR = STATE_DIR / "wheels"
MATCH_LEVEL_ENV = "RAY_DEFAULT_PYTHON_VERSION_MATCH_LEVEL"  # Ray's own: "minor" lets 3.11.2 and 3.11.7 meet
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
        proc = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if proc.returncode != 0:
            shutil.rmtree(tmp, ignore_errors=True)
            lines = [ln.strip() for ln in (proc.stderr or proc.stdout).splitlines() if ln.strip()]
            raise WheelhouseError(f"pip download of ray[default]=={ray_version} for Python {python}, glibc {glibc} "
                                  f"{machine} failed here: {lines[-1] if lines else 'exit %d' % proc.returncode}")
        (tmp / ".complete").touch()
        shutil.rmtree(dest, ignore_errors=True)
        tmp.rename(dest)
    return dest


def provision(invocation: operations.Invocation, endpoints: list[Endpoint], wheelhouse: bool) -> tuple[Config, RunResult]:
    cfg = operations.load(invocation)
    names = targets(cfg, endpoints)
    with cluster_lock(cfg.path):
        return cfg, operations.run(cfg, invocation, "provision.yml", "provision", limit=",".join(names) if endpoints else None,
                            extra={"sage_provision_wheelhouse": True} if wheelhouse else None)


def targets(cfg: Config, endpoints: list[Endpoint]) -> list[str]:
    """Every node (this machine too, when it is one), or those named."""
    local = [ep.host for ep in [cfg.head_endpoint, *cfg.workers] if is_this_machine(ep.host)]
    named_local = [ep.host for ep in endpoints if is_this_machine(ep.host)]
    remote = [ep for ep in endpoints if not is_this_machine(ep.host)]
    if endpoints:
        return named_local + (sshsetup.targets(cfg, remote) if remote else [])
    return local + sshsetup.targets(cfg, [])


def python_note(result: RunResult, match: str) -> str | None:
    """When the nodes' (and this machine's) Pythons differ at the patch level, what that means for Ray, under
    remote.python_version_match (match)."""
    seen: dict[str, list[str]] = {}
    for name, h in sorted(result.hosts.items()):
        version = (h.data.get("provision") or {}).get("python")
        if version:
            seen.setdefault(version, []).append(name)
    mine = platform.python_version()
    if not seen or (len(seen) == 1 and mine in seen):
        return None
    where = "; ".join(f"{v} on {', '.join(hosts)}" for v, hosts in sorted(seen.items()))
    driver = (f"a Ray driver started here needs {MATCH_LEVEL_ENV}=minor (sage's own commands and `sage job` do "
              "not start one here)")
    if len(seen) == 1:
        return f"Python {where}, {mine} on this machine: {driver}."
    if match == "minor":
        return (f"Python differs at the patch level: {where} (this machine: {mine}). The nodes start with Ray's "
                f"minor-level matching (remote.python_version_match: minor), so they form one cluster; {driver}.")
    return (f"Python differs at the patch level: {where} (this machine: {mine}), and remote.python_version_match "
            "is patch: Ray will refuse the nodes whose release is not the head's. Fix: set it to minor (the "
            "default), or give every node the same Python.")


def next_steps(cfg: Config, result: RunResult) -> list[str]:
    """For hosts a run failed on because the machine is still bare: which command makes it a node."""
    ports = {ep.host: ep.port for ep in [cfg.head_endpoint, *cfg.workers]}
    lines = []
    for name in sshsetup.failed_logins(result):
        lines.append(f"{name}: key login fails: `sage cluster setup-ssh {name}:{ports.get(name, 22)}` sets it up "
                     "with the password once")
    for name, h in sorted(result.hosts.items()):
        if h.failed and "cannot run the remote Python" in h.error:
            lines.append(f"{name}: no env at remote.python_path: `sage cluster provision {name}:{ports.get(name, 22)}` "
                         "makes one with this machine's Ray")
        elif h.failed and ray_node.RAY_DRIFT in h.error:
            lines.append(f"{name}: another Ray release: `sage cluster provision {name}:{ports.get(name, 22)}` gives it "
                         "this machine's")
    return lines


def rows(result: RunResult) -> list[dict[str, Any]]:
    """Per host: result, the env's python and ray, and what was (or would be) done or the error."""
    out = []
    for name, h in sorted(result.hosts.items()):
        p = h.data.get("provision") or {}
        out.append({"host": name, "result": h.state, "python": p.get("python"), "ray": p.get("ray"),
                    "detail": h.error or p.get("summary", "")})
    return out


def summary_note(cfg: Config, result: RunResult) -> None:
    if note := python_note(result, cfg["remote"]["python_version_match"]):
        report.note(note)
