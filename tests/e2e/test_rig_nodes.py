"""Nodes that differ (issue 14), on real SSH hosts and real Ray: a head that runs no tasks, a worker with a custom
resource and an env of its own, a plain worker; scale add with resource options; the dashboard through SSH.

The tests run in file order and share one cluster of the head and two workers.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request

import pytest

from tests.conftest import Sage

pytestmark = pytest.mark.rig

HEAD, ODD, PLAIN = "sage-head", "sage-w1", "sage-w2"
ENV, ODD_ENV = "/home/sage/env", "/home/sage/w1env"  # each under a host's own /home: it exists there only

# Run as the rig user on a host: a venv of its own that reaches the rig's Ray through a .pth file, and a `ray`
# script whose interpreter is that venv's python. So the env is real, and lives only on that host.
MAKE_ENV = textwrap.dedent("""
    import glob, os, subprocess, sys
    dest = sys.argv[1]
    subprocess.run(["/usr/bin/python3", "-m", "venv", "--without-pip", dest], check=True)
    base = glob.glob("/opt/conda/envs/sage/lib/python3*/site-packages")[0]
    site = glob.glob(dest + "/lib/python3*/site-packages")[0]
    with open(site + "/rig_ray.pth", "w") as fh:
        fh.write(base + "\\n")
    script = open("/opt/conda/envs/sage/bin/ray").read().split("\\n", 1)[1]
    with open(dest + "/bin/ray", "w") as fh:
        fh.write("#!" + dest + "/bin/python\\n" + script)
    os.chmod(dest + "/bin/ray", 0o755)
""")

CONFIG = f"""\
# Issue 14 rig cluster: nodes that differ. Every comment here must survive scale edits.
head:
  host: "sage-head"              # the head
  dashboard_host: "127.0.0.1"    # loopback only: reach it with `sage cluster dashboard`
  num_cpus: 0                    # the head runs no tasks
worker:
  num_cpus: 1                    # every worker's default
workers_ssh_hosts:
  - host: sage-w1                # its own env, host keys file and accelerator
    ssh:
      known_hosts: ~/.sage/w1_known_hosts
    remote:
      python_path: {ODD_ENV}/bin/python
      ray_command: {ODD_ENV}/bin/ray
    num_cpus: 2
    memory: "1GiB"
    object_store_memory: "200MiB"
    resources: {{accel: 2}}
    labels: {{zone: a}}
  - sage-w2:22                   # a plain worker
ssh:
  user: "sage"
  key_path: "{{key}}"
  connect_timeout: 5
remote:
  python_path: "{ENV}/bin/python"   # not on sage-w1
  ray_command: "{ENV}/bin/ray"
  conda_env: ""
# the end
"""

# On the head: tasks that need the custom resource, and plain tasks; prints the hosts each kind ran on.
TASKS = textwrap.dedent("""
    import json, socket, sys, ray
    ray.init(address=sys.argv[1], log_to_driver=False)
    def where():
        return socket.gethostname()
    accel = ray.remote(num_cpus=0, resources={"accel": 1})(where)
    plain = ray.remote(num_cpus=1)(where)
    ran = {"accel": ray.get([accel.remote() for _ in range(12)], timeout=120),
           "plain": ray.get([plain.remote() for _ in range(12)], timeout=120)}
    print(json.dumps({k: sorted(set(v)) for k, v in ran.items()}))
