"""`sage cluster dashboard` without a head: the ssh command it builds, and its one-line errors."""
from __future__ import annotations

import socket
from pathlib import Path

from ansible_collections.sage.cluster.plugins.plugin_utils import config

from sage_cluster import dashboard

from tests.unit.helpers import PY_SAGE, run, stderr_lines

CONFIG = """\
head:
  host: 127.0.0.254          # nothing listens here (the test runs in its own network namespace)
  dashboard_host: 127.0.0.1
  dashboard_port: 8265
workers_ssh_hosts: ""
ssh:
  user: ops
  key_path: ~/keys/id
  connect_timeout: 3
  strict_host_key_checking: "yes"
  known_hosts: ~/kh
"""


def test_tunnel_is_ssh_with_the_inventorys_host_key_settings(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    path = tmp_path / "c.yaml"
    path.write_text(CONFIG)
    argv = dashboard.tunnel_argv(config.load(path), 18265)
    assert argv[:4] == ["ssh", "-N", "-L", "127.0.0.1:18265:127.0.0.1:8265"]
    assert argv[-2:] == ["--", "127.0.0.254"]
    pairs = list(zip(argv, argv[1:]))
    assert ("-l", "ops") in pairs and ("-i", str(tmp_path / "keys" / "id")) in pairs and ("-p", "22") in pairs
    for opt in ("StrictHostKeyChecking=yes", f"UserKnownHostsFile={tmp_path / 'kh'}", "IdentitiesOnly=yes",
                "ExitOnForwardFailure=yes", "BatchMode=yes", "ConnectTimeout=3"):
        assert ("-o", opt) in pairs, opt
    # A dashboard on every interface is reached through the head's loopback.
    path.write_text(CONFIG.replace("dashboard_host: 127.0.0.1", 'dashboard_host: "0.0.0.0"'))
    assert dashboard.tunnel_argv(config.load(path), 1)[3] == "127.0.0.1:1:127.0.0.1:8265"


def test_unreachable_head_and_taken_port_are_one_line(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    path = home / "c.yaml"
    path.write_text(CONFIG)
    proc = run([*PY_SAGE, "cluster", "dashboard", "--config", str(path), "--port", "18265"], home, timeout=60)
    lines = stderr_lines(proc)
    assert proc.returncode == 1 and len(lines) == 1, proc.stderr
    assert "cannot open the tunnel to the head 127.0.0.254" in lines[0] and "refused" in lines[0], lines[0]
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = run([*PY_SAGE, "cluster", "dashboard", "--config", str(path), "--port", str(port)], home)
    lines = stderr_lines(proc)
    assert proc.returncode == 1 and len(lines) == 1 and f"local port {port} is already in use" in lines[0]
    assert "--port" in lines[0] and "Traceback" not in proc.stderr
