"""The ops-staff door: plain `ansible-inventory` / `ansible-playbook` from the repository root, on the rig.

As docs/ops.md, part A, says: SAGE_CONFIG names the config, `inventory/sage.yml` (the inventory plugin
sage.cluster.sage) is the inventory, and the playbooks run with the repository's ansible.cfg. The `sage` CLI must
see the very cluster these playbooks started.

This rig is separate from the one the main e2e tests use (own root, addresses, names and Ray ports), so both
can run at the same time on one machine.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

from tests.rig import Rig, ensure_env, rig_root, why_not_available
from tests.rig.config import sage_config

pytestmark = pytest.mark.rig

REPO = Path(__file__).resolve().parents[2]
ROOT = rig_root("ops")
FIRST_IP = 60
HEAD, WORKERS = "ops-head", ["ops-w1", "ops-w2"]
ALL = [HEAD, *WORKERS]
HEAD_PORT, DASHBOARD_PORT = 6391, 8291
PY = "/opt/conda/envs/sage/bin/python"

# Runs on the head: Ray's own count of alive nodes, as a driver sees it.
ALIVE_NODES = textwrap.dedent("""
    import sys, ray
    ray.init(address=sys.argv[1], log_to_driver=False, logging_level="ERROR")
    print("ALIVE", sum(1 for n in ray.nodes() if n["Alive"]))
