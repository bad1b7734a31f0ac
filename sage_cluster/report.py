"""What people see: live per-host progress, summary tables; --json for programs."""
from __future__ import annotations

import json
import time
from typing import Any

import click

from ansible_collections.sage.cluster.plugins.module_utils.ray_node import lost_head_fate

from sage_cluster.runner import RunResult

_COLOURS = {"ok": "green", "changed": "yellow", "failed": "red", "unreachable": "red"}


class Progress:
    """Prints one line per host and task as results arrive (to stderr, so stdout stays clean for programs)."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.started = time.monotonic()

    def __call__(self, host: str, state: str, task: str, res: dict[str, Any]) -> None:
        if not self.enabled:
            return
        elapsed = time.monotonic() - self.started
        word = click.style(f"{state:<11}", fg=_COLOURS.get(state))
        click.echo(f"  {elapsed:6.1f}s  {host:<24} {word} {task}", err=True)


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in [header, *rows]]
    return "\n".join(lines)


def summary(result: RunResult, title: str) -> str:
    # A deploy also says, per host, what became of the install (ran, skipped, would run, failed...).
    installs = any("install" in (h.data.get("deploy") or {}) for h in result.hosts.values())
    rows = []
    for name in sorted(result.hosts):
        h = result.hosts[name]
        install = [(h.data.get("deploy") or {}).get("install", "-")] if installs else []
        rows.append([name, h.state, *install, h.error])
    if not rows:
        rows.append(["(no hosts)", "", ""])
    verdict = "interrupted" if result.interrupted else ("done" if result.ok else "FAILED on some hosts")
    head = f"{title}: {verdict} in {result.seconds:.1f}s"
    # What a start found and did beyond starting (a head healed, a worker restarted: what was lost).
    notes = [f"{name}: {result.hosts[name].data['note']}" for name in sorted(result.hosts)
             if result.hosts[name].data.get("note")]
    return "\n".join([head, table(rows, ["HOST", "RESULT", *(["INSTALL"] if installs else []), "ERROR"]), *notes])


def node_rows(result: RunResult) -> list[list[str]]:
    rows = []
    for name in sorted(result.hosts, key=lambda n: (result.hosts[n].data.get("node_type") != "head", n)):
        h = result.hosts[name]
        d = h.data
        if h.unreachable or h.failed:
            ray = h.state
        elif d.get("ray_alive") == 0:
            ray = "dropped by Ray"  # its raylet runs, but Ray no longer counts it (operations.note_alive_per_host)
        elif d.get("ray_joined") is False:
            ray = "not joined yet"  # Ray counts only the node its restarted raylet replaced
        else:
            ray = "running" if d.get("running") else "stopped"
        rows.append([name, d.get("node_type", "?"), ray, d.get("node_ip") or "-", supervisor_text(d), node_resources(d),
                     deployed_text(d.get("deploy")), h.error or d.get("ray_note", "")])
    return rows


def supervisor_text(d: dict[str, Any]) -> str:
    """Who keeps the node's Ray running, with its unit's restart count when it has a unit."""
    sup = d.get("supervisor") or {}
    restarts = (sup.get("unit") or {}).get("restarts")
    return sup.get("text", "-") + (f", {restarts} restart(s)" if restarts else "")


def old_nodes_text(result: RunResult) -> str:
    """Why Ray counts more alive nodes than hosts: " (an old node not dropped yet: h1, h2)", else ""."""
    hosts = sorted(n for n, h in result.hosts.items() if h.data.get("ray_alive", 1) > 1)
    return f" (Ray still lists an old node of {', '.join(hosts)}: see its row)" if hosts else ""


def fault_tolerance_text(store: dict[str, Any]) -> str:
    """The head's fault tolerance in words: where the GCS keeps its tables."""
    return (f"Fault tolerance: {store['mode']}, the GCS's tables in {store['store']} (namespace {store['namespace']}): "
            + lost_head_fate(store["mode"]))


def deployed_text(deploy: dict[str, Any] | None) -> str:
    """The revision a node runs, flagged when it is not the controller's source or its install failed."""
    if not deploy or not (deploy.get("revision") or deploy.get("stale")):
        return "-"  # nothing recorded, nothing expected (this machine runs the source itself)
    if not deploy.get("revision"):
        return "never deployed"
    text = deploy["revision"]
    if deploy.get("stale"):
        text += " (stale: deploy again)"
    if deploy.get("install_ok") is False:
        text += " (install failed)"
    return text


def node_resources(d: dict[str, Any]) -> str:
    """One node's resources and labels as Ray reports them ("-" when the head could not say)."""
    if "ray_resources" not in d:
        return "-"
    labels = [f"{k}={v}" for k, v in sorted(d.get("ray_labels", {}).items())]
    return ", ".join(filter(None, [format_resources(d["ray_resources"]), *labels])) or "none"


def cluster_view(result: RunResult) -> dict[str, Any] | None:
    for h in result.hosts.values():
        if "cluster" in h.data:
            return h.data["cluster"]
    return None


def format_resources(res: dict[str, float]) -> str:
    parts = []
    for key, value in sorted(res.items()):
        if key.startswith("accelerator_type:"):
            continue  # Ray's marker of a GPU model: shown by its GPU count already
        if "memory" in key:
            parts.append(f"{key} {value / 2**30:.1f} GiB")
        else:
            parts.append(f"{key} {value:g}")
    return ", ".join(parts)


def own_settings(own: dict[str, dict[str, Any]]) -> str:
    """ "  (own: ssh.user=ops, worker.num_gpus=4)" for a worker with settings of its own, else ""."""
    parts = [f"{section}.{key}={value}" for section, values in own.items() for key, value in values.items()]
    return f"  (own: {', '.join(parts)})" if parts else ""


def resource_warnings(result: RunResult) -> None:
    """A warning for each node whose Ray has other resources than the config declares."""
    for name in sorted(result.hosts):
        if differ := result.hosts[name].data.get("resource_mismatch"):
            warn(f"{name}: Ray's resources differ from the config ({'; '.join(differ)}). "
                 "Fix: restart that node (`sage cluster restart`) so Ray starts with the configured ones.")


def emit_json(payload: Any) -> None:
    click.echo(json.dumps(payload, indent=2, sort_keys=True, default=str))


def run_json(result: RunResult) -> dict[str, Any]:
    return {
        "ok": result.ok,
        "status": result.status,
        "seconds": round(result.seconds, 2),
        "hosts": {n: {"result": h.state, "error": h.error or None, **h.data} for n, h in result.hosts.items()},
    }


def note(message: str) -> None:
    click.echo(message, err=True)


def warn(message: str) -> None:
    click.echo(click.style("warning: ", fg="yellow") + message, err=True)
