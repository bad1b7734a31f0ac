"""The commands that several groups share: one function each, attached to every group it serves, acting on
the group it was called through (`sage head start` starts the head, `sage cluster start` the whole cluster):

    sage cluster|head|worker start|stop|restart|status
    sage head|worker logs
    sage cluster|worker deploy
    sage cluster scale add|remove, sage worker add|remove

Each calls one function of operations.py, which runs the playbook. The commands of one group only are in that
group's module (cli/__init__.py says which is where).
"""
from __future__ import annotations

import sys
from typing import Any

import click

from ansible_collections.sage.cluster.plugins.plugin_utils.config import Endpoint

from sage_cluster import operations
from sage_cluster import report
from sage_cluster.cli.bootstrap import offer_setup_ssh, say_next_steps
from sage_cluster.cli.common import EXIT_FAILED, HostPort, common_options, exit_code, finish
from sage_cluster.operations import Invocation


def scope() -> str:
    """What the running command acts on: the group it was called through (cluster, head or worker)."""
    return click.get_current_context().command_path.split()[-2]


def _act(invocation: Invocation, action: str) -> None:
    cfg, result = operations.node_action(invocation, scope(), action)
    if action == "start" and offer_setup_ssh(cfg, result, invocation):
        cfg, result = operations.node_action(invocation, scope(), action)
    say_next_steps(cfg, result, invocation)
    finish(result, f"{scope()} {action}", invocation)


@click.command()
@common_options(check=True, json=True)
def start(invocation: Invocation) -> None:
    """Start Ray. A node already running and joined is left alone.

    `sage cluster start`: the head, then all workers in parallel; waits until the head lists every worker alive.
    `sage head start`: the head only. `sage worker start`: all workers in parallel; waits until the head lists
    each one alive. On a terminal, when key login fails on some nodes, offers `sage cluster setup-ssh` for them
    (the password at a hidden prompt), then starts again; without one it names the hosts and the command.

    \b
    Example:
      sage cluster start
      sage worker start --check
    """
    _act(invocation, "start")


@click.command()
@common_options(check=True, json=True)
def stop(invocation: Invocation) -> None:
    """Stop Ray. Stopping a stopped node is fine.

    `sage cluster stop`: every node at once. `sage head stop`: the head only (the workers lose their head).
    `sage worker stop`: all workers in parallel.

    \b
    Example:
      sage cluster stop
      sage head stop
    """
    _act(invocation, "stop")


@click.command()
@common_options(check=True, json=True)
def restart(invocation: Invocation) -> None:
    """Restart Ray (stop, then start) on the whole cluster, the head or all workers.

    \b
    Example:
      sage cluster restart
      sage worker restart
    """
    _act(invocation, "restart")


@click.command()
@common_options(json=True)
def status(invocation: Invocation) -> None:
    """Show whether Ray runs on each node (of the whole cluster, the head, or the workers), its node IP, its
    resources as Ray reports them (flagged where they differ from the config), the deployed revision, and Ray's
    own count of alive nodes from the head. Exit 1 if a node is down.

    \b
    Example:
      sage cluster status
      sage worker status --json
    """
    cfg, result, health = operations.status(invocation, scope())
    if invocation.json:
        report.emit_json({**report.run_json(result), **health})
    else:
        click.echo(report.table(report.node_rows(result),
                                ["HOST", "ROLE", "RAY", "NODE IP", "SUPERVISOR", "RESOURCES (RAY)", "DEPLOYED",
                                 "ERROR"]))
        report.resource_warnings(result)
        view = health["cluster"]
        if view.get("error"):
            click.echo(f"Ray (from the head): {view['error']}")
        elif "alive" in view:
            click.echo(f"Ray (from the head): {view['alive']} alive node(s){report.old_nodes_text(result)}; "
                       f"{report.format_resources(view.get('resources', {}))}")
        for h in result.hosts.values():
            if h.data.get("dashboard_url") and h.data.get("running"):
                click.echo(f"Dashboard: {h.data['dashboard_url']}")
            if h.data.get("fault_tolerance"):
                click.echo(report.fault_tolerance_text(h.data["fault_tolerance"]))
    code = exit_code(result)
    sys.exit(code if code else (0 if health["healthy"] else EXIT_FAILED))


