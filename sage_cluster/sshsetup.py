"""`sage cluster setup-ssh`: key login to every node, set up with the password where it fails
(playbooks/setup_ssh.yml; the work on the nodes is the action plugins/action/sage_key_login.py).

The password comes from $SAGE_SSH_PASSWORD, a --password-file or a hidden prompt on a terminal. It reaches the
playbook as the answer to its vars_prompt, typed into ansible-playbook's terminal by ansible-runner: never an
argument of a process (ansible-runner puts extra vars on the command line), never in a file or event of the run.
Ansible hands it to ssh through ssh_askpass (shared memory), without sshpass.
"""
from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

from ansible_collections.sage.cluster.plugins.module_utils import node
from ansible_collections.sage.cluster.plugins.plugin_utils.config import Config, ConfigError, Endpoint, is_this_machine

from sage_cluster import operations
from sage_cluster import report
from sage_cluster.lock import cluster_lock
from sage_cluster.runner import RunResult

PASSWORD_ENV = "SAGE_SSH_PASSWORD"
PASSWORD_VAR = "sage_provision_ssh_password"
# The start of the playbook's vars_prompt; ansible-playbook adds ": ".
PROMPT = "SSH password of the nodes' user"


def remote_nodes(cfg: Config) -> list[Endpoint]:
    return [ep for ep in [cfg.head_endpoint, *cfg.workers] if not is_this_machine(ep.host)]


def targets(cfg: Config, endpoints: list[Endpoint]) -> list[str]:
    """The inventory names of the nodes to set up: those named (each must be a remote node of the config), or all."""
    nodes = remote_nodes(cfg)
    if not endpoints:
        return [ep.host for ep in nodes]
    names = []
    for ep in endpoints:
        match = next((n.host for n in nodes if n.host.lower() == ep.host.lower() and n.port == ep.port), None)
        if match is None:
            raise ConfigError(f"{ep} is not a remote node of {cfg.path or 'the built-in default'} (its remote nodes: "
                              f"{', '.join(map(str, nodes)) or 'none'}). Fix: name one of those, or add it to "
                              "workers_ssh_hosts first (`sage cluster scale add`).")
        names.append(match)
    return names


def read_password_file(path: str) -> str:
    """The password: the file's first line, without its line break."""
    try:
        text = Path(path).expanduser().read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"--password-file {path}: {exc.strerror}. Fix: name a readable file holding the password.") from None
    password = text.splitlines()[0] if text else ""
    if not password:
        raise ConfigError(f"--password-file {path}: the file is empty. Fix: write the password on its first line.")
    return password


def password_from(password_file: str | None) -> str | None:
    """The password given without a prompt (--password-file, else $SAGE_SSH_PASSWORD), or None. The variable
    leaves this process's environment: ansible-playbook, ssh and the rest inherit it otherwise."""
    from_env = os.environ.pop(PASSWORD_ENV, None)
    if password_file:
        return read_password_file(password_file)
    return from_env or None


def setup(invocation: operations.Invocation, endpoints: list[Endpoint], password: str | None,
          ask: Callable[[list[str]], str] | None = None) -> tuple[Config, RunResult]:
    """Key login to the nodes. Without a password, the nodes whose key login fails are asked about through
    ask(hosts) (a prompt, on a terminal) and set up in a second run; without ask they fail, saying so."""
    cfg = operations.load(invocation)
    names = targets(cfg, endpoints)
    if not names:
        report.note("Every node is this machine: no SSH to set up.")
        return cfg, RunResult(playbook="setup_ssh.yml", hosts={}, status="successful", seconds=0.0, artifact_dir="")
    with cluster_lock(cfg.path):
        result = _run(cfg, invocation, names, password)
        waiting = failed_logins(result)
        if password is None and waiting and ask is not None and not result.interrupted:
            again = _run(cfg, invocation, waiting, ask(waiting))
            result = RunResult(playbook=again.playbook, hosts={**result.hosts, **again.hosts}, status=again.status,
                               seconds=result.seconds + again.seconds, artifact_dir=again.artifact_dir,
                               interrupted=again.interrupted)
    return cfg, result


def _run(cfg: Config, invocation: operations.Invocation, names: list[str], password: str | None) -> RunResult:
    if password is None:  # no prompt, and key login alone
        return operations.run(cfg, invocation, "setup_ssh.yml", "setup-ssh", limit=",".join(names),
                              extra={PASSWORD_VAR: ""})
    return operations.run(cfg, invocation, "setup_ssh.yml", "setup-ssh", limit=",".join(names),
                   passwords={re.escape(PROMPT) + r".*:\s*$": password})


def failed_logins(result: RunResult) -> list[str]:
    """Hosts a run could not log in to with the key (Ansible's connection, deploy's rsync, setup-ssh's key login
    without a password): setup-ssh's to fix."""
    return sorted(n for n, h in result.hosts.items() if h.kind == node.AUTH)
