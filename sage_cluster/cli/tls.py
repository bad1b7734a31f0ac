"""`sage cluster tls ...`: the cluster's mutual TLS (security.tls: on), seen from this machine."""
from __future__ import annotations

import shlex
import sys

import click

from sage_cluster import operations, report
from sage_cluster.cli.common import common_options, exit_code
from sage_cluster.operations import Invocation


@click.group()
def tls() -> None:
    """Mutual TLS inside the cluster (security.tls: on), sage being its CA (~/.sage/tls).

    \b
    Example:
      eval "$(sage cluster tls env)" && python -c 'import ray; ray.init("ray://HEAD:10001")'
    """


@tls.command("env")
@common_options(json=True)
def env(invocation: Invocation) -> None:
    """Print the shell lines a Ray driver or client on this machine needs: the TLS variables (a client cert of this
    machine's, made once, signed by the cluster's CA) and the token's.

    Every Ray connection of a cluster with TLS on is mutual: a client without a cert of the CA is refused. The lines
    name files, never the key or token itself.

    \b
    Example:
      eval "$(sage cluster tls env)"
      sage cluster tls env --json
    """
    variables = operations.tls_client_env(invocation)
    if invocation.json:
        report.emit_json(variables)
        return
    for name, value in variables.items():
        click.echo(f"export {name}={shlex.quote(value)}")


@tls.command()
@click.option("--new-ca", is_flag=True, help="Make a new CA first (the old one is kept beside it): a full restart.")
@common_options(check=True, json=True)
def rotate(invocation: Invocation, new_ca: bool) -> None:
    """Give every node a new key and certificate, and restart its Ray on them.

    With head.fault_tolerance local or redis it stays the same cluster: the head restarts first, on its store (the
    workers wait for it), then each worker alone; jobs' history and detached actors are kept (an actor on a
    restarting worker is restarted by Ray where its max_restarts allows). With fault tolerance off, or --new-ca,
    the whole cluster restarts at once: a new cluster.

    \b
    Example:
      sage cluster tls rotate
      sage cluster tls rotate --new-ca
    """
    _, steps = operations.tls_rotate(invocation, new_ca)
    if invocation.json:
        report.emit_json({"ok": all(r.ok for _, r in steps),
                          "steps": [{"step": title, **report.run_json(r)} for title, r in steps]})
    else:
        for title, result in steps:
            click.echo(report.summary(result, f"tls rotate: {title}"))
    sys.exit(max(exit_code(r) for _, r in steps))
