"""A SAGE-shaped config on real SSH hosts and real Ray (issue 19): found as the project's config/cluster.yaml
while sage runs from a subdirectory; without a worker list it starts the head only (never the guide's example
hosts); the head runs from its own env (head.python_path over remote.*); two different worker lists exit 2; and
SAGE's own shape in full, python_path and ray_command empty, on hosts whose env is ~/miniconda3/envs/sage: every
node finds it, Ray counts each node's declared CPUs, status and doctor show the paths found.

The tests run in file order and share one head.
"""
from __future__ import annotations


import pytest

from tests.conftest import Sage
from tests.conftest_rig import ray_rig
from tests.rig import DEFAULT_ENV, rig_root

pytestmark = pytest.mark.rig

# Names of its own: the suite's shared rig, up meanwhile, holds the sage-* names.
HEAD, SPARE = "c-head", "c-w1"  # SPARE runs sshd and is listed nowhere: nothing may start there
OTHER = "c-w2"  # with SPARE, the workers of the last test's config

# SAGE's own services' sections, which sage-cluster leaves alone.
SAGE_SECTIONS = f"""\
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
""" + SAGE_SECTIONS


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    # One rig; torn down when the loop ends.
    for rig in ray_rig([HEAD, SPARE, OTHER], root=rig_root("configs"), first_ip=80):
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


DETECTED_CONFIG = f"""\
# SAGE Cluster Configuration, as SAGE wrote it: paths left empty to detect
head:
  host: "{HEAD}"
  head_port: 26379
  dashboard_port: 28265
  dashboard_host: "127.0.0.1"
  conda_env: "sage"
  python_path: ""
  ray_command: ""
  num_cpus: 3
  num_gpus: 0
worker:
  bind_host: "localhost"
  num_cpus: 2
  num_gpus: 0
ssh:
  user: "sage"
  key_path: "{{key}}"
  connect_timeout: 5
  workers:
    - host: "{SPARE}"
      port: 22
    - host: "{OTHER}"
      port: 22
remote:
  sage_home: "/home/sage"
  python_path: ""
  ray_command: ""
  conda_env: "sage"
""" + SAGE_SECTIONS


def test_detected_paths_in_each_nodes_miniconda3(cluster, tmp_path):
    s, rig, _ = cluster
    s("cluster", "stop", check=True, timeout=300)  # the head of the tests above
    found = "/home/sage/miniconda3/envs/sage/bin"
    for h in rig.hosts:  # each host's own ~/miniconda3/envs/sage; /opt/conda is not on any PATH
        envs = h.home / "miniconda3" / "envs"
        envs.mkdir(parents=True)
        (envs / "sage").symlink_to(DEFAULT_ENV)
    project = tmp_path / "SAGE"
    (project / "config").mkdir(parents=True)
    (project / "packages").mkdir()
    (project / ".git").mkdir()
    (project / "config" / "cluster.yaml").write_text(DETECTED_CONFIG.replace("{key}", str(rig.key_path)))
    d = Sage(home=s.home, cwd=project / "packages")
    try:
        d("cluster", "start", check=True, timeout=600)
        code, status = d.json("cluster", "status")
        assert code == 0, status
        assert status["cluster"]["alive"] == 3
        cpus = {name: h["ray_resources"]["CPU"] for name, h in status["hosts"].items()}
        assert cpus == {HEAD: 3, SPARE: 2, OTHER: 2}
        for name, h in status["hosts"].items():
            assert (h["python_path"], h["ray_command"]) == (f"{found}/python", f"{found}/ray"), name
        _, doctor = d.json("cluster", "doctor")
        rows = {(r["host"], r["check"]): r for r in doctor["checks"]}
        for name in (HEAD, SPARE, OTHER):
            assert rows[(name, "python_path")]["detail"] == f"auto: {found}/python", rows[(name, "python_path")]
            assert rows[(name, "python_path")]["ok"] and rows[(name, "ray_command")]["ok"]
            assert rows[(name, "ray_command")]["detail"] == f"auto: {found}/ray"
        # A worker whose env is nowhere fails alone, saying where it looked; the others stay up.
        config = project / "config" / "cluster.yaml"
        entry = f'- host: "{OTHER}"\n      port: 22\n'
        config.write_text(config.read_text().replace(entry, entry + "      remote: {conda_env: nosuch}\n"))
        start = d("cluster", "start", timeout=600)
        assert start.returncode == 1, start.stderr
        assert "no conda env 'nosuch' in /home/sage/miniconda3/envs/nosuch, " in start.stdout + start.stderr
        code, status = d.json("cluster", "status")
        assert status["cluster"]["alive"] == 3 and status["hosts"][SPARE]["running"], status
    finally:
        d("cluster", "stop", timeout=300)
