"""`sage cluster ...`: the whole cluster with one command."""
from __future__ import annotations

import signal
import sys

import click

from ansible_collections.sage.cluster.plugins.plugin_utils import config as cfgmod
from ansible_collections.sage.cluster.plugins.plugin_utils.config import ConfigError
from ansible_collections.sage.cluster.plugins.plugin_utils.security import token_enabled

from sage_cluster import operations
from sage_cluster import ray_node, report, security
from sage_cluster.operations import Invocation
from sage_cluster.cli.common import EXIT_FAILED, common_options, exit_code
from sage_cluster.cli import nodes
from sage_cluster.cli.bootstrap import provision, setup_ssh
from sage_cluster.cli.tls import tls


# The commands it shares with head and worker (cli/nodes.py), the bare machines' (cli/bootstrap.py), TLS's
# (cli/tls.py); info, dashboard, doctor, token and scale are below.
@click.group(commands=[nodes.start, nodes.stop, nodes.restart, nodes.status, nodes.deploy, setup_ssh, provision,
                       tls])
def cluster() -> None:
    """The whole cluster: head and workers together (the recommended way).

    \b
    Example:
      sage cluster start && sage cluster status
    """


@cluster.command()
@common_options(json=True)
def info(invocation: Invocation) -> None:
    """Show the cluster's configuration: head, ports, dashboard, workers, remote paths, each node's supervisor as
    configured (remote.supervisor; status says what a node has, doctor what a start would give it). Reads the
    config only: no node is asked.

    \b
    Example:
      sage cluster info
      sage cluster info --json
    """
    cfg = operations.load(invocation)
    if invocation.json:
        sends, refused = operations.deploy_plan(cfg)
        report.emit_json({"config_file": str(cfg.path) if cfg.path else None, "config_origin": cfg.origin,
                          "workers_key": cfg.workers_key, **cfg.as_dict(),
                          "deploy_sends": sends, "deploy_refused": refused,
                          "supervisors": operations.supervisors(cfg)})
        return
    head = cfg["head"]
    url = ray_node.dashboard_url(head["dashboard_host"], head["host"], head["dashboard_port"])
    click.echo(f"Config:     {cfg.path or 'built-in single-machine default'} ({cfg.origin})")
    click.echo(f"Head:       {head['host']} (Ray port {head['head_port']})")
    click.echo(f"Dashboard:  {url} (bound to {head['dashboard_host']})")
    if not cfgmod.is_this_machine(head["host"]):
        click.echo("            from this machine through SSH: `sage cluster dashboard` (any dashboard_host)")
    click.echo(f"Workers:    {', '.join(map(str, cfg.workers)) or 'none'}")
    for w in cfg.workers:
        if cfg.worker_overrides.get(w.host):
            click.echo(f"            {w}{report.own_settings(cfg.worker_overrides[w.host])}")
    for name in ("head", "worker"):
        declared = {k: v for k, v in cfg[name].items() if k in cfgmod.NODE_RAY_KEYS and v not in (None, {})}
        if declared:
            click.echo(f"Resources:  {'head' if name == 'head' else 'workers'} "
                       + ", ".join(f"{k}={v}" for k, v in declared.items()))
    click.echo(f"SSH:        user {cfg['ssh']['user']}, key {cfg['ssh']['key_path']}, "
               f"timeout {cfg['ssh']['connect_timeout']}s, host keys {cfg['ssh']['strict_host_key_checking']}")
    r = cfg["remote"]
    click.echo(f"Remote:     sage_home {r['sage_home']}, {cfgmod.describe_env(r)}")
    if own := cfg.overrides(head["host"]).get("remote"):
        click.echo(f"Head env:   {cfgmod.describe_env({**r, **own})}")
    by_text: dict[str, list[str]] = {}
    for host, sup in operations.supervisors(cfg).items():
        by_text.setdefault(sup["text"], []).append(host)
    for i, (text, hosts) in enumerate(by_text.items()):
        label = "Supervisor:" if i == 0 else ""
        click.echo(f"{label:<12}{text}" + ("" if len(by_text) == 1 else f" ({', '.join(hosts)})"))
    click.echo("            what each node has: `sage cluster status`; would get: `sage cluster doctor`")
    click.echo(f"Temp/logs:  head {head['temp_dir']} {head['log_dir']}; "
               f"workers {cfg['worker']['temp_dir']} {cfg['worker']['log_dir']}")
    sends, refused = operations.deploy_plan(cfg)
    install = cfg["deploy"]["install"]
    click.echo(f"Deploy:     {sends} -> {r['sage_home']} on the nodes, then install: "
               f"{' '.join(install) if isinstance(install, list) else install}"
               + (f" (refused: {refused})" if refused else ""))
    if warning := operations.dashboard_warning(cfg):
        report.warn(warning)


