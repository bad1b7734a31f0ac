"""`sage cluster setup-ssh` and `sage cluster provision`: bare machines become cluster nodes (attached in
cluster.py)."""
from __future__ import annotations

import sys

import click

from ansible_collections.sage.cluster.plugins.plugin_utils.config import Config, Endpoint

from sage_cluster import operations
from sage_cluster import provision as prov
from sage_cluster import report, sshsetup
from sage_cluster.cli.common import HostPort, common_options, exit_code
from sage_cluster.runner import RunResult


def _ask(hosts: list[str]) -> str:
    return click.prompt(f"SSH password for {', '.join(hosts)} (key login fails there)", hide_input=True, err=True)


@click.command(name="setup-ssh")
@click.argument("endpoints", nargs=-1, metavar="[HOST:PORT]...", type=HostPort())
@click.option("--password-file", metavar="PATH", help="Read the password from the first line of this file.")
@common_options(check=True, json=True)
def setup_ssh(invocation: operations.Invocation, endpoints: tuple[Endpoint, ...], password_file: str | None) -> None:
    """Key login to every remote node (or those named): where ssh.key_path is not yet taken, log in once with the
    password and add its public key to the node's ~/.ssh/authorized_keys (0700 dir, 0600 file, never the same key
    twice), then prove key login. The key is made when missing (ed25519); host keys are learned under
    ssh.strict_host_key_checking into ssh.known_hosts. Nodes that already take the key are left alone.

    The password: $SAGE_SSH_PASSWORD, --password-file, or a hidden prompt on a terminal; never an argument of
    any process, never in output, logs or run files. Exit 1 when a node failed.

    \b
    Example:
      sage cluster setup-ssh
      SAGE_SSH_PASSWORD=... sage cluster setup-ssh sage5:22
      sage cluster setup-ssh --password-file ~/.sage/node-password
    """
    password = sshsetup.password_from(password_file)
    ask = _ask if password is None and sys.stdin.isatty() and not invocation.json else None
    _, result = sshsetup.setup(invocation, list(endpoints), password, ask)
    _finish(result, "setup-ssh", "SSH", "ssh", invocation)


@click.command()
@click.argument("endpoints", nargs=-1, metavar="[HOST:PORT]...", type=HostPort())
@click.option("--wheelhouse", is_flag=True,
              help="Install from wheels built on this machine and sent with rsync, not from the nodes' index.")
@common_options(check=True, json=True)
def provision(invocation: operations.Invocation, endpoints: tuple[Endpoint, ...], wheelhouse: bool) -> None:
    """Give every node (or those named; this machine too when it is one) this machine's Ray, as
    ray[default]==VERSION in the env of remote.python_path: installed, upgraded or downgraded there; where that
    env does not exist, a venv is made at its place from a Python of this machine's major.minor found on the node.
    A node whose pip cannot get the release from its index gets wheels built here (once per Ray release, Python
    and platform, cached under ~/.sage/wheels), sent with rsync and installed with --no-index; --wheelhouse does
    that for every node. deploy.pip_args carry your own index. Nodes sharing an env take turns; an env already
    right is left alone. Says when the nodes' Python patch releases differ. --check says per node what would change.

    \b
    Example:
      sage cluster provision --check
      sage cluster provision
      sage cluster provision sage5:22 --wheelhouse
    """
    cfg, result = prov.provision(invocation, list(endpoints), wheelhouse)
    if not invocation.json:
        prov.summary_note(cfg, result)
    _finish(result, "provision", "ENV", "provision", invocation)


def offer_setup_ssh(cfg: Config, result: RunResult, invocation: operations.Invocation) -> bool:
    """On a terminal, after a run that could not log in to some nodes with the key: offer setup-ssh for those (the
    password once, at a hidden prompt). True when it ran and each of them now takes the key: run again then."""
    hosts = sshsetup.failed_logins(result)
    if not hosts or invocation.json or invocation.check or result.interrupted or not sys.stdin.isatty():
        return False
    if not click.confirm(f"Key login fails on {', '.join(hosts)}. Set it up now with the password "
                         "(sage cluster setup-ssh)?", default=True, err=True):
        return False
    ports = {ep.host: ep.port for ep in [cfg.head_endpoint, *cfg.workers]}
    _, fixed = sshsetup.setup(invocation, [Endpoint(h, ports[h]) for h in hosts], sshsetup.password_from(None), _ask)
    for name, h in sorted(fixed.hosts.items()):
        report.note(f"{name}: setup-ssh {h.state}{': ' + h.error if h.error else ''}")
    return fixed.ok


def say_next_steps(cfg: Config, result: RunResult, invocation: operations.Invocation, then: str = "") -> None:
    """After a run that failed on machines still bare: the command each one needs (start, scale add), and then."""
    lines = prov.next_steps(cfg, result)
    if lines and not invocation.json:
        for line in lines + ([then] if then else []):
            report.note(line)


def _finish(result: RunResult, title: str, column: str, key: str, invocation: operations.Invocation) -> None:
    """The per-host lines: the result, what was done there (the role's `sage` dict) or the error."""
    if invocation.json:
        report.emit_json(report.run_json(result))
    else:
        rows = [[name, h.state, h.error or _text(h.data.get(key))] for name, h in sorted(result.hosts.items())]
        verdict = "interrupted" if result.interrupted else ("done" if result.ok else "FAILED on some hosts")
        click.echo(f"{title}: {verdict} in {result.seconds:.1f}s")
        click.echo(report.table(rows or [["(no hosts)", "", ""]], ["HOST", "RESULT", column]))
        if invocation.check:
            click.echo("(check mode: nothing was changed)")
    sys.exit(exit_code(result))


def _text(value: object) -> str:
    if isinstance(value, dict):
        return str(value.get("summary", ""))
    return str(value or "")
