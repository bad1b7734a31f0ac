"""The commands that cluster, head and worker share, built by the factories below (so `def start` is not
to be found by grep). Every `sage` command and where it is defined:

    sage cluster start|stop|restart|status    add_node_commands      (here)
    sage head    start|stop|restart|status    add_node_commands      (here)
    sage worker  start|stop|restart|status    add_node_commands      (here)
    sage head logs, sage worker logs          add_logs_command       (here)
    sage cluster deploy, sage worker deploy   add_deploy_command     (here)
    sage cluster scale add|remove             scale_command          (here), attached in cli/cluster.py
    sage worker add|remove                    scale_command          (here), attached in cli/worker.py
    sage cluster info|doctor|token            cli/cluster.py
    sage worker config                        cli/worker.py
    sage config [show], sage config init      cli/config.py
    sage inventory                            cli/inventory.py
"""
from __future__ import annotations

import sys
from typing import Any

import click

from sage_cluster import operations as ops
from sage_cluster import report
from sage_cluster.config import Endpoint
from sage_cluster.cli.bootstrap import say_next_steps
from sage_cluster.cli.common import EXIT_FAILED, HostPort, exit_code, finish, options

WHAT = {"cluster": "the whole cluster", "head": "the Ray head", "worker": "all Ray workers"}


def add_node_commands(group: click.Group, scope: str) -> None:
    """Attach start/stop/restart/status to a group, acting on `scope` (cluster, head or worker)."""
    what = WHAT[scope]
    order = {
        "cluster": ("the head, then all workers in parallel", "every node at once"),
        "head": ("the head only", "the head only (workers lose their head)"),
        "worker": ("all workers in parallel; waits until the head lists each one alive", "all workers in parallel"),
    }[scope]
    docs = {
        "start": f"Start {what}: {order[0]}. A node already running and joined is left alone.",
        "stop": f"Stop {what}: {order[1]}. Stopping a stopped node is fine.",
        "restart": f"Restart {what} (stop, then start).",
    }
    for action, doc in docs.items():
        group.command(name=action, help=f"{doc}\n\n\b\nExample:\n  sage {scope} {action}")(
            options(check=True, json=True)(_action_command(scope, action)))

    @group.command(name="status", help=f"Show whether Ray runs on each node of {what}, its node IP, its resources as Ray "
                   f"reports them (flagged where they differ from the config), and Ray's own count of alive nodes "
                   f"from the head. Exit 1 if a node is down.\n\n\b\nExample:\n  sage {scope} status"
                   f"\n  sage {scope} status --json")
    @options(json=True)
    def status(opts: ops.Options) -> None:
        cfg, result, health = ops.status(opts, scope)
        if opts.json:
            report.emit_json({**report.run_json(result), **health})
        else:
            click.echo(report.table(report.node_rows(result),
                                    ["HOST", "ROLE", "RAY", "NODE IP", "RESOURCES (RAY)", "DEPLOYED", "ERROR"]))
            report.resource_warnings(result)
            view = health["cluster"]
            if view.get("error"):
                click.echo(f"Ray (from the head): {view['error']}")
            elif "alive" in view:
                click.echo(f"Ray (from the head): {view['alive']} alive node(s); "
                           f"{report.format_resources(view.get('resources', {}))}")
            for h in result.hosts.values():
                if h.data.get("dashboard_url") and h.data.get("running"):
                    click.echo(f"Dashboard: {h.data['dashboard_url']}")
        code = exit_code(result)
        sys.exit(code if code else (0 if health["healthy"] else EXIT_FAILED))


def _action_command(scope: str, action: str):
    def command(opts: ops.Options) -> None:
        cfg, result = ops.node_action(opts, scope, action)
        say_next_steps(cfg, result, opts)
        finish(result, f"{scope} {action}", opts)
    command.__name__ = f"{scope}_{action}"
    return command