@cluster.command()
@click.option("--port", type=click.IntRange(1, 65535), metavar="PORT",
              help="Local port to open the dashboard on (default: head.dashboard_port).")
@common_options()
def dashboard(invocation: Invocation, port: int | None) -> None:
    """Open the head's Ray dashboard on this machine: an SSH tunnel from a local port to the head's dashboard
    port, with the head's SSH settings and host key checks. Prints the URL (and how to pass the Ray token) and
    stays up until Ctrl-C. Works when the dashboard listens only on the head's 127.0.0.1.

    \b
    Example:
      sage cluster dashboard
      sage cluster dashboard --port 18265
    """
    from sage_cluster import dashboard as dash

    cfg = operations.load(invocation)
    head = cfg["head"]
    port = port or head["dashboard_port"]
    if cfgmod.is_this_machine(head["host"]):
        click.echo(f"The head is this machine: no tunnel needed. Dashboard: "
                   f"http://{dash.local_target(cfg)}:{head['dashboard_port']}")
        return
    # SIGTERM, like Ctrl-C, closes the tunnel: ssh runs in its own session and would outlive us.
    signal.signal(signal.SIGTERM, dash.interrupt)
    try:
        tunnel = dash.open_tunnel(cfg, port)
    except dash.TunnelFailed as exc:
        click.echo(click.style("error: ", fg="red") + str(exc), err=True)
        sys.exit(1)
    try:
        token = security.read_token() if token_enabled(cfg) else None
        url = f"http://127.0.0.1:{port}"
        click.echo(f"Dashboard: {url}  (tunnel to {head['host']}:{head['dashboard_port']} over SSH; Ctrl-C closes it)")
        version = dash.dashboard_answers(port, token)
        if version is None:
            report.warn("the tunnel is up, but the dashboard does not answer (is Ray running? `sage cluster start`).")
        if token:
            click.echo("Ray token auth is on: API calls and job submission need the token (`sage cluster token`):")
            click.echo(f'  curl -H "Authorization: Bearer $(sage cluster token)" {url}/api/jobs/')
            click.echo(f"  RAY_AUTH_MODE=token RAY_AUTH_TOKEN=$(sage cluster token) ray job submit --address {url} "
                       "-- python job.py")
        tunnel.wait()
        # ssh ended without Ctrl-C: the head went away or the connection broke.
        click.echo(click.style("error: ", fg="red") + f"the tunnel closed: {dash.reason(tunnel)}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo("Tunnel closed.", err=True)
    finally:
        dash.close(tunnel)


@cluster.command()
@common_options(json=True)
def doctor(invocation: Invocation) -> None:
    """Check every node: SSH, python_path, ray_command, the same Python and Ray versions everywhere (this
    machine too), the supervisor a start would give it (remote.supervisor) and why, temp and log dirs writable,
    their free space and whether systemd-tmpfiles deletes old files there (Debian 13's /tmp), head ports free or
    held by this cluster's Ray, clock skew. Changes nothing. Exit 1 if any check fails (warnings do not count).

    \b
    Example:
      sage cluster doctor
      sage cluster doctor --json
    """
    _, result, rows = operations.doctor(invocation)
    failed = [r for r in rows if not r["ok"]]
    if invocation.json:
        report.emit_json({"ok": not failed, "controller": operations.controller_versions(), "checks": rows})
    else:
        click.echo(report.table([[r["host"], r["check"], "FAIL" if not r["ok"] else "WARN" if r["warn"] else "ok",
                                  r["detail"], r["fix"]] for r in rows], ["HOST", "CHECK", "RESULT", "DETAIL", "FIX"]))
        click.echo(f"{len(failed)} check(s) failed." if failed else "All checks passed.")
    sys.exit(exit_code(result) if result.interrupted else (EXIT_FAILED if failed else 0))


@cluster.command()
@common_options()
def token(invocation: Invocation) -> None:
    """Print the Ray auth token, for people who submit jobs or connect clients.

    Every node is started with it (security.ray_auth: token, the default); a client without it is refused.

    \b
    Example:
      RAY_AUTH_MODE=token RAY_AUTH_TOKEN=$(sage cluster token) \\
        ray job submit --address http://head:8265 -- python job.py
    """
    cfg = operations.load(invocation)
    if not token_enabled(cfg):
        raise ConfigError(f"{cfg.path}: security.ray_auth is off, so the cluster has no token. "
                          "Fix: set it to token and run `sage cluster restart`.")
    click.echo(security.read_token())


@cluster.group(commands=[nodes.add, nodes.remove])
def scale() -> None:
    """Add or remove a worker while the cluster runs.

    \b
    Example:
      sage cluster scale add sage5:22
      sage cluster scale remove sage5:22
    """

