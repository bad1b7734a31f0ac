"""What the soak (issue 32) found an operator meets, on real hosts: a `sage` killed mid-start whose playbook went on
without the lock (3), a full temp dir nobody named and a hung sshd that held `status` for 23 s (4).

Its own small rig (k-head, k-w1, k-w2 on 127.0.0.70-72, Ray on 6387), so it never meets the other tests' clusters.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import Sage
from tests.conftest_rig import ray_rig
from tests.rig import Rig, rig_root
from tests.rig.config import sage_config

pytestmark = pytest.mark.rig

HEAD, WORKERS = "k-head", ["k-w1", "k-w2"]
ALL = [HEAD, *WORKERS]
CONNECT_TIMEOUT = 5
WORKER_TEMP = "/tmp/ray_k"


@pytest.fixture(scope="module")
def krig():
    yield from ray_rig(ALL, root=rig_root("soak-ops"), first_ip=70)


@pytest.fixture
def user(krig: Rig, tmp_path: Path):
    config = tmp_path / "sage.yaml"
    config.write_text(sage_config(krig, HEAD, WORKERS, head_port=6387, dashboard_port=8287, comment="soak findings",
                                  worker={"bind_host": "localhost", "temp_dir": WORKER_TEMP}))
    yield Sage(home=tmp_path, config=config, cwd=tmp_path)
    for name in ALL:
        krig.ssh(name, ["pkill", "-9", "-u", "sage", "-f", "ray"], check=False)


def in_hosts(krig: Rig, word: str) -> list[tuple[int, str]]:
    """(pid, cmdline) of the rig hosts' processes whose command line holds word."""
    return [(pid, cmd) for pid, cmd in krig.leftover_processes(ALL) if word in cmd]


def processes() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command line) of every process on this machine."""
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
                cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            out[int(entry)] = (int(stat.rpartition(")")[2].split()[1]), cmd.strip())
    return out


def descendants(root: int) -> set[int]:
    table = processes()
    found, grew = {root}, True
    while grew:
        more = {pid for pid, (ppid, _) in table.items() if ppid in found} - found
        found |= more
        grew = bool(more)
    return found - {root}


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def lock_holder(home: Path) -> int | None:
    for path in (home / ".sage" / "locks").glob("*.lock"):
        try:
            return json.loads(path.read_text() or "{}").get("pid")
        except ValueError:
            return None  # being written
    return None


def test_a_killed_sage_leaves_nothing_acting_once_the_next_command_holds_the_lock(user: Sage, krig: Rig):
    """Finding 3: SIGKILL of `sage cluster start` while its playbook runs on the hosts, then the next `sage`."""
    killed = subprocess.Popen([sys.executable, "-m", "sage_cluster", "cluster", "start"], env=user.env(),
                              cwd=user.home, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not in_hosts(krig, "bin/ray start"):  # the run's start is at work on a host
        assert killed.poll() is None and time.monotonic() < deadline, "the start never reached a host"
        time.sleep(0.05)
    run = descendants(killed.pid)  # its ansible-playbook, the workers Ansible forked, their ssh
    run = {pid for pid in run if "[mux]" not in processes().get(pid, (0, ""))[1]}  # ssh's shared masters
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    nxt = subprocess.Popen([sys.executable, "-m", "sage_cluster", "cluster", "stop"],
                           env=user.env(SAGE_LOCK_WAIT="300"), cwd=user.home, stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while lock_holder(user.home) != nxt.pid:
        assert nxt.poll() is None, f"the next command ended without the lock: {nxt.communicate()}"
        time.sleep(0.01)
    left = sorted(processes()[pid][1] for pid in run if alive(pid))
    on_nodes = in_hosts(krig, "bin/ray start") + in_hosts(krig, "sleep 0")  # a `ray start`, a module (pipelined)
    out, err = nxt.communicate(timeout=300)
    assert not left, f"the killed run's processes still ran when the next command held the lock: {left}"
    assert not on_nodes, f"the killed run still acted on the nodes: {on_nodes}"
    assert nxt.returncode == 0, err
    assert "killed" in err, f"the waiting command did not say what it waited for: {err}"


def nsenter(krig: Rig, name: str, argv: list[str]) -> None:
    """Run argv as root in a rig host's mount namespace."""
    subprocess.run(["nsenter", "-t", str(krig.host(name).init_pid), "-m", "--", *argv], check=True,
                   capture_output=True, text=True)