""")

RECAP_LINE = re.compile(r"^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


class Ops:
    """An operator's shell: repository root as cwd, SAGE_CONFIG set, a private HOME (so ~/.sage/known_hosts)."""

    def __init__(self, rig: Rig, home: Path, config: Path):
        self.rig, self.home, self.config = rig, home, config

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SAGE_", "ANSIBLE_"))}
        env.update(HOME=str(self.home), SAGE_CONFIG=str(self.config), **extra)
        return env

    def run(self, *argv: str, timeout: float = 300, env: dict[str, str] | None = None
            ) -> subprocess.CompletedProcess:
        return subprocess.run(list(argv), cwd=REPO, env=env or self.env(), capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)

    def playbook(self, playbook: str, *extra: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
        proc = self.run("ansible-playbook", "-i", "inventory/sage.yml", f"playbooks/{playbook}", *extra, **kw)
        if check and proc.returncode != 0:
            raise AssertionError(f"ansible-playbook {playbook} {' '.join(extra)} exited {proc.returncode}\n"
                                 f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
        return proc

    def sage(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return self.run(sys.executable, "-m", "sage_cluster", *args, timeout=timeout)

    def ray_alive(self) -> int:
        return ray_alive(self.rig, HEAD, HEAD_PORT)

    def raylets(self, name: str) -> list[str]:
        return raylets(self.rig, name)


def ray_alive(rig: Rig, head: str, port: int) -> int:
    """Ray's count of alive nodes, asked on the head."""
    # Token auth is on (security.ray_auth defaults to token): the head keeps the token in ~/.ray/auth_token,
    # so a client there only needs token mode on.
    out = rig.ssh(head, ["env", "RAY_AUTH_MODE=token", PY, "-c", ALIVE_NODES, f"{rig.host(head).ip}:{port}"],
                  timeout=120).stdout
    counts = [line.split()[1] for line in out.splitlines() if line.startswith("ALIVE ")]
    assert counts, f"no count from the head:\n{out}"
    return int(counts[-1])


def raylets(rig: Rig, name: str) -> list[str]:
    """The raylets of the rig's user on a host."""
    return rig.ssh(name, ["pgrep", "-u", rig.user, "raylet"], check=False).stdout.split()


def recap(stdout: str) -> dict[str, dict[str, int]]:
    """PLAY RECAP: {host: {ok, changed, unreachable, failed}}."""
    tail = stdout.rsplit("PLAY RECAP", 1)
    assert len(tail) == 2, f"no PLAY RECAP in:\n{stdout}"
    return {m[1]: dict(ok=int(m[2]), changed=int(m[3]), unreachable=int(m[4]), failed=int(m[5]))
            for m in RECAP_LINE.finditer(tail[1])}


def knows(known_hosts: Path, name: str) -> bool:
    """Whether known_hosts has a key for the host (names may be hashed: HashKnownHosts)."""
    return known_hosts.exists() and subprocess.run(
        ["ssh-keygen", "-F", name, "-f", str(known_hosts)], capture_output=True).returncode == 0


@pytest.fixture(scope="module")
def ops():
    reason = why_not_available()
    if reason:
        pytest.skip(reason)
    with Rig(ALL, root=ROOT, first_ip=FIRST_IP) as rig:  # tears down on failure, Ctrl-C and SIGTERM too
        ensure_env()
        # A short HOME: ansible.cfg's control_path (~/.ansible/cp/sage-<40 hex>.<16 random>) must fit the
        # 107 bytes of a Unix socket path, and pytest's tmp paths are too long for it.
        home = Path(tempfile.mkdtemp(prefix="ops-", dir="/tmp"))
        config = home / "cluster.yaml"
        config.write_text(sage_config(rig, HEAD, WORKERS, head_port=HEAD_PORT, dashboard_port=DASHBOARD_PORT,
                                      comment="The ops-door rig: one head, two workers."))
        o = Ops(rig, home, config)
        try:
            yield o
        finally:
            # Ray's processes live in the hosts' PID namespaces, so taking the rig down ends them anyway;
            # stop through the playbook first, as an operator would.
            o.playbook("cluster.yml", "-e", "sage_action=stop", check=False, timeout=180)
            shutil.rmtree(home, ignore_errors=True)


def test_inventory_graph_shows_the_groups_and_hosts(ops):
    proc = ops.run("ansible-inventory", "-i", "inventory/sage.yml", "--graph", timeout=60)
    assert proc.returncode == 0, proc.stderr
    graph = proc.stdout
    for group in ("@sage_cluster", "@sage_head", "@sage_workers"):
        assert group in graph, graph
    head_part = graph.split("@sage_head:", 1)[1].split("@sage_workers:", 1)[0]
    workers_part = graph.split("@sage_workers:", 1)[1]
    assert HEAD in head_part and not any(w in head_part for w in WORKERS), graph
    assert all(w in workers_part for w in WORKERS) and HEAD not in workers_part, graph


def test_cluster_start_playbook_starts_ray_everywhere(ops):
    proc = ops.playbook("cluster.yml", "-e", "sage_action=start")
    hosts = recap(proc.stdout)
    assert set(hosts) == set(ALL), proc.stdout
    assert all(h["failed"] == 0 and h["unreachable"] == 0 for h in hosts.values()), proc.stdout
    assert all(h["changed"] >= 1 for h in hosts.values()), proc.stdout
    for name in ALL:
        assert ops.raylets(name), f"no raylet on {name}"
    assert ops.ray_alive() == 3
    # accept-new learned each host's key into the private ~/.sage/known_hosts.
    known_hosts = ops.home / ".sage" / "known_hosts"
    assert [name for name in ALL if not knows(known_hosts, name)] == [], known_hosts.read_text()
    assert "Failed to add the host" not in proc.stdout + proc.stderr, proc.stdout


# ssh does not create the directory of its known_hosts file, and reading the inventory writes nothing: the run's
# ray_node task makes it before it contacts a node (without a token to make, which would make ~/.sage too).
def test_fresh_home_learns_host_keys(ops):
    home = Path(tempfile.mkdtemp(prefix="opsf-", dir="/tmp"))
    try:
        config = home / "cluster.yaml"
        config.write_text(ops.config.read_text() + 'security:\n  ray_auth: "off"\n')
        env = dict(ops.env(), HOME=str(home), SAGE_CONFIG=str(config))
        proc = ops.playbook("status.yml", "-vvv", env=env)
        assert "Failed to add the host" not in proc.stdout + proc.stderr
        assert [name for name in ALL if not knows(home / ".sage" / "known_hosts", name)] == []
    finally:
        shutil.rmtree(home, ignore_errors=True)


def test_sage_cli_sees_the_same_cluster(ops):
    proc = ops.sage("cluster", "status", "--json")
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
    status = json.loads(proc.stdout)
    assert status["cluster"]["alive"] == 3, status
    assert {n: h["running"] for n, h in status["hosts"].items()} == {n: True for n in ALL}, status
    assert status["hosts"]["ops-w1"]["node_ip"] == ops.rig.host("ops-w1").ip


def test_status_is_status_yml_s_and_flags_nodes_that_run_other_code(ops):
    """One status path: cluster.yml refuses status, pointing to status.yml, and touches no node; status.yml
    reports every node, with the stale flag from the controller's source revision (nothing was deployed here)."""
    proc = ops.playbook("cluster.yml", "-e", "sage_action=status", check=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "sage_action=status is not this playbook's: run ansible-playbook -i inventory/sage.yml " \
           "playbooks/status.yml" in proc.stdout, proc.stdout
    hosts = recap(proc.stdout)
    assert sum(h["ok"] + h["changed"] for h in hosts.values()) == 0, proc.stdout  # no task ran on a node
    for book, group in (("head.yml", "sage_head"), ("worker.yml", "sage_workers")):
        for action in ("status", "doctor"):  # doctor too has one path, doctor.yml
            proc = ops.playbook(book, "-e", f"sage_action={action}", check=False)
            assert proc.returncode == 2 and f"playbooks/{action}.yml --limit {group}" in proc.stdout, proc.stdout

    proc = ops.playbook("status.yml", env=ops.env(ANSIBLE_STDOUT_CALLBACK="ansible.posix.json"))
    result = json.loads(proc.stdout)
    task = [t for play in result["plays"] for t in play["tasks"] if "Ray node" in t["task"]["name"]][-1]
    sage = {name: task["hosts"][name]["sage"] for name in ALL}
    assert {n: s["running"] for n, s in sage.items()} == {n: True for n in ALL}, sage
    assert {n: s["deploy"] for n, s in sage.items()} == {
        n: {"revision": None, "install_ok": None, "stale": True} for n in ALL}, sage
    assert sage[HEAD]["cluster"]["alive"] == 3 and sage["ops-w1"]["node_ip"] == ops.rig.host("ops-w1").ip, sage


def test_second_start_changes_nothing(ops):
    proc = ops.playbook("cluster.yml", "-e", "sage_action=start")
    hosts = recap(proc.stdout)
    assert set(hosts) == set(ALL), proc.stdout
    assert {n: h["changed"] for n, h in hosts.items()} == {n: 0 for n in ALL}, proc.stdout
    assert ops.ray_alive() == 3


def test_head_logs_playbook(ops):
    proc = ops.playbook("head.yml", "-e", "sage_action=logs", "-e", "ray_node_log_lines=5")
    hosts = recap(proc.stdout)
    assert set(hosts) == {HEAD} and hosts[HEAD]["ok"] >= 1, proc.stdout
    assert hosts[HEAD]["changed"] == hosts[HEAD]["failed"] == hosts[HEAD]["unreachable"] == 0, proc.stdout

    # The lines themselves, through a machine-readable callback.
    proc = ops.playbook("head.yml", "-e", "sage_action=logs", "-e", "ray_node_log_lines=5",
                        env=ops.env(ANSIBLE_STDOUT_CALLBACK="ansible.posix.json"))
    result = json.loads(proc.stdout)
    task = [t for play in result["plays"] for t in play["tasks"] if HEAD in t["hosts"]][-1]
    sage = task["hosts"][HEAD]["sage"]
    assert sage["log_file"] == "/tmp/sage_head_logs/head.log", sage
    assert len(sage["log"]) == 5, sage["log"]
    head_log = (ops.rig.host(HEAD).tmp / "sage_head_logs" / "head.log").read_text().splitlines()
    assert sage["log"] == head_log[-5:]


def test_cluster_stop_leaves_no_raylet(ops):
    proc = ops.playbook("cluster.yml", "-e", "sage_action=stop")
    hosts = recap(proc.stdout)
    assert set(hosts) == set(ALL), proc.stdout
    assert all(h["failed"] == 0 and h["changed"] >= 1 for h in hosts.values()), proc.stdout
    for name in ALL:
        assert ops.raylets(name) == [], name
