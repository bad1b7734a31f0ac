"""1 head + 3 workers, all over real SSH (the rig), driven through the `sage` CLI as a user would.

The tests share one rig cluster (one module-scoped set-up), but none depends on another having run: each brings
the cluster to the state it needs (the `as_written` config, the `running` cluster: cheap when it already is), so
any one runs alone (`-k`) or in any order.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import textwrap
import time

import pytest

from tests.conftest import Sage

pytestmark = pytest.mark.rig

HEAD, WORKERS, SPARE = "sage-head", ["sage-w1", "sage-w2", "sage-w3"], "sage-w4"
ALL = [HEAD, *WORKERS]
PY = "/opt/conda/envs/sage/bin/python"

# Runs on the head: one task pinned to each alive node; prints the host names the tasks ran on.
TASKS_ON_EVERY_NODE = textwrap.dedent("""
    import json, socket, sys, ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
    ray.init(address=sys.argv[1], log_to_driver=False)
    where = ray.remote(lambda: socket.gethostname())
    nodes = [n["NodeID"] for n in ray.nodes() if n["Alive"]]
    refs = [where.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n, soft=False)).remote() for n in nodes]
    print(json.dumps(sorted(ray.get(refs, timeout=120))))
""")

# Hand-written on purpose (not tests/rig/config.py's sage_config): the scale tests edit this very text and check
# that its comments and layout survive, as they must in a person's own file.
CONFIG = """\
# Rig cluster: one head, three workers. This comment must survive scale edits.
head:
  host: "sage-head"              # the head
  head_port: 6379
  dashboard_port: 8265
  dashboard_host: "127.0.0.1"
worker:
  bind_host: "localhost"         # each worker's own name
workers_ssh_hosts: "sage-w1:22,sage-w2:22,sage-w3:22"   # keep me
ssh:
  user: "sage"
  key_path: "{key}"
  connect_timeout: 5
remote:
  sage_home: "/home/sage"
  python_path: "/opt/conda/envs/sage/bin/python"
  ray_command: "/opt/conda/envs/sage/bin/ray"
  conda_env: "sage"
deploy:
  source: "{project}"
  exclude: ["secret.txt"]