""")


@pytest.fixture(scope="module")
def cluster(rig, tmp_path_factory):
    for name, env in ((HEAD, ENV), (ODD, ODD_ENV), (PLAIN, ENV)):
        rig.ssh(name, ["/usr/bin/python3", "-c", MAKE_ENV, env], timeout=120)
    home = tmp_path_factory.mktemp("home")
    config = home / "cluster.yaml"
    config.write_text(CONFIG.replace("{key}", str(rig.key_path)))
    project = tmp_path_factory.mktemp("project")  # deploy.source ".": scale add deploys it to the new worker
    (project / "job.py").write_text("print('job')\n")
    s = Sage(home=home, config=config, cwd=project)
    yield s, rig
    s("cluster", "stop", timeout=300)


def knows(known_hosts, name: str) -> bool:
    """Whether known_hosts has a key for the host (names may be hashed: HashKnownHosts)."""
    return subprocess.run(["ssh-keygen", "-F", name, "-f", str(known_hosts)], capture_output=True).returncode == 0


def status(s: Sage) -> dict:
    code, data = s.json("cluster", "status")
    assert code == 0, data
    return data


def test_the_odd_worker_has_no_cluster_wide_env(cluster):
    _, rig = cluster
    assert not (rig.host(ODD).home / "env").exists() and (rig.host(ODD).home / "w1env" / "bin" / "ray").exists()
    assert not (rig.host(PLAIN).home / "w1env").exists()


def test_start_gives_each_node_exactly_its_declared_resources(cluster):
    s, rig = cluster
    s("cluster", "start", check=True, timeout=600)
    hosts = status(s)["hosts"]
    res = {name: hosts[name]["ray_resources"] for name in (HEAD, ODD, PLAIN)}
    custom = {name: {k for k in r if k not in ("CPU", "GPU", "memory", "object_store_memory")}
              for name, r in res.items()}
    assert res[HEAD].get("CPU", 0) == 0 and custom[HEAD] == set(), res[HEAD]
    assert res[ODD]["CPU"] == 2 and res[ODD]["accel"] == 2 and custom[ODD] == {"accel"}, res[ODD]
    assert res[ODD]["memory"] == 2**30 and res[ODD]["object_store_memory"] == 200 * 2**20, res[ODD]
    assert hosts[ODD]["ray_labels"] == {"zone": "a"}
    assert res[PLAIN]["CPU"] == 1 and custom[PLAIN] == set(), res[PLAIN]
    assert all(hosts[name]["resource_mismatch"] == [] for name in res), hosts
    # The odd worker's Ray runs from its own env, and its host key went to its own known_hosts.
    assert any(ODD_ENV in line for line in rig.ssh(ODD, ["ps", "-u", "sage", "-o", "args"]).stdout.splitlines())
    assert knows(s.home / ".sage" / "w1_known_hosts", ODD)
    assert not knows(s.home / ".sage" / "known_hosts", ODD) and knows(s.home / ".sage" / "known_hosts", PLAIN)
    table = s("cluster", "status", check=True).stdout
    odd_row = next(line for line in table.splitlines() if line.startswith(ODD))
    assert "accel 2" in odd_row and "CPU 2" in odd_row and "zone=a" in odd_row, table


def test_tasks_go_where_the_resources_are(cluster):
    _, rig = cluster
    run = rig.ssh(HEAD, ["env", "RAY_AUTH_MODE=token", f"{ENV}/bin/python", "-c", TASKS,
                         f"{rig.host(HEAD).ip}:6379"], timeout=300)
    ran = json.loads(run.stdout.strip().splitlines()[-1])
    assert ran["accel"] == [ODD], ran
    assert HEAD not in ran["plain"] and set(ran["plain"]) <= {ODD, PLAIN}, ran


def test_status_flags_a_node_whose_ray_differs_from_the_config(cluster):
    s, _ = cluster
    text = s.config.read_text()
    s.config.write_text(text.replace("resources: {accel: 2}", "resources: {accel: 3}"))
    try:
        proc = s("cluster", "status")
        hosts = status(s)["hosts"]
    finally:
        s.config.write_text(text)
    assert hosts[ODD]["resource_mismatch"] == ["accel declared 3, Ray has 2"]
    assert hosts[PLAIN]["resource_mismatch"] == []
    assert f"warning: {ODD}: Ray's resources differ from the config (accel declared 3, Ray has 2)" in proc.stderr


def test_scale_add_with_resource_options_writes_the_mapping(cluster):
    s, _ = cluster
    s("cluster", "scale", "remove", f"{PLAIN}:22", check=True, timeout=300)
    before = s.config.read_text()
    assert PLAIN not in before
    s("cluster", "scale", "add", f"{PLAIN}:22", "--num-cpus", "1", "--resources", "tpu=1", "--label", "zone=b",
      check=True, timeout=600)
    after = s.config.read_text()
    item = '  - {host: "sage-w2", port: 22, num_cpus: 1, resources: {"tpu": 1}, labels: {"zone": "b"}}\n'
    last = "    labels: {zone: a}\n"  # the odd worker's mapping ends here, and the new item follows it
    assert after == before.replace(last, last + item)
    assert all(line in after for line in before.splitlines() if "#" in line)
    hosts = status(s)["hosts"]
    assert hosts[PLAIN]["ray_resources"]["tpu"] == 1 and hosts[PLAIN]["ray_labels"] == {"zone": "b"}
    assert hosts[PLAIN]["resource_mismatch"] == []
    # scale remove takes the mapping item out again, and nothing else.
    s("cluster", "scale", "remove", f"{PLAIN}:22", check=True, timeout=300)
    assert s.config.read_text() == before
    assert PLAIN not in status(s)["hosts"]


def _get(url: str, token: str | None = None) -> int:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        return urllib.request.urlopen(request, timeout=30).status
    except urllib.error.HTTPError as exc:
        return exc.code


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_dashboard_through_ssh(cluster):
    s, _ = cluster
    token = s("cluster", "token", check=True).stdout.strip()
    port = _free_port()
    tunnel = subprocess.Popen([sys.executable, "-m", "sage_cluster", "cluster", "dashboard", "--port", str(port)],
                              env=s.env(), cwd=s.home, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = tunnel.stdout.readline()
        assert first.startswith(f"Dashboard: http://127.0.0.1:{port}"), (first, tunnel.poll())
        assert "sage cluster token" in tunnel.stdout.readline()  # how to pass the token
        url = f"http://127.0.0.1:{port}/api/jobs/"
        assert _get(url) == 401  # the dashboard's own answer, through the tunnel: token auth is on
        assert _get(url, token) == 200
        assert len(_tunnel_ssh(port)) == 1
    finally:
        tunnel.send_signal(signal.SIGINT)  # what Ctrl-C sends
        code = tunnel.wait(timeout=30)
    assert code == 0, tunnel.stderr.read()
    # Free again: a new listener gets it (with SO_REUSEADDR, as ssh and sage bind it: the tunnel's closed
    # connections may wait out TIME_WAIT on that port).
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen()
    assert _tunnel_ssh(port) == [], "ssh outlived the tunnel command"


def _tunnel_ssh(port: int) -> list[int]:
    """Running (not zombie) ssh processes forwarding this port."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            argv = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
            state = open(f"/proc/{pid}/stat").read().rpartition(")")[2].split()[0]
        except OSError:
            continue
        if argv[0] == b"ssh" and any(a.startswith(f"127.0.0.1:{port}:".encode()) for a in argv) and state != "Z":
            found.append(int(pid))
    return found
