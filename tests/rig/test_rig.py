"""The rig itself: hosts look like separate machines. Uses its own root, names and addresses,
so it can run next to the session `rig` fixture or a rig started with `python -m tests.rig up`."""
import contextlib
import os
import shlex
import subprocess
import time
from pathlib import Path

import pytest

from tests.rig import Rig, controller_ray_version, ensure_env, why_not_available
from tests.rig.hostinit import cgroup_hierarchies

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


# ---- hosts whose PID 1 is systemd ----------------------------------------------------------------
SD_NAMES = ["rigsd-a", "rigsd-b", "rigsd-plain"]
UNIT = "\n".join(["[Unit]", "Description=a service of the rig user", "[Service]", "ExecStart=/bin/sleep infinity",
                  "Restart=on-failure", "RestartSec=1", "[Install]", "WantedBy=default.target", ""])


@pytest.fixture(scope="module")
def sd():
    reason = why_not_available(systemd=True)
    if reason:
        pytest.skip(reason)
    with Rig(SD_NAMES, root="/var/tmp/sage-rig-selftest-systemd", first_ip=236, systemd=SD_NAMES[:2],
             sudo=SD_NAMES[:1]) as rig:
        yield rig


def user_unit(rig: Rig, name: str, prop: str) -> str:
    """A property of the rig user's unit, read as root from inside the host (no login of the user)."""
    out = rig.nsenter(name, ["systemctl", "--user", "-M", f"{rig.user}@", "show", "-p", prop, "--value",
                             "rigtest.service"], check=False)
    return out.stdout.strip()


def wait_for(what, timeout: float = 30):
    deadline = time.monotonic() + timeout
    while not what():
        assert time.monotonic() < deadline, f"timed out waiting for {what.__doc__ or what}"
        time.sleep(0.25)


def enable_user_unit(rig: Rig, name: str) -> None:
    rig.ssh(name, ["loginctl", "enable-linger"])
    script = ('mkdir -p ~/.config/systemd/user && printf %s "$1" > ~/.config/systemd/user/rigtest.service'
              ' && systemctl --user daemon-reload && systemctl --user enable --now rigtest.service')
    rig.ssh(name, ["sh", "-c", script, "sh", UNIT])


def test_systemd_host_boots_with_a_user_session(sd):
    for name in SD_NAMES[:2]:
        out = sd.ssh(name, ["sh", "-c", "hostname; cat /proc/1/comm; echo $XDG_RUNTIME_DIR"]).stdout.split()
        uid = sd.ssh(name, ["id", "-u"]).stdout.strip()
        assert out == [name, "systemd", f"/run/user/{uid}"]
        assert sd.nsenter(name, ["systemctl", "is-system-running", "--wait"]).stdout.strip() == "running"
    assert sd.ssh("rigsd-plain", ["cat", "/proc/1/comm"]).stdout.strip() == "python3"  # plain hosts beside them
    # what sage starts today, a detached process, outlives the login that started it (logind kills no user's)
    sd.ssh("rigsd-a", DETACH)
    time.sleep(1)
    assert sd.nsenter("rigsd-a", ["pgrep", "-u", sd.user, "-f", "sleep 1000"]).returncode == 0
    # the hosts reach each other, whatever their PID 1
    banner = sd.ssh("rigsd-plain", ["bash", "-c", "exec 3<>/dev/tcp/rigsd-a/22; head -c 7 <&3"]).stdout
    assert banner == "SSH-2.0"


def test_user_unit_restarts_and_comes_back_after_reboot(sd):
    enable_user_unit(sd, "rigsd-a")
    pid = user_unit(sd, "rigsd-a", "MainPID")
    assert int(pid) > 0
    sd.ssh("rigsd-a", ["kill", "-9", pid])
    wait_for(lambda: user_unit(sd, "rigsd-a", "MainPID") not in ("0", pid, ""))
    assert user_unit(sd, "rigsd-a", "NRestarts") == "1"
    sd.reboot("rigsd-a")
    # nobody logs in: linger starts the user's manager at boot, and it the unit
    wait_for(lambda: user_unit(sd, "rigsd-a", "ActiveState") == "active")
    assert sd.nsenter("rigsd-a", ["loginctl", "list-sessions", "--no-legend"]).stdout.strip() == ""
    assert user_unit(sd, "rigsd-a", "NRestarts") == "0"  # a new boot, a new manager


