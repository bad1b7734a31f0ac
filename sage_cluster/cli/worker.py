"""`sage worker ...`: the Ray worker nodes."""
from __future__ import annotations

import click

from sage_cluster import operations
from sage_cluster import report
from sage_cluster.operations import Invocation
from sage_cluster.cli.common import common_options
from sage_cluster.cli import nodes


# The commands it shares with cluster and head (cli/nodes.py); worker config is below.
@click.group(commands=[nodes.start, nodes.stop, nodes.restart, nodes.status, nodes.deploy, nodes.logs, nodes.add,
                      nodes.remove])
def worker() -> None:
    """The Ray worker nodes: all at once, or add and remove one.

    \b
    Example:
      sage worker status
      sage worker add sage5:22
    """


@worker.command(name="config")
@common_options(json=True)
def worker_config(invocation: Invocation) -> None:
    """Show the worker section of the config and the list of worker hosts.

    \b
    Example:
      sage worker config
    """
    cfg = operations.load(invocation)
    payload = {"worker": cfg["worker"], "workers_ssh_hosts": cfg.as_dict()["workers_ssh_hosts"]}
    if invocation.json:
        report.emit_json(payload)
        return
    for key, value in cfg["worker"].items():
        click.echo(f"{key}: {value}")
    click.echo("workers_ssh_hosts:")
    for w in cfg.workers:
        click.echo(f"  - {w}{report.own_settings(cfg.worker_overrides.get(w.host, {}))}")
    if not cfg.workers:
        click.echo("  (none)")