"""


@pytest.fixture(scope="module")
def cluster(rig, tmp_path_factory):
    """A sage user with a config for the rig and a project to deploy; the cluster is stopped at the end."""
    home = tmp_path_factory.mktemp("home")
    project = tmp_path_factory.mktemp("project")
    (project / "pkg").mkdir()
    (project / "pkg" / "job.py").write_text("print('hello from the job')\n")
    (project / "README.txt").write_text("project readme\n")
    (project / "secret.txt").write_text("excluded by deploy.exclude\n")
    (project / ".git").mkdir()
    (project / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (project / "__pycache__").mkdir()
    (project / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"\0")
    config = home / "cluster.yaml"
    config.write_text(CONFIG.format(key=rig.key_path, project=project))
    s = Sage(home=home, config=config, cwd=project)
    yield s, project, rig
    s("cluster", "stop", timeout=300)
    s("worker", "remove", f"{SPARE}:22", timeout=300)


@pytest.fixture
def as_written(cluster):
    """The config as CONFIG writes it: a scale test that failed half-way may have left the spare worker in it."""
    s, _, _ = cluster
    if f"{SPARE}:22" in s.config.read_text():
        s("worker", "remove", f"{SPARE}:22", check=True, timeout=300)
    return cluster


@pytest.fixture
def running(as_written):
    """Ray up on the head and the three workers, all joined: a start (which changes only what is down) unless every
    node already runs its Ray daemons."""
    s, _, rig = as_written
    if not all(ray_pids(rig, name) for name in ALL):
        s("cluster", "start", check=True, timeout=600)
    assert wait_alive(s, 4) == 4
    return as_written


def ray_pids(rig, name: str) -> list[str]:
    out = rig.ssh(name, ["pgrep", "-u", "sage", "-f", "raylet|gcs_server"], check=False).stdout
    return out.split()


def alive(s: Sage) -> int:
    _, status = s.json("cluster", "status")
    return status["cluster"].get("alive", 0)


def wait_alive(s: Sage, want: int, timeout: float = 60) -> int:
    """Ray's count of alive nodes once it is `want`, or the last count after `timeout` s. Ray lists a killed raylet
    as alive until its health checks fail (~15 s), and a new one once it registered."""
    deadline = time.monotonic() + timeout
    while (count := alive(s)) != want and time.monotonic() < deadline:
        time.sleep(1)
    return count


def test_info_shows_the_config(as_written):
    s, _, _ = as_written
    out = s("cluster", "info", check=True).stdout
    assert "sage-head" in out and "sage-w1:22, sage-w2:22, sage-w3:22" in out
    code, data = s.json("cluster", "info")
    assert code == 0 and data["workers_ssh_hosts"] == [f"{w}:22" for w in WORKERS]


def test_deploy_copies_only_changes_and_deletes_nothing(as_written):
    s, project, rig = as_written
    # Nodes that have not had this project yet.
    (project / "pkg" / "job.py").write_text("print('hello from the job')\n")
    for name in ALL:
        shutil.rmtree(rig.host(name).home / "pkg", ignore_errors=True)
        (rig.host(name).home / "README.txt").unlink(missing_ok=True)
    w1 = rig.host("sage-w1")
    (w1.home / "my-notes.txt").write_text("the user's own file\n")
    keys_before = (w1.home / ".ssh" / "authorized_keys").read_text()

    code, first = s.json("cluster", "deploy")
    assert code == 0, first
    for name in ALL:
        home = rig.host(name).home
        assert (home / "pkg" / "job.py").read_text() == "print('hello from the job')\n", name
        assert (home / "README.txt").exists()
        for excluded in (".git", "__pycache__", "secret.txt"):
            assert not (home / excluded).exists(), f"{excluded} was deployed to {name}"
    assert {h["result"] for h in first["hosts"].values()} == {"changed"}

    code, second = s.json("cluster", "deploy")
    assert code == 0 and {h["result"] for h in second["hosts"].values()} == {"ok"}, second

    inode = (w1.home / "README.txt").stat().st_ino
    (project / "pkg" / "job.py").write_text("print('changed')\n")
    code, dry = s.json("cluster", "deploy", "--check")  # says what would change, changes nothing
    assert code == 0 and {h["result"] for h in dry["hosts"].values()} == {"changed"}, dry
    assert (w1.home / "pkg" / "job.py").read_text() == "print('hello from the job')\n"
    code, third = s.json("cluster", "deploy")
    assert code == 0 and {h["result"] for h in third["hosts"].values()} == {"changed"}
    assert (w1.home / "pkg" / "job.py").read_text() == "print('changed')\n"
    assert (w1.home / "README.txt").stat().st_ino == inode, "an unchanged file was copied again"
    assert (w1.home / "my-notes.txt").read_text() == "the user's own file\n"
    assert (w1.home / ".ssh" / "authorized_keys").read_text() == keys_before


def test_start_runs_tasks_on_every_host(as_written):
    s, _, rig = as_written
    s("cluster", "stop", check=True)
    code, start = s.json("cluster", "start")
    assert code == 0 and {n: h["result"] for n, h in start["hosts"].items()} == {n: "changed" for n in ALL}, start
    head_ip = rig.host(HEAD).ip
    # The head holds the cluster's token in ~/.ray/auth_token; a client there only needs token mode on.
    run = rig.ssh(HEAD, ["env", "RAY_AUTH_MODE=token", PY, "-c", TASKS_ON_EVERY_NODE, f"{head_ip}:6379"],
                  timeout=300)
    assert json.loads(run.stdout.strip().splitlines()[-1]) == sorted(ALL)

    again = s("cluster", "start", check=True)
    assert "changed" not in again.stdout.split("HOST", 1)[1], again.stdout


DASHBOARD_JOBS = textwrap.dedent("""
    import sys, urllib.error, urllib.request
    req = urllib.request.Request("http://127.0.0.1:8265/api/jobs/")
    if len(sys.argv) > 1:
        req.add_header("Authorization", "Bearer " + open(sys.argv[1]).read().strip())
    try:
        print(urllib.request.urlopen(req, timeout=30).status)
    except urllib.error.HTTPError as exc:
        print(exc.code)
