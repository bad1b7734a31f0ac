"""The newcomer's path: no config at all, `sage cluster start` runs a real Ray head on this machine.

It runs as a developer with a cluster of their own would run it: their ~/.sage/config.yaml and $SAGE_CONFIG name
another cluster (a rig host as its head), and every command of the test, its teardown's stop included, must
leave that cluster alone.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest_rig import ray_rig
from tests.rig import DEFAULT_ROOT

RAY_NAMES = ("raylet", "gcs_server")
TESTERS_HEAD = "tester-head"


def my_ray_processes() -> list[int]:
    """Ray daemons of this user (the rig's hosts run theirs as another user)."""
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.stat(f"/proc/{pid}").st_uid != os.getuid():
                continue
            argv0 = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")[0].decode(errors="replace")
        except OSError:
            continue
        if os.path.basename(argv0) in RAY_NAMES:
            pids.append(int(pid))
    return pids


def port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


@pytest.fixture(scope="module")
def testers_rig():
    root = os.environ.get("SAGE_RIG_ROOT", DEFAULT_ROOT) + "-tester"
    yield from ray_rig([TESTERS_HEAD], root=root, first_ip=80)


@pytest.fixture
def testers_cluster(testers_rig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The tester's own cluster, named by their HOME's ~/.sage/config.yaml, by $SAGE_CONFIG and by
    $ANSIBLE_INVENTORY in the environment pytest runs in. Checked after the test and its teardown: its head's sshd
    logged no connection, and the tester's ~/.sage holds no run. Then the same check sees a command that does use
    the tester's environment, so it is no check that cannot fail."""
    home = tmp_path / "tester"
    config = home / ".sage" / "config.yaml"
    config.parent.mkdir(parents=True)
    config.write_text(f"# the tester's own cluster\nhead:\n  host: {TESTERS_HEAD}\nworkers_ssh_hosts: []\n"
                      f"ssh:\n  user: {testers_rig.user}\n  key_path: {testers_rig.key_path}\n")
    for name, value in {"HOME": home, "SAGE_CONFIG": config, "ANSIBLE_INVENTORY": f"{TESTERS_HEAD},"}.items():
        monkeypatch.setenv(name, str(value))
    sshd_log = testers_rig.host(TESTERS_HEAD).log
    seen = sshd_log.stat().st_size
    yield
    assert sshd_log.read_bytes()[seen:] == b"", "a test command connected to the tester's own head"
    assert sorted(p.name for p in (home / ".sage").iterdir()) == ["config.yaml"], "a test command ran as the tester"
    # The same run in the tester's own environment does reach their head.
    subprocess.run([sys.executable, "-m", "sage_cluster", "cluster", "status"], capture_output=True, timeout=300)
    assert f"Accepted publickey for {testers_rig.user}".encode() in sshd_log.read_bytes()[seen:]


@pytest.fixture
def clean_machine(sage, testers_cluster):
    if my_ray_processes() or not port_free(6379):
        pytest.fail("a Ray cluster already runs on this machine (port 6379 or a raylet); stop it first")
    yield
    sage("cluster", "stop", timeout=120)


def test_builtin_default_start_task_status_stop(sage, clean_machine):
    start = sage("cluster", "start", check=True)
    assert "built-in single-machine default" in start.stderr
    assert "localhost" in start.stdout and "changed" in start.stdout

    # Idempotent: a second start finds the head running and changes nothing.
    again = sage("cluster", "start", check=True)
    assert "changed" not in again.stdout.split("HOST", 1)[1]

    code, status = sage.json("cluster", "status")
    assert code == 0, status
    head = status["hosts"]["localhost"]
    assert head["running"] is True and head["node_type"] == "head"
    assert status["cluster"]["alive"] == 1

    # A Ray task really runs on the cluster that sage started, for a client holding the token.
    address = f"{head['node_ip']}:6379"
    token = sage("cluster", "token", check=True).stdout.strip()
    assert len(token) == 64 and (sage.home / ".ray" / "auth_token").read_text().strip() == token
    assert (sage.home / ".ray" / "auth_token").stat().st_mode & 0o777 == 0o600
    client_env = {**sage.env(), "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
    task = subprocess.run(
        [sys.executable, "-c",
         "import ray, socket, sys; ray.init(address=sys.argv[1]);"
         "f = ray.remote(lambda: socket.gethostname());"
         "print('ran-on', ray.get(f.remote()), len([n for n in ray.nodes() if n['Alive']]))", address],
        capture_output=True, text=True, timeout=180, env=client_env)
    assert task.returncode == 0, task.stderr
    assert f"ran-on {socket.gethostname()} 1" in task.stdout

    logs = sage("head", "logs", "--lines", "5", check=True)
    assert "head.log" in logs.stdout

    sage("cluster", "stop", check=True)
    assert my_ray_processes() == []
    code, status = sage.json("cluster", "status")
    assert code == 1 and status["hosts"]["localhost"]["running"] is False
    # Stopping a stopped cluster is fine and changes nothing.
    stop_again = sage("cluster", "stop", check=True)
    assert "changed" not in stop_again.stdout.split("HOST", 1)[1]
