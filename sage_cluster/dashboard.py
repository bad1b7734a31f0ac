"""`sage cluster dashboard`: the head's Ray dashboard on a local port, through an SSH tunnel.

The one place where Python runs ssh itself: a tunnel is a long-lived local process, not remote work, so it is
no playbook. It goes to the head as Ansible does: the same user, key, timeout and host key policy and
known_hosts (inventory.ssh_options), so a host key Ansible would refuse is refused here too.
"""
from __future__ import annotations

import socket
import subprocess
import time

from ansible_collections.sage.cluster.plugins.module_utils import node
from ansible_collections.sage.cluster.plugins.plugin_utils import inventory
from ansible_collections.sage.cluster.plugins.plugin_utils.config import Config

from sage_cluster import ray_node, security
from sage_cluster.runner import failure_reason


class TunnelFailed(Exception):
    """The tunnel could not be opened or broke: one line, exit 1."""


def local_target(cfg: Config) -> str:
    """Where the dashboard listens, as seen on the head: its loopback when it listens on every interface."""
    host = ray_node.dashboard_local_host(cfg["head"]["dashboard_host"])
    return f"[{host}]" if ":" in host else host


def tunnel_argv(cfg: Config, local_port: int) -> list[str]:
    """ssh -N -L as an argument list: nothing here goes through a shell."""
    ssh, head = cfg["ssh"], cfg.head_endpoint
    forward = f"127.0.0.1:{local_port}:{local_target(cfg)}:{cfg['head']['dashboard_port']}"
    return ["ssh", "-N", "-L", forward, "-p", str(head.port), "-l", ssh["user"],
            "-i", str(_expand(ssh["key_path"])), *inventory.ssh_options(ssh),
            "-o", f"ConnectTimeout={ssh['connect_timeout']}", "-o", "BatchMode=yes",
            # Fail at once when the local port cannot be bound, and notice a head that went away.
            "-o", "ExitOnForwardFailure=yes", "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=3",
            "--", head.host]


def _expand(path: str) -> str:
    from pathlib import Path
    return str(Path(path).expanduser())


def open_tunnel(cfg: Config, local_port: int) -> subprocess.Popen:
    """Start ssh and return once the local port forwards to the head; TunnelFailed with ssh's reason if not."""
    security.prepare_controller(cfg)  # the known_hosts dir, where ssh learns the head's key
    if not node.port_free(local_port, "127.0.0.1"):
        raise TunnelFailed(f"local port {local_port} is already in use on this machine. "
                           "Fix: pick another with --port, e.g. --port 18265.")
    proc = subprocess.Popen(tunnel_argv(cfg, local_port), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # Ctrl-C reaches sage, which closes the tunnel in order
    deadline = time.monotonic() + cfg["ssh"]["connect_timeout"] + 15
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise TunnelFailed(f"cannot open the tunnel to the head {cfg.head_endpoint.host}: {reason(proc)}")
            try:
                socket.create_connection(("127.0.0.1", local_port), timeout=1).close()
                return proc
            except OSError:
                time.sleep(0.1)
    except BaseException:  # Ctrl-C while connecting: no ssh left behind
        close(proc)
        raise
    close(proc)
    raise TunnelFailed(f"the tunnel to the head {cfg.head_endpoint.host} did not open within "
                       f"{cfg['ssh']['connect_timeout'] + 15} s. Fix: check `sage cluster doctor`.")


def reason(proc: subprocess.Popen) -> str:
    """ssh's own reason in one line (a changed host key is named as the runner names it)."""
    text = proc.stderr.read() if proc.stderr else ""
    if "REMOTE HOST IDENTIFICATION HAS CHANGED" in text:
        return failure_reason({"msg": text})
    # ssh's last line is its fatal one; warnings (a key file missing, a host key learnt) are not the reason.
    return node.telling_line(text.splitlines(), words=(), skip=("Warning:",),
                             none=f"ssh exited with code {proc.returncode}")


def dashboard_answers(local_port: int, token: str | None) -> str | None:
    """Ray's version as the dashboard reports it through the tunnel, or None when it does not answer."""
    import json
    import urllib.error
    import urllib.request  # with http and email: imported here, not on every sage command's start

    request = urllib.request.Request(f"http://127.0.0.1:{local_port}/api/version")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response).get("ray_version", "?")
    except (OSError, ValueError, urllib.error.URLError):
        return None


def interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def close(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
