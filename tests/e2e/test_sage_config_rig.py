"""A SAGE-shaped config on real SSH hosts and real Ray (issue 19): found as the project's config/cluster.yaml
while sage runs from a subdirectory; without a worker list it starts the head only (never the guide's example
hosts); the head runs from its own env (head.python_path over remote.*); two different worker lists exit 2.

The tests run in file order and share one head.
"""
from __future__ import annotations

import os

import pytest

from tests.conftest import Sage
from tests.conftest_rig import ray_rig
from tests.rig import DEFAULT_ENV

pytestmark = pytest.mark.rig

HEAD, SPARE = "sage-head", "sage-w1"  # SPARE runs sshd and is listed nowhere: nothing may start there

CONFIG = f"""\
# SAGE Cluster Configuration (the shape of SAGE's config/cluster.yaml): no workers listed
head:
  host: "{HEAD}"
  head_port: 26379
  dashboard_port: 28265
  dashboard_host: "127.0.0.1"
  conda_env: "sage"
  python_path: "{DEFAULT_ENV}/bin/python"   # the head's own env
  ray_command: "{DEFAULT_ENV}/bin/ray"
  num_cpus: 2
worker:
  bind_host: "localhost"
  num_cpus: 1
ssh:
  user: "sage"
  key_path: "{{key}}"
  connect_timeout: 5
remote:
  sage_home: "/home/sage"
  python_path: "/nonexistent/env/bin/python"  # the workers' (there are none): the head must not use it
  ray_command: "/nonexistent/env/bin/ray"
  conda_env: "other"
daemon:
  host: "{HEAD}"
  port: 19001
jobmanager:
  port: 19001
output:
  format: "table"
monitor:
  refresh_interval: 5
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    root = os.environ.get("SAGE_RIG_ROOT", "/var/tmp/sage-rig") + "-configs"
    for rig in ray_rig([HEAD, SPARE], root=root, first_ip=80):  # one rig; torn down when the loop ends
        home = tmp_path_factory.mktemp("home")
        project = home / "SAGE"
        (project / "packages" / "sage-kernel").mkdir(parents=True)
        (project / "pyproject.toml").write_text("[project]\nname = 'isage'\n")
        (project / "config").mkdir()
        config = project / "config" / "cluster.yaml"
        config.write_text(CONFIG.replace("{key}", str(rig.key_path)))
        # No SAGE_CONFIG, no --config: sage must find the project's file from the subdirectory.
        s = Sage(home=home, cwd=project / "packages" / "sage-kernel")
        yield s, rig, config
        s("cluster", "stop", timeout=300)


def raylets(rig, name: str) -> list[str]:
    ps = rig.ssh(name, ["ps", "-u", "sage", "-o", "args"], check=False).stdout.splitlines()
    return [line for line in ps if "raylet" in line]


def test_without_a_worker_list_start_runs_the_head_only(cluster):
    s, rig, config = cluster
    start = s("cluster", "start", check=True, timeout=600)
    # SAGE's four sections: one note, and no warning about them.
    assert "sections of SAGE's own services; sage-cluster leaves them alone" in start.stderr
    assert "warning" not in start.stderr.lower(), start.stderr
    code, status = s.json("cluster", "status")
    assert code == 0, status
    assert set(status["hosts"]) == {HEAD}  # no sage2, no sage4: the file names no workers
    assert status["cluster"]["alive"] == 1
    assert status["hosts"][HEAD]["ray_resources"]["CPU"] == 2
    # The head's Ray runs from head.python_path's env, not remote.*'s (which does not exist).
    assert any(f"{DEFAULT_ENV}/" in line for line in raylets(rig, HEAD)), raylets(rig, HEAD)
    assert raylets(rig, SPARE) == []
    info = s("cluster", "info", check=True).stdout
    assert f"Config:     {config} (the project's config (project root {config.parent.parent}" in info
    assert "Workers:    none" in info


def test_two_different_worker_lists_exit_2_with_one_line(cluster):
    s, rig, config = cluster
    text = config.read_text()
    config.write_text(text.replace('  connect_timeout: 5\n', f'  connect_timeout: 5\n  workers:\n    - host: {SPARE}\n')
                      + f'workers_ssh_hosts: "{HEAD}-other:22"\n')
    try:
        proc = s("cluster", "start", timeout=120)
    finally:
        config.write_text(text)
    assert proc.returncode == 2 and proc.stdout == ""
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: {config}:") and "list different workers" in lines[0]
    assert raylets(rig, SPARE) == []  # nothing was started on the host the ssh.workers list named
