"""`sage worker ...`: the Ray worker nodes."""
from __future__ import annotations

import click

from sage_cluster import operations as ops
from sage_cluster import report
from sage_cluster.cli.common import options
from sage_cluster.cli.nodes import add_deploy_command, add_logs_command, add_node_commands, scale_command


@click.group()
def worker() -> None:
    """The Ray worker nodes: all at once, or add and remove one.

    \b
    Example:
      sage worker status
      sage worker add sage5:22
    """


add_node_commands(worker, "worker")
add_deploy_command(worker, "worker")
add_logs_command(worker, "worker")
worker.add_command(scale_command("add", "sage worker add sage5:22"))
worker.add_command(scale_command("remove", "sage worker remove sage5:22"))


@worker.command(name="config")
@options(json=True)
def worker_config(opts: ops.Options) -> None:
    """Show the worker section of the config and the list of worker hosts.

    \b
    Example:
      sage worker config
    """
    cfg = ops.load(opts)
    payload = {"worker": cfg["worker"], "workers_ssh_hosts": cfg.as_dict()["workers_ssh_hosts"]}
    if opts.json:
        report.emit_json(payload)
        return
    for key, value in cfg["worker"].items():
        click.echo(f"{key}: {value}")
    click.echo("workers_ssh_hosts:")
    for w in cfg.workers:
        click.echo(f"  - {w}{report.own_settings(cfg.nodes.get(w.host, {}))}")
    if not cfg.workers:
        click.echo("  (none)")
