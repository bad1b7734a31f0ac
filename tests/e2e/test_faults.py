"""When things already go wrong: hostile values, partial failures, a silent host, Ctrl-C, and `doctor`.

Its own small rig (f-head, f-w1, f-w2 on 127.0.0.40-42, Ray on 6381) so it never meets the main cluster.
"""
from __future__ import annotations

import glob
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import Sage
from tests.conftest_rig import ray_rig
from tests.rig import rig_root

pytestmark = pytest.mark.rig

NAMES = ["f-head", "f-w1", "f-w2"]
SILENT_IP = "127.0.0.49"
# Every character a shell would act on; the roles must pass it through as one argument.
HOSTILE_LOG_DIR = "/tmp/sage logs 'q' \"dq\" $(touch /tmp/pwned) ;x"
HOSTILE_HOME = "/home/sage/my proj's \"dir\""

CONFIG = """\
head:
  host: "f-head"
  head_port: 6381
  dashboard_port: 8281
  dashboard_host: "127.0.0.1"
  temp_dir: "/tmp/ray_f"
  log_dir: {log_dir}
worker:
  temp_dir: "/tmp/ray_f"
  log_dir: {log_dir}
workers_ssh_hosts: {workers}
ssh:
  user: "sage"
  key_path: "{key}"
  connect_timeout: 3
remote:
  sage_home: {home}
  python_path: "{python}"
  ray_command: "{ray}"
deploy:
  source: "{project}"
"""


def q(text: str) -> str:
    """A YAML double-quoted scalar."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


@pytest.fixture(scope="module")
def frig():
    yield from ray_rig(NAMES, root=rig_root("faults"), first_ip=40)


@pytest.fixture
def user(frig, tmp_path):
    """A sage user whose config() writes the cluster config; stops Ray on the rig afterwards."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "app.py").write_text("print('app')\n")
    s = Sage(home=tmp_path, config=tmp_path / "sage.yaml", cwd=project)

    def config(log_dir="/tmp/sage_f_logs", home="/home/sage", workers=("f-w1:22", "f-w2:22"),
               python="/opt/conda/envs/sage/bin/python", ray="/opt/conda/envs/sage/bin/ray") -> Sage:
        s.config.write_text(CONFIG.format(log_dir=q(log_dir), home=q(home), workers=q(",".join(workers)),
                                          key=frig.key_path, python=python, ray=ray, project=project))
        return s
    s.configure = config
    yield s
    for name in NAMES:
        frig.ssh(name, ["pkill", "-9", "-u", "sage", "-f", "ray"], check=False)


def test_hostile_values_reach_no_shell(user, frig):
    s = user.configure(log_dir=HOSTILE_LOG_DIR, home=HOSTILE_HOME, workers=("f-w1:22",))
    s("cluster", "deploy", check=True)
    s("cluster", "start", check=True)
    for name in ("f-head", "f-w1"):
        host = frig.host(name)
        assert (host.home / "my proj's \"dir\"" / "app.py").read_text() == "print('app')\n", name
        log = host.tmp / HOSTILE_LOG_DIR.removeprefix("/tmp/") / ("head.log" if name == "f-head" else "worker.log")
        assert log.exists(), f"{name}: no log at the hostile path"
        assert not (host.tmp / "pwned").exists(), f"{name}: a shell ran $(...) from the config"
    _, status = s.json("cluster", "status")
    assert status["cluster"]["alive"] == 2
    s("cluster", "stop", check=True)


def test_missing_ray_command_fails_only_that_worker(user, frig):
    # ray_command lives in each host's own home: present on the head and f-w1, absent on f-w2.
    for name in ("f-head", "f-w1"):
        frig.ssh(name, ["mkdir", "-p", "/home/sage/bin"])
        frig.ssh(name, ["ln", "-sf", "/opt/conda/envs/sage/bin/ray", "/home/sage/bin/ray"])
    s = user.configure(ray="/home/sage/bin/ray")
    code, result = s.json("cluster", "start")
    assert code == 1
    hosts = result["hosts"]
    assert hosts["f-head"]["result"] == "changed" and hosts["f-w1"]["result"] == "changed", hosts
    assert hosts["f-w2"]["result"] == "failed"
    assert "ray_command /home/sage/bin/ray is not an executable file" in hosts["f-w2"]["error"]
    out = s("cluster", "status").stdout
    assert "f-w2" in out and "2 alive node(s)" in out


def test_workers_fail_fast_when_the_head_is_down(user):
    s = user.configure()
    started = time.monotonic()
    code, result = s.json("worker", "start")
    assert code == 1
    for name in ("f-w1", "f-w2"):
        assert result["hosts"][name]["result"] == "failed"
        assert "does not accept connections" in result["hosts"][name]["error"]
    assert time.monotonic() - started < 90


@pytest.fixture
def silent_host():
    """Accepts TCP on port 22 and never says a word, like a hung sshd."""
    server = socket.create_server((SILENT_IP, 22))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.5)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                pass
    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield SILENT_IP
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