@click.command()
@click.option("--lines", "-n", default=50, show_default=True, type=click.IntRange(1, 100000), help="How many lines.")
@common_options(json=True)
def logs(invocation: Invocation, lines: int) -> None:
    """Show the last lines of head.log on the head (`sage head logs`) or of worker.log on every worker
    (`sage worker logs`): the output of Ray's start and stop.

    \b
    Example:
      sage head logs --lines 100
      sage worker logs
    """
    _, result = operations.logs(invocation, scope(), lines)
    if invocation.json:
        report.emit_json(report.run_json(result))
    else:
        for name, h in sorted(result.hosts.items()):
            click.echo(f"==> {name}: {h.data.get('log_file', '?')} <==")
            click.echo("\n".join(h.data.get("log", [])) or (h.error or "(empty)"))
    sys.exit(exit_code(result))


@click.command()
@common_options(check=True, json=True)
def deploy(invocation: Invocation) -> None:
    """Copy the project (config deploy.source, default: the current directory) into remote.sage_home with rsync:
    on every node that is not this machine (`sage cluster deploy`), or on every worker (`sage worker deploy`).
    Only changed files move; nothing is deleted. Then install it into each node's env where that is needed
    (deploy.install: auto = pip install -e when the project has pyproject.toml or setup.py; none; or your own
    command). --check says per node whether files would change and whether the install would run. A source
    holding ~/.ssh, ~/.sage or ~/.ray is refused.

    \b
    Example:
      sage cluster deploy
      sage worker deploy --check
    """
    _, result = operations.deploy(invocation, scope())
    finish(result, f"{scope()} deploy", invocation)


def resource_options(command: Any) -> Any:
    """`add`'s options for the new worker's own Ray resources: one per Ray resource key of worker: in the schema,
    taken as text and checked by the config's own rules (one line, exit 2)."""
    for key in reversed(operations.worker_ray_keys()):
        many = key.kind in ("resources", "labels")
        what = "NAME=AMOUNT" if key.kind == "resources" else "KEY=VALUE"
        command = click.option(
            operations.resource_option(key), key.name, multiple=many, metavar="K=V" if many else "N",
            help=f"This worker's own worker.{key.name}: {key.help}"
                 + (f"; {what}, repeat or comma-separate for more." if many else "."))(command)
    return command


@click.command()
@click.argument("endpoint", metavar="HOST:PORT", type=HostPort())
@click.option("--provision", is_flag=True,
              help="First give the new worker this machine's Ray (`sage cluster provision`): for a bare machine.")
@resource_options
@common_options(check=True, json=True)
def add(invocation: Invocation, endpoint: Endpoint, provision: bool, **resources: Any) -> None:
    """Add a worker: list HOST:PORT in the config (comments kept), deploy the project there, start Ray, and wait
    until the head lists it alive. With resource options the worker is written as a mapping holding them (that
    worker only; the rest of the file stays as it is). A bare machine: --provision first gives it this machine's
    Ray in remote.python_path's env; when its key login fails, `sage cluster setup-ssh HOST:PORT` is named.

    \b
    Example:
      sage cluster scale add sage5:22
      sage worker add gpu5:22 --num-gpus 4 --resources accel=1 --label zone=a
      sage cluster scale add new1:22 --provision
    """
    cfg, result = operations.scale(invocation, "add", endpoint, operations.node_settings(resources), provision)
    say_next_steps(cfg, result, invocation, then="" if invocation.check else (
        f"{endpoint.host} stays in the config: then `sage cluster deploy` and `sage cluster start` make it a node"))
    finish(result, f"scale add {endpoint}", invocation)


@click.command()
@click.argument("endpoint", metavar="HOST:PORT", type=HostPort())
@common_options(check=True, json=True)
def remove(invocation: Invocation, endpoint: Endpoint) -> None:
    """Remove a worker: take HOST:PORT out of the config (comments kept) and stop Ray on it.

    \b
    Example:
      sage cluster scale remove sage5:22
      sage worker remove sage5:22
    """
    cfg, result = operations.scale(invocation, "remove", endpoint)
    say_next_steps(cfg, result, invocation)
    finish(result, f"scale remove {endpoint}", invocation)
