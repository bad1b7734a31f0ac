"""The rig itself: hosts look like separate machines. Uses its own root, names and addresses,
so it can run next to the session `rig` fixture or a rig started with `python -m tests.rig up`."""
import os
import shlex
import subprocess
import time

import pytest

from tests.rig import Rig, controller_ray_version, ensure_env, why_not_available

pytestmark = pytest.mark.rig

NAMES = ["rigtest-a", "rigtest-b", "rigtest-c"]
DETACH = ["sh", "-c", "nohup setsid sleep 1000 >/dev/null 2>&1 </dev/null &"]


@pytest.fixture(scope="module")
def r():
    reason = why_not_available()
    if reason:
        pytest.skip(reason)
    with Rig(NAMES, root="/var/tmp/sage-rig-selftest", first_ip=240) as rig:
        yield rig


def test_hosts_are_separate_machines(r):
    assert [h.ip for h in r.hosts] == ["127.0.0.240", "127.0.0.241", "127.0.0.242"]
    for h in r.hosts:
        out = r.ssh(h.name, ["sh", "-c", "hostname; id -un; echo $HOME"]).stdout.split()
        assert out == [h.name, "sage", "/home/sage"]
    # names resolve on the hosts, and hosts reach each other's ports
    assert r.ssh("rigtest-a", ["getent", "hosts", "rigtest-b"]).stdout.split() == ["127.0.0.241", "rigtest-b"]
    banner = r.ssh("rigtest-a", ["bash", "-c", "exec 3<>/dev/tcp/rigtest-c/22; head -c 7 <&3"]).stdout
    assert banner == "SSH-2.0"


def test_own_tmp(r):
    r.ssh("rigtest-a", ["sh", "-c", "echo hello > /tmp/only-on-a"])
    assert (r.host("rigtest-a").tmp / "only-on-a").read_text() == "hello\n"
    assert r.ssh("rigtest-b", ["test", "-e", "/tmp/only-on-a"], check=False).returncode == 1


def test_own_processes_and_orphans_reaped(r):
    r.ssh("rigtest-a", DETACH)
    r.ssh("rigtest-a", ["sh", "-c", "nohup setsid sleep 0.2 >/dev/null 2>&1 </dev/null &"])
    time.sleep(1)
    ps_a = r.ssh("rigtest-a", ["ps", "-eo", "ppid=,stat=,args="]).stdout
    ps_b = r.ssh("rigtest-b", ["ps", "-eo", "ppid=,stat=,args="]).stdout
    assert [line.split()[0] for line in ps_a.splitlines() if "sleep 1000" in line] == ["1"]
    assert "sleep 1000" not in ps_b
    assert not [line for line in ps_a.splitlines() if line.split()[1].startswith("Z")], ps_a


def test_stop_and_start_host(r):
    r.ssh("rigtest-b", ["sh", "-c", "echo kept > ~/file"])
    r.ssh("rigtest-b", DETACH)
    r.stop_host("rigtest-b")
    failed = r.ssh("rigtest-b", ["true"], check=False, timeout=20)
    assert failed.returncode == 255, failed
    assert r.ssh("rigtest-a", ["true"]).returncode == 0  # the others stay up
    r.start_host("rigtest-b")
    assert r.ssh("rigtest-b", ["cat", "/home/sage/file"]).stdout == "kept\n"
    assert "sleep 1000" not in r.ssh("rigtest-b", ["ps", "-eo", "args="]).stdout  # powered off for real


def test_host_key_changed(r):
    r.regenerate_host_key("rigtest-c")
    failed = r.ssh("rigtest-c", ["true"], check=False)
    assert failed.returncode == 255 and "REMOTE HOST IDENTIFICATION HAS CHANGED" in failed.stderr
    r.write_known_hosts()
    assert r.ssh("rigtest-c", ["hostname"]).stdout == "rigtest-c\n"


def test_env_runs_on_hosts(r):
    env = ensure_env()
    t0 = time.monotonic()
    assert ensure_env() == env and time.monotonic() - t0 < 1  # present: no pip, no interpreter start
    out = r.ssh("rigtest-a", [f"{env}/bin/python", "-c", "import ray; print(ray.__version__)"]).stdout
    assert out.strip() == controller_ray_version()


def test_rsync_over_rig_ssh(r, tmp_path):
    (tmp_path / "f").write_text("x")
    subprocess.run(["rsync", "-a", "-e", shlex.join(["ssh", *r.ssh_options()]), f"{tmp_path}/",
                    f"sage@{r.host('rigtest-c').ip}:proj/"], check=True)
    assert r.ssh("rigtest-c", ["cat", "proj/f"]).stdout == "x"


def test_down_leaves_nothing(r):
    r.ssh("rigtest-a", DETACH)
    namespaces = {h.pidns for h in r.hosts}
    assert len(namespaces) == len(r.hosts) and None not in namespaces
    r.down()
    assert r.leftover_processes() == []
    in_rig = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if open(f"/proc/{pid}/stat").read().rpartition(")")[2].split()[0] == "Z":
                continue  # reaped by its parent in time; it holds no namespace
            ns = os.readlink(f"/proc/{pid}/ns/pid")
            args = open(f"/proc/{pid}/cmdline").read()
        except OSError:
            continue
        if ns in namespaces or "/var/tmp/sage-rig-selftest/hosts" in args:
            in_rig.append((pid, args))
    assert in_rig == []
    assert "sage-rig /var/tmp/sage-rig-selftest" not in open("/etc/hosts").read()
    assert r.ssh("rigtest-a", ["true"], check=False, timeout=20).returncode == 255
