"""`sage cluster ...`: the whole cluster with one command."""
from __future__ import annotations

import sys

import click

from sage_cluster import operations as ops
from sage_cluster import config as cfgmod
from sage_cluster import report, security
from sage_cluster.config import ConfigError
from sage_cluster.cli.common import options
from sage_cluster.cli.nodes import add_deploy_command, add_node_commands, scale_command
from sage_cluster.cli.worker import own_settings


@click.group()
def cluster() -> None:
    """The whole cluster: head and workers together (the recommended way).

    \b
    Example:
      sage cluster start && sage cluster status
    """


add_node_commands(cluster, "cluster")
add_deploy_command(cluster, "cluster")


@cluster.command()
@options(json=True)
def info(opts: ops.Options) -> None:
    """Show the cluster's configuration: head, ports, dashboard, workers, remote paths.

    \b
    Example:
      sage cluster info
      sage cluster info --json
    """
    cfg = ops.load(opts)
    if opts.json:
        report.emit_json({"config_file": str(cfg.path) if cfg.path else None, **cfg.as_dict()})
        return
    head = cfg["head"]
    dash = head["dashboard_host"] if head["dashboard_host"] != "0.0.0.0" else head["host"]
    click.echo(f"Config:     {cfg.path or 'built-in single-machine default'}")
    click.echo(f"Head:       {head['host']} (Ray port {head['head_port']})")
    click.echo(f"Dashboard:  http://{dash}:{head['dashboard_port']} (bound to {head['dashboard_host']})")
    click.echo(f"Workers:    {', '.join(map(str, cfg.workers)) or 'none'}")
    for w in cfg.workers:
        if cfg.nodes.get(w.host):
            click.echo(f"            {w}{own_settings(cfg, w.host)}")
    for name in ("head", "worker"):
        declared = {k: v for k, v in cfg[name].items() if k in cfgmod.NODE_RAY_KEYS and v not in (None, {})}
        if declared:
            click.echo(f"Resources:  {'head' if name == 'head' else 'workers'} "
                       + ", ".join(f"{k}={v}" for k, v in declared.items()))
    click.echo(f"SSH:        user {cfg['ssh']['user']}, key {cfg['ssh']['key_path']}, "
               f"timeout {cfg['ssh']['connect_timeout']}s, host keys {cfg['ssh']['strict_host_key_checking']}")
    r = cfg["remote"]
    click.echo(f"Remote:     sage_home {r['sage_home']}, python {r['python_path']}, ray {r['ray_command']}, "
               f"conda env {r['conda_env'] or '(none)'}")
    click.echo(f"Temp/logs:  head {head['temp_dir']} {head['log_dir']}; "
               f"workers {cfg['worker']['temp_dir']} {cfg['worker']['log_dir']}")
    if warning := ops.dashboard_warning(cfg):
        report.warn(warning)


@cluster.command()
@options(json=True)
def doctor(opts: ops.Options) -> None:
    """Check every node: SSH, python_path, ray_command, the same Python and Ray versions everywhere (this
    machine too), temp and log dirs writable, head ports free or held by this cluster's Ray, clock skew.
    Exit 1 if any check fails.

    \b
    Example:
      sage cluster doctor
      sage cluster doctor --json
    """
    _, result, rows = ops.doctor(opts)
    failed = [r for r in rows if not r["ok"]]
    if opts.json:
        report.emit_json({"ok": not failed, "controller": ops.controller_versions(), "checks": rows})
    else:
        click.echo(report.table([[r["host"], r["check"], "ok" if r["ok"] else "FAIL", r["detail"], r["fix"]]
                                 for r in rows], ["HOST", "CHECK", "RESULT", "DETAIL", "FIX"]))
        click.echo(f"{len(failed)} check(s) failed." if failed else "All checks passed.")
    sys.exit(1 if failed or result.interrupted else 0)


@cluster.command()
@options()
def token(opts: ops.Options) -> None:
    """Print the Ray auth token, for people who submit jobs or connect clients.

    Every node is started with it (security.ray_auth: token, the default); a client without it is refused.

    \b
    Example:
      RAY_AUTH_MODE=token RAY_AUTH_TOKEN=$(sage cluster token) ray job submit --address http://head:8265 -- python job.py
    """
    cfg = ops.load(opts)
    if not security.token_enabled(cfg):
        raise ConfigError(f"{cfg.path}: security.ray_auth is off, so the cluster has no token. "
                          "Fix: set it to token and run `sage cluster restart`.")
    click.echo(security.read_token())


@cluster.group()
def scale() -> None:
    """Add or remove a worker while the cluster runs.

    \b
    Example:
      sage cluster scale add sage5:22
      sage cluster scale remove sage5:22
    """


scale.add_command(scale_command("add", "sage cluster scale add sage5:22"))
scale.add_command(scale_command("remove", "sage cluster scale remove sage5:22"))
