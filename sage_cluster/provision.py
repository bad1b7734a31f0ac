"""`sage cluster provision`: this machine's Ray in every node's env (playbooks/provision.yml, roles/sage_provision),
and the run's verdict on Python versions. The wheels for nodes whose pip reaches no index are the collection's
(plugins/plugin_utils/wheelhouse.py, run by the sage_wheelhouse action).
"""
from __future__ import annotations

import platform

from ansible_collections.sage.cluster.plugins.plugin_utils.config import Config, Endpoint, is_this_machine

from ansible_collections.sage.cluster.plugins.module_utils import node, ray_node
from sage_cluster import operations
from sage_cluster import report, sshsetup
from sage_cluster.lock import cluster_lock
from sage_cluster.runner import RunResult


def provision(invocation: operations.Invocation, endpoints: list[Endpoint],
              wheelhouse: bool) -> tuple[Config, RunResult]:
    cfg = operations.load(invocation)
    names = targets(cfg, endpoints)
    with cluster_lock(cfg.path):
        return cfg, operations.run(cfg, invocation, "provision.yml", "provision",
                                   limit=",".join(names) if endpoints else None,
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
    driver = (f"a Ray driver started here needs {ray_node.PYTHON_MATCH_ENV}=minor (sage's own commands and "
              "`sage job` do not start one here)")
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
        if h.failed and h.kind == node.NO_PYTHON:
            lines.append(f"{name}: no env at remote.python_path: `sage cluster provision {name}:{ports.get(name, 22)}` "
                         "makes one with this machine's Ray")
        elif h.failed and h.kind == node.RAY_DRIFT:
            lines.append(f"{name}: another Ray release: `sage cluster provision {name}:{ports.get(name, 22)}` gives it "
                         "this machine's")
    return lines


def summary_note(cfg: Config, result: RunResult) -> None:
    if note := python_note(result, cfg["remote"]["python_version_match"]):
        report.note(note)