def test_power_cut_brings_every_user_unit_back(sd):
    enable_user_unit(sd, "rigsd-b")
    sd.ssh("rigsd-plain", ["sh", "-c", "echo kept > ~/file"])
    # (not MainPID: a fresh PID namespace hands out the same numbers again)
    before = {name: int(user_unit(sd, name, "ActiveEnterTimestampMonotonic")) for name in SD_NAMES[:2]}
    sd.power_cut()
    for name in SD_NAMES[:2]:
        wait_for(lambda name=name: user_unit(sd, name, "ActiveState") == "active")
        assert int(user_unit(sd, name, "ActiveEnterTimestampMonotonic")) > before[name]
    assert sd.ssh("rigsd-plain", ["cat", "file"]).stdout == "kept\n"


def test_sudo_only_where_allowed(sd):
    if not os.path.exists("/usr/bin/sudo"):
        pytest.skip("sudo is not installed on this machine (.ci/run installs it)")
    assert sd.ssh("rigsd-a", ["sudo", "-n", "true"], check=False).returncode == 0
    assert sd.ssh("rigsd-a", ["sudo", "-n", "id", "-u"]).stdout.strip() == "0"
    for name in ("rigsd-b", "rigsd-plain"):
        assert sd.ssh(name, ["sudo", "-n", "true"], check=False).returncode != 0


def test_system_unit_on_the_sudo_host(sd):
    if not os.path.exists("/usr/bin/sudo"):
        pytest.skip("sudo is not installed on this machine (.ci/run installs it)")
    unit = UNIT.replace("WantedBy=default.target", "WantedBy=multi-user.target").replace(
        "[Service]", f"[Service]\nUser={sd.user}")
    script = ('printf %s "$1" | sudo -n tee /etc/systemd/system/rigtest-system.service >/dev/null'
              ' && sudo -n systemctl daemon-reload && sudo -n systemctl enable --now rigtest-system.service')
    sd.ssh("rigsd-a", ["sh", "-c", script, "sh", unit])
    assert not os.path.exists("/etc/systemd/system/rigtest-system.service")  # the host's own /etc/systemd/system
    sd.reboot("rigsd-a")
    wait_for(lambda: sd.nsenter("rigsd-a", ["systemctl", "is-active", "rigtest-system.service"],
                                check=False).stdout.strip() == "active")
    owner = sd.nsenter("rigsd-a", ["systemctl", "show", "-p", "User", "--value", "rigtest-system.service"]).stdout
    assert owner.strip() == sd.user


def test_boot_leaves_the_machines_tmp_alone(sd):
    markers = [Path("/tmp") / f"sage-rig-marker-{os.getpid()}", Path("/var/tmp") / f"sage-rig-marker-{os.getpid()}"]
    for marker in markers:
        marker.write_text("kept")
    try:
        sd.reboot("rigsd-b")
        assert sd.nsenter("rigsd-b", ["systemctl", "is-system-running", "--wait"]).stdout.strip() == "running"
        assert [m.read_text() for m in markers] == ["kept", "kept"]
        # the host's own /tmp and /var/tmp are not the machine's
        out = sd.ssh("rigsd-b", ["ls", "-A", "/tmp", "/var/tmp"]).stdout
        assert markers[0].name not in out
    finally:
        for marker in markers:
            marker.unlink()


def test_systemd_down_leaves_nothing(sd):
    namespaces = {h.pidns for h in sd.hosts}
    cgroups = [Path(hierarchy) / h.cgroup for hierarchy in cgroup_hierarchies() for h in sd.hosts if h.systemd]
    assert all(c.is_dir() for c in cgroups)
    sd.down()
    assert sd.leftover_processes() == []
    assert [c for c in cgroups if c.exists()] == []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            assert os.readlink(f"/proc/{pid}/ns/pid") not in namespaces or \
                open(f"/proc/{pid}/stat").read().rpartition(")")[2].split()[0] == "Z"
