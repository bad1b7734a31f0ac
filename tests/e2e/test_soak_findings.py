"""Issue 32's soak findings 1, 2 and 5 on the rig: a stopped raylet, the old node Ray lists after a heal, and the
head's row and the footer with fault_tolerance local. One cluster (head + 2 workers, fault tolerance local) for all.
"""
from __future__ import annotations

import os
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import Sage
from tests.conftest_rig import ray_rig
from tests.rig import rig_root
from tests.rig.config import sage_config

pytestmark = pytest.mark.rig

HEAD, WORKERS = "sf-head", ["sf-w1", "sf-w2"]
ALL = [HEAD, *WORKERS]
# test_rig_cluster's bound for a status of a running cluster on a rig whose 2 cores other runs share.
STATUS_SECONDS = 30


@pytest.fixture(scope="module")
def frig():
    yield from ray_rig(ALL, root=rig_root("soak-findings"), first_ip=200)


@pytest.fixture(scope="module")
def user(frig, tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    s = Sage(home=home, config=home / "cluster.yaml")
    s.config.write_text(sage_config(frig, HEAD, WORKERS, head_port=6399, dashboard_port=8299,
                                    comment="issue 32 findings", head={"fault_tolerance": "local"}))
    yield s
    s("cluster", "stop", timeout=300)


@pytest.fixture
def running(user):
    user("cluster", "start", check=True, timeout=600)
    return user


def raylet(rig, name: str) -> str:
    return rig.ssh(name, ["pgrep", "-u", rig.user, "-x", "raylet"]).stdout.split()[0]


def status(s: Sage) -> tuple[int, dict, float]:
    began = time.monotonic()
    code, data = s.json("cluster", "status")
    return code, data, time.monotonic() - began


def test_a_raylet_not_working_is_a_failed_row_naming_its_host_at_once(running, frig):
    pid = raylet(frig, WORKERS[0])
    frig.ssh(WORKERS[0], ["kill", "-STOP", pid])
    try:
        code, data, took = status(running)
        print(f"status with a stopped raylet: {took:.1f} s")
        assert code == 1 and took < STATUS_SECONDS, data
        row = data["hosts"][WORKERS[0]]
        assert row["result"] == "failed" and "raylet is stopped" in row["error"], row
        assert all(data["hosts"][h]["result"] == "ok" for h in (HEAD, WORKERS[1])), data
        text = running("cluster", "status", check=False).stdout
        assert any(line.startswith(WORKERS[0]) and "raylet is stopped" in line for line in text.splitlines()), text
        # One start heals it: the stopped raylet is replaced, and the start says why.
        code, start = running.json("cluster", "start")
        assert code == 0, {n: h["error"] for n, h in start["hosts"].items()}
        assert "raylet was stopped" in (start["hosts"][WORKERS[0]].get("note") or ""), start["hosts"][WORKERS[0]]
        assert raylet(frig, WORKERS[0]) != pid
        assert status(running)[0] == 0
    finally:
        frig.ssh(WORKERS[0], ["kill", "-CONT", pid], check=False)


def host_pid(rig, name: str) -> int:
    """The raylet of rig host `name` as this machine numbers it (the rig's hosts have PID namespaces of their own)."""
    option = f"--node_ip_address={rig.host(name).ip}".encode()
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if proc.name.isdigit() and os.path.basename(argv[0]) == b"raylet" and option in argv:
            return int(proc.name)
    raise AssertionError(f"no raylet of {name} on this machine")


@contextmanager
def frozen(pid: int):
    """The process frozen by a cgroup freezer, as `docker pause` or `systemctl freeze` do; thawed and put back after."""
    v1 = Path("/sys/fs/cgroup/freezer")
    v2 = Path("/sys/fs/cgroup")
    if v1.is_dir():
        state, freeze, thaw = "freezer.state", "FROZEN", "THAWED"
        home = v1 / next(line.split(":", 2)[2] for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines()
                         if line.split(":")[1] == "freezer").lstrip("/")
    elif (v2 / "cgroup.freeze").exists() or (v2 / "cgroup.controllers").exists():
        state, freeze, thaw = "cgroup.freeze", "1", "0"
        home = v2 / Path(f"/proc/{pid}/cgroup").read_text().split("::", 1)[1].strip().lstrip("/")
    else:
        pytest.fail("this machine has no cgroup freezer (v1 or v2) to freeze a raylet with")
    group = home / f"sage-test-frozen-{pid}"
    group.mkdir()
    try:
        (group / "cgroup.procs").write_text(str(pid))
        (group / state).write_text(freeze)
        yield
    finally:
        (group / state).write_text(thaw)
        (home / "cgroup.procs").write_text(str(pid))
        group.rmdir()


def test_a_frozen_raylet_that_proc_calls_running_fails_its_row_by_its_health_check(running, frig):
    """A raylet whose cgroup is frozen is in /proc state D, not T: only asking it shows it does not work."""
    pid = host_pid(frig, WORKERS[1])
    with frozen(pid):
        code, data, took = status(running)
        print(f"status with a frozen raylet: {took:.1f} s")
        row = data["hosts"][WORKERS[1]]
        assert code == 1 and took < STATUS_SECONDS, data
        assert row["result"] == "failed" and "does not answer within" in row["error"], row
        assert row["raylet_answers"] is False and row["raylet_state"] != "T", row
        others = [data["hosts"][h] for h in (HEAD, WORKERS[0])]
        assert all(h["result"] == "ok" and h["raylet_answers"] for h in others), data
        # A start cannot replace it (a frozen process does not die) and says so, where it once called it started.
        code, start = running.json("cluster", "start")
        assert code != 0 and "does not answer within" in start["hosts"][WORKERS[1]]["error"], start
    # Thawed, it answers again: the same raylet, and status passes.
    code, data, _ = status(running)
    assert code == 0 and data["hosts"][WORKERS[1]]["raylet_answers"] is True, data
    assert host_pid(frig, WORKERS[1]) == pid


def test_after_a_heal_each_host_has_one_alive_node_or_says_why(running, frig):
    frig.ssh(WORKERS[1], ["kill", "-9", raylet(frig, WORKERS[1])])
    code, start = running.json("cluster", "start")
    assert code == 0, {n: h["error"] for n, h in start["hosts"].items()}
    _, data, _ = status(running)
    ips = {frig.host(n).ip: n for n in ALL}
    alive = Counter(n["node_ip"] for n in data["cluster"]["nodes"] if n["alive"])
    notes = " ".join(h.get("note") or "" for h in start["hosts"].values())
    # What is left of its Ray (if its agents outlived the raylet) is not "a Ray of another cluster".
    assert "not part of the cluster" not in (start["hosts"][WORKERS[1]].get("note") or ""), start["hosts"][WORKERS[1]]
    for ip, name in ips.items():
        # One node per host, unless both start and status say Ray still lists the old one.
        assert alive[ip] == 1 or ("old raylet" in notes and "old raylet" in data["hosts"][name].get("ray_note", "")), \
            (name, alive, notes, data["hosts"][name])
    text = running("cluster", "status").stdout
    footer = next(line for line in text.splitlines() if line.startswith("Ray (from the head)"))
    assert data["cluster"]["alive"] <= len(ALL) or "old node of" in footer, text


def test_a_lost_gcs_is_told_alike_on_the_heads_row_and_in_the_footer(running, frig):
    frig.ssh(HEAD, ["pkill", "-9", "-u", frig.user, "-x", "gcs_server"], check=False)
    proc = running("cluster", "status", check=False)
    assert proc.returncode == 1, proc.stdout
    lines = proc.stdout.splitlines()
    row = next(line for line in lines if line.startswith(HEAD))
    footer = next(line for line in lines if line.startswith("Fault tolerance: local"))
    assert "wait for it" in row and "wait for it" in footer and "give up" not in row, proc.stdout
    running("cluster", "start", check=True, timeout=600)