""")


def test_token_auth_guards_the_cluster(running):
    s, _, rig = running
    token = s("cluster", "token", check=True).stdout.strip()
    for name in ALL:
        node_token = rig.host(name).home / ".ray" / "auth_token"
        assert node_token.read_text().strip() == token, name
        assert node_token.stat().st_mode & 0o777 == 0o600, name
    # The dashboard's job API (the ShadowRay door) refuses a caller without the token.
    assert rig.ssh(HEAD, [PY, "-c", DASHBOARD_JOBS]).stdout.strip() == "401"
    assert rig.ssh(HEAD, [PY, "-c", DASHBOARD_JOBS, "/home/sage/.ray/auth_token"]).stdout.strip() == "200"
    # A node without the token cannot join.
    spare = rig.host(SPARE)
    join = rig.ssh(SPARE, ["env", "RAY_AUTH_MODE=token", "RAY_AUTH_TOKEN=not-the-token",
                           "/opt/conda/envs/sage/bin/ray", "start", f"--address={rig.host(HEAD).ip}:6379",
                           f"--node-ip-address={spare.ip}", "--temp-dir=/tmp/ray_intruder"],
                   check=False, timeout=180)
    assert join.returncode != 0
    assert alive(s) == 4
    rig.ssh(SPARE, ["pkill", "-9", "-u", "sage", "-f", "ray"], check=False)
    # No secret at rest by accident: the token is in no run artifact, and the tool's files are private.
    state = s.home / ".sage"
    for path in state.rglob("*"):
        if path.is_file() and path.name != "ray_auth_token":
            assert token not in path.read_text(errors="replace"), f"token leaked into {path}"
        # Directories are closed to others (Ansible chmods a few files inside them 0644 on its own).
        if path.is_dir() or path.parent == state:
            assert path.stat().st_mode & 0o077 == 0, f"{path} is open to others"
    assert state.stat().st_mode & 0o777 == 0o700
    assert not list(state.rglob("artifacts/*/command")), "ansible-runner's environment dump was kept"


def test_status_tells_the_truth(running):
    s, _, rig = running
    code, status = s.json("cluster", "status")
    assert code == 0, status
    assert status["cluster"]["alive"] == 4
    assert {n: h["running"] for n, h in status["hosts"].items()} == {n: True for n in ALL}
    assert status["hosts"]["sage-w2"]["node_ip"] == rig.host("sage-w2").ip

    head = s("head", "status", check=True).stdout
    assert "Dashboard: http://127.0.0.1:8265" in head and "4 alive node(s)" in head


def test_a_dead_worker_is_reported_and_start_heals_only_it(running):
    s, _, rig = running
    # A worker's Ray dies: every status command says so and exits non-zero.
    rig.ssh("sage-w2", ["pkill", "-9", "-u", "sage", "-f", "ray"], check=False)
    code, status = s.json("cluster", "status")
    assert code == 1 and status["hosts"]["sage-w2"]["running"] is False
    assert status["hosts"]["sage-w1"]["running"] is True
    code, wstatus = s.json("worker", "status")
    assert code == 1 and wstatus["hosts"]["sage-w2"]["running"] is False

    # Heal once Ray itself counts it dead, or its ghost and its successor would both be counted.
    assert wait_alive(s, 3) == 3
    code, result = s.json("cluster", "start")
    assert code == 0, result
    assert {n: h["result"] for n, h in result["hosts"].items()} == {
        HEAD: "ok", "sage-w1": "ok", "sage-w2": "changed", "sage-w3": "ok"}
    assert alive(s) == 4


def test_a_head_whose_gcs_died_is_reported_at_once_and_start_builds_the_cluster_again(running):
    s, _, rig = running
    rig.ssh(HEAD, ["pkill", "-9", "-u", "sage", "-x", "gcs_server"], check=True)
    began = time.monotonic()
    code, status = s.json("cluster", "status")
    took = time.monotonic() - began
    print(f"status with the head's GCS killed: {took:.1f} s")  # it was 53 s (Ray's client timeouts), exit 0
    assert code == 1, status
    head = status["hosts"][HEAD]
    assert head["result"] == "failed" and "Ray's GCS (gcs_server) is not running on this head" in head["error"]
    assert took < 30  # a bound far from Ray's ~50 s client timeouts, with room for a loaded rig

    code, result = s.json("cluster", "start")
    assert code == 0, result
    assert result["hosts"][HEAD]["result"] == "changed"
    assert wait_alive(s, 4) == 4


def test_logs_and_restarts(running):
    s, _, _ = running
    logs = s("head", "logs", "--lines", "7", check=True).stdout.splitlines()
    assert logs[0].startswith("==> sage-head: /tmp/sage_head_logs/head.log")
    assert len(logs) == 8
    wlogs = s("worker", "logs", "--lines", "3", check=True).stdout
    assert all(f"==> {w}: /tmp/sage_worker_logs/worker.log" in wlogs for w in WORKERS)

    s("head", "restart", check=True)
    s("worker", "restart", check=True)  # workers rejoin the new head
    assert alive(s) == 4
    s("cluster", "restart", check=True)
    assert alive(s) == 4


def test_scale_add_and_remove(running):
    s, _, rig = running
    before = s.config.read_text()
    s("cluster", "scale", "add", f"{SPARE}:22", check=True)
    text = s.config.read_text()
    assert '"sage-w1:22,sage-w2:22,sage-w3:22,sage-w4:22"   # keep me' in text
    assert text.replace(",sage-w4:22", "") == before
    assert (rig.host(SPARE).home / "pkg" / "job.py").exists()
    assert alive(s) == 5

    s("cluster", "scale", "remove", f"{SPARE}:22", check=True)
    assert s.config.read_text() == before
    assert ray_pids(rig, SPARE) == []
    assert alive(s) == 4

    s("worker", "add", f"{SPARE}:22", check=True)
    assert alive(s) == 5
    s("worker", "remove", f"{SPARE}:22", check=True)
    assert alive(s) == 4 and s.config.read_text() == before


def test_unreachable_worker_is_reported_and_others_start(running):
    s, _, rig = running
    s("worker", "stop", check=True)
    rig.stop_host("sage-w3")
    try:
        code, result = s.json("worker", "start")
        assert code == 1
        assert result["hosts"]["sage-w3"]["result"] == "unreachable"
        assert result["hosts"]["sage-w3"]["error"]
        assert result["hosts"]["sage-w1"]["result"] == "changed"
        assert result["hosts"]["sage-w2"]["result"] == "changed"
    finally:
        rig.start_host("sage-w3")
    s("worker", "start", check=True)
    assert alive(s) == 4


def test_stop_leaves_no_ray_process(running):
    s, _, rig = running
    s("cluster", "stop", check=True)
    for name in [*ALL, SPARE]:
        assert ray_pids(rig, name) == [], name
    code, status = s.json("cluster", "status")
    assert code == 1 and not any(h["running"] for h in status["hosts"].values())


def test_changed_host_key_is_refused(as_written):
    s, _, rig = as_written
    s("worker", "status")  # accept-new learns every worker's key, if no test did before
    rig.regenerate_host_key("sage-w1")
    known_hosts = s.home / ".sage" / "known_hosts"
    try:
        code, result = s.json("worker", "status")
        assert code == 1
        w1 = result["hosts"]["sage-w1"]
        assert w1["result"] == "unreachable"
        assert "host key changed" in w1["error"] and "SHA256:" in w1["error"]
        assert result["hosts"]["sage-w2"]["result"] == "ok"
        # Deploy's rsync goes through the same ssh settings, so it refuses the host too (rsync fails: exit 12).
        code, result = s.json("cluster", "deploy")
        assert code == 1 and result["hosts"]["sage-w1"]["result"] == "failed", result
        assert "host key changed" in result["hosts"]["sage-w1"]["error"], result
        assert result["hosts"]["sage-w2"]["result"] in ("ok", "changed"), result
        # The fix the message names: forget the old key; accept-new then learns the new one.
        subprocess.run(["ssh-keygen", "-R", "sage-w1", "-f", str(known_hosts)], check=True, capture_output=True)
        code, result = s.json("worker", "status")
        assert result["hosts"]["sage-w1"]["result"] == "ok"
    finally:  # the other tests' ssh, sage's and the rig's own, trusts the new key
        subprocess.run(["ssh-keygen", "-R", "sage-w1", "-f", str(known_hosts)], capture_output=True)
        rig.write_known_hosts()