def test_a_silent_host_does_not_hang_the_cli(user, silent_host):
    s = user.configure(workers=("f-w1:22", f"{silent_host}:22"))
    started = time.monotonic()
    code, result = s.json("worker", "status", timeout=300)
    elapsed = time.monotonic() - started
    assert code == 1
    assert result["hosts"][silent_host]["result"] == "unreachable"
    assert result["hosts"]["f-w1"]["result"] == "ok"
    assert elapsed < 60, f"took {elapsed:.0f}s with connect_timeout 3"


def test_ctrl_c_ends_the_run_and_says_who_finished(user):
    s = user.configure()
    proc = subprocess.Popen([sys.executable, "-m", "sage_cluster", "cluster", "start"], env=s.env(), cwd=s.home,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(4)  # inside the head's `ray start`
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Interrupted" in err and "Hosts that had reported" in err
    s("cluster", "stop")


def rows(s: Sage) -> tuple[int, dict[tuple[str, str], dict]]:
    code, data = s.json("cluster", "doctor")
    return code, {(r["host"], r["check"]): r for r in data["checks"]}


# Doctor's versions row compares the nodes' Python with this machine's: the rig's hosts have Debian's 3.11.
@pytest.mark.nodes_python
def test_doctor_passes_on_a_healthy_cluster_and_names_each_fault(user, frig):
    s = user.configure()
    code, checks = rows(s)
    assert code == 1 and not checks[("f-w2", "deploy")]["ok"], checks  # healthy, but nothing deployed there yet
    assert checks[("f-w2", "deploy")]["detail"] == "never deployed"
    s("cluster", "deploy", check=True)
    code, checks = rows(s)
    failing = [k for k, r in checks.items() if not r["ok"]]
    assert code == 0 and not failing, failing
    assert {k[1] for k in checks} >= {"ssh", "python_path", "ray_command", "versions", "temp_dir", "log_dir",
                                      "port 6381", "port 8281", "clock", "deploy"}

    # Each fault makes its own row fail, with a fix hint.
    frig.ssh("f-head", ["mkdir", "-p", "/home/sage/nope"])
    s = user.configure(python="/home/sage/no-python", ray="/home/sage/no-ray")
    code, checks = rows(s)
    assert code == 1
    assert not checks[("f-w1", "python_path")]["ok"] and checks[("f-w1", "python_path")]["fix"]
    assert not checks[("f-w1", "ray_command")]["ok"]

    s = user.configure(python="/usr/bin/python3")  # a Python without Ray
    code, checks = rows(s)
    assert not checks[("f-w2", "versions")]["ok"] and "ray None" in checks[("f-w2", "versions")]["detail"]

    s = user.configure(log_dir="/root/forbidden")
    code, checks = rows(s)
    assert not checks[("f-w1", "log_dir")]["ok"]

    s = user.configure()
    squatter = subprocess.Popen(frig.ssh_argv("f-head") + ["--", "exec python3 -m http.server 6381 --bind 0.0.0.0"],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and socket.socket().connect_ex(("127.0.0.40", 6381)) != 0:
            time.sleep(0.2)
        code, checks = rows(s)
        assert code == 1
        assert not checks[("f-head", "port 6381")]["ok"]
        assert "in use" in checks[("f-head", "port 6381")]["detail"]
    finally:
        squatter.terminate()
        frig.ssh("f-head", ["pkill", "-u", "sage", "-f", "http.server"], check=False)

    # One host's clock two minutes ahead: sshd hands libfaketime to that host's sessions.
    libs = glob.glob("/usr/lib/*/faketime/libfaketime.so.1")
    assert libs, "libfaketime is missing (.ci/run installs it)"
    environment = frig.host("f-w1").home / ".ssh" / "environment"
    environment.write_text(f"LD_PRELOAD={libs[0]}\nFAKETIME=+120s\n")
    try:
        code, checks = rows(s)
        assert code == 1
        clock = checks[("f-w1", "clock")]
        assert not clock["ok"] and 100 < float(clock["detail"].split("s")[0]) < 140, clock
        assert checks[("f-w2", "clock")]["ok"]
    finally:
        environment.unlink()

    frig.stop_host("f-w2")
    try:
        code, checks = rows(s)
        assert code == 1 and not checks[("f-w2", "ssh")]["ok"]
    finally:
        frig.start_host("f-w2")


@pytest.mark.nodes_python
def test_doctor_table_for_people(user):
    s = user.configure()
    s("cluster", "deploy", check=True)
    out = s("cluster", "doctor").stdout
    assert "HOST" in out and "CHECK" in out and "All checks passed." in out


def test_paths_outside_home(user):
    # sage_home outside the user's reach: deploy fails on each host with rsync's reason, exit 1.
    s = user.configure(home="/root/not-yours")
    code, result = s.json("cluster", "deploy")
    assert code == 1
    assert all(h["result"] == "failed" and h["error"] for h in result["hosts"].values())
    assert Path("/root/not-yours").exists() is False