def add_logs_command(group: click.Group, scope: str) -> None:
    log = "head.log on the head" if scope == "head" else "worker.log on every worker"

    @group.command(name="logs", help=f"Show the last lines of {log} (the output of Ray's start and stop).\n\n"
                   f"\b\nExample:\n  sage {scope} logs --lines 100")
    @click.option("--lines", "-n", default=50, show_default=True, type=click.IntRange(1, 100000),
                  help="How many lines.")
    @options(json=True)
    def logs(opts: ops.Options, lines: int) -> None:
        _, result = ops.logs(opts, scope, lines)
        if opts.json:
            report.emit_json(report.run_json(result))
        else:
            for name, h in sorted(result.hosts.items()):
                click.echo(f"==> {name}: {h.data.get('log_file', '?')} <==")
                click.echo("\n".join(h.data.get("log", [])) or (h.error or "(empty)"))
        sys.exit(exit_code(result))


def add_deploy_command(group: click.Group, scope: str) -> None:
    targets = "every node that is not this machine" if scope == "cluster" else "every worker"

    @group.command(name="deploy", help=f"Copy the project (config deploy.source, default: the current directory) into "
                   f"remote.sage_home on {targets} with rsync. Only changed files move; nothing is deleted. Then "
                   f"install it into each node's env where that is needed (deploy.install: auto = pip install -e "
                   f"when the project has pyproject.toml or setup.py; none; or your own command). --check says per "
                   f"node whether files would change and whether the install would run. A source holding "
                   f"~/.ssh, ~/.sage or ~/.ray is refused."
                   f"\n\n\b\nExample:\n  sage {scope} deploy\n  sage {scope} deploy --check")
    @options(check=True, json=True)
    def deploy(opts: ops.Options) -> None:
        _, result = ops.deploy(opts, scope)
        finish(result, f"{scope} deploy", opts)


def scale_command(op: str, example: str) -> click.Command:
    """`add`/`remove` one worker: edits workers_ssh_hosts (comments kept), then starts or stops Ray there."""
    doc = {"add": "Add a worker: list HOST:PORT in the config, deploy the project there, start Ray, and wait "
                  "until the head lists it alive. With resource options the worker is written as a mapping "
                  "holding them (that worker only; the rest of the file stays as it is). A bare machine: "
                  "--provision first gives it this machine's Ray in remote.python_path's env; when its key login "
                  "fails, `sage cluster setup-ssh HOST:PORT` is named.",
           "remove": "Remove a worker: take HOST:PORT out of the config and stop Ray on it."}[op]
    if op == "add":
        example += (f"\n  {example.rsplit(' ', 1)[0]} gpu5:22 --num-gpus 4 --resources accel=1 --label zone=a"
                    f"\n  {example.rsplit(' ', 1)[0]} new1:22 --provision")

    @options(check=True, json=True)
    def command(opts: ops.Options, endpoint: Endpoint, provision: bool = False, **resources: Any) -> None:
        cfg, result = ops.scale(opts, op, endpoint, ops.node_settings(resources) if resources else None, provision)
        say_next_steps(cfg, result, opts, then=f"{endpoint.host} stays in the config: then `sage cluster deploy` and "
                       "`sage cluster start` make it a node" if op == "add" and not opts.check else "")
        finish(result, f"scale {op} {endpoint}", opts)
    if op == "add":  # values are checked by the config's own rules (one line, exit 2), so they are taken as text
        command = click.option("--provision", is_flag=True, help="First give the new worker this machine's Ray "
                               "(`sage cluster provision`): for a bare machine.")(command)
        for name, help_text in reversed(RESOURCE_OPTIONS):
            multiple = name in ("resources", "labels")
            flag = "--label" if name == "labels" else f"--{name.replace('_', '-')}"
            command = click.option(flag, name, multiple=multiple, metavar="K=V" if multiple else "N",
                                   help=help_text)(command)
    command = click.argument("endpoint", metavar="HOST:PORT", type=HostPort())(command)
    return click.command(name=op, help=f"{doc}\n\n\b\nExample:\n  {example}")(command)


# scale add's options for the new worker's own Ray resources (the keys of worker: in the config).
RESOURCE_OPTIONS = [
    ("num_cpus", "CPUs Ray offers on this worker (0: it runs no tasks)."),
    ("num_gpus", "GPUs Ray offers on this worker."),
    ("memory", 'Memory for tasks, bytes or e.g. "8GiB".'),
    ("object_store_memory", 'Object store size, bytes or e.g. "2GiB".'),
    ("resources", "A custom resource, NAME=AMOUNT (repeat, or comma-separate, for more)."),
    ("labels", "A Ray node label, KEY=VALUE (repeat, or comma-separate, for more)."),
]