@pytest.fixture
def full_temp(krig: Rig):
    """k-w1's Ray temp dir on a small file system of its own, filled to the last byte."""
    nsenter(krig, "k-w1", ["mkdir", "-p", WORKER_TEMP])
    nsenter(krig, "k-w1", ["mount", "-t", "tmpfs", "-o", "size=2m,mode=1777", "tmpfs", WORKER_TEMP])
    subprocess.run(["nsenter", "-t", str(krig.host("k-w1").init_pid), "-m", "--",
                    "dd", "if=/dev/zero", f"of={WORKER_TEMP}/filler", "bs=64k"], capture_output=True)
    yield "k-w1"
    subprocess.run(["nsenter", "-t", str(krig.host("k-w1").init_pid), "-m", "--", "umount", "-l", WORKER_TEMP],
                   capture_output=True)


def test_a_full_temp_dir_is_named_by_doctor_and_by_start(user: Sage, full_temp: str):
    """Finding 4a: doctor has a row with the free space; the start that fails on it says so."""
    code, data = user.json("cluster", "doctor")
    checks = {(r["host"], r["check"]): r for r in data["checks"]}
    row = checks[(full_temp, "temp_dir space")]
    assert code == 1 and not row["ok"], row
    assert "free" in row["detail"] and WORKER_TEMP in row["detail"], row
    assert checks[("k-w2", "temp_dir space")]["ok"], checks[("k-w2", "temp_dir space")]
    code, result = user.json("cluster", "start")
    assert code == 1
    error = result["hosts"][full_temp]["error"]
    assert "no space left" in error and WORKER_TEMP in error, error
    assert result["hosts"]["k-w2"]["result"] == "changed", result["hosts"]["k-w2"]


@pytest.fixture
def hung_sshd(krig: Rig):
    """Every sshd of k-w2 stopped (its listener and the session of ssh's persisted master): it accepts TCP and
    never answers."""
    stopped = [pid for pid, cmd in krig.leftover_processes(["k-w2"]) if "sshd" in cmd]
    for pid in stopped:
        os.kill(pid, signal.SIGSTOP)
    yield "k-w2"
    for pid in stopped:
        os.kill(pid, signal.SIGCONT)


def timed_status(user: Sage) -> tuple[float, int, dict]:
    started = time.monotonic()
    code, result = user.json("cluster", "status", timeout=300)
    return time.monotonic() - started, code, result


def test_a_hung_sshd_is_given_up_within_the_connect_timeout(user: Sage, krig: Rig, request):
    """Finding 4b: a host whose sshd hangs behind ssh's persisted master."""
    healthy, _, result = timed_status(user)  # leaves every host's ssh master up (ControlPersist)
    assert all(h["result"] != "unreachable" for h in result["hosts"].values()), result
    host = request.getfixturevalue("hung_sshd")
    hung, code, result = timed_status(user)
    assert code != 0
    row = result["hosts"][host]
    assert row["result"] == "unreachable", row
    assert row["error"] == f"{host} did not answer within {CONNECT_TIMEOUT} s (ssh)", row
    # Before the fix, 23-24 s (ServerAlive); 10 s of slack: a loaded CI machine once took 11.5 s over a healthy run.
    assert hung - healthy < CONNECT_TIMEOUT + 10, f"status took {hung:.1f}s, {healthy:.1f}s when all were well"
