"""Issue 30's system units on the rig: a worker whose SSH user may sudo without a password (ssh.become: true) runs
Ray as the system unit /etc/systemd/system/sage-ray.service, still as that user; it comes back by itself after a
kill -9 and a reboot, moves to a user unit and back with one start each, fails in one line when sudo asks for a
password, and stays down after a stop. Its head runs as a user unit (no sudo there) with `fault_tolerance: redis`:
its killed GCS comes back on the Redis store with no sage command, the worker keeping its raylet and actor. Its own
small rig, apart from test_supervision.py's cluster (whose head keeps a `local` store), so the two files change
independently.
"""
from __future__ import annotations


import pytest
import yaml

from tests.conftest import Sage
from tests.conftest_rig import ray_rig
from tests.e2e import actor, alive
from tests.e2e import redis as redis_store
from tests.e2e.alive import status
from tests.rig import rig_root
from tests.rig.config import sage_config

pytestmark = pytest.mark.rig

HEAD, WORKER = "ss-head", "ss-w1"
ALL = [HEAD, WORKER]
UNIT = "sage-ray.service"
SYSTEM_UNIT_FILE = "/etc/systemd/system/" + UNIT
USER_UNIT_FILE = ".config/systemd/user/" + UNIT
PORT, REDIS_PORT = 6393, 16393


@pytest.fixture(scope="module")
def srig():
    yield from ray_rig(ALL, root=rig_root("sysunits"), first_ip=180, systemd=ALL, sudo=[WORKER])


@pytest.fixture(scope="module")
def redis(tmp_path_factory):
    yield from redis_store.server(tmp_path_factory.mktemp("redis"), REDIS_PORT)


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    redis_store.password_file(home)
    return home


def worker_config(srig, home, redis: str, become: bool) -> str:
    text = sage_config(srig, HEAD, [WORKER], head_port=PORT, dashboard_port=8293,
                       comment="issue 30: a system unit where the SSH user may become root",
                       head={"fault_tolerance": "redis", "redis_address": redis,
                             "redis_password_file": str(home / "redis_password")})
    values = yaml.safe_load(text)
    values["workers_ssh_hosts"] = [{"host": WORKER, "port": 22, "ssh": {"become": become}}]
    return yaml.safe_dump(values, sort_keys=False)


@pytest.fixture(scope="module")
def started(srig, home, redis):
    s = Sage(home=home, config=home / "cluster.yaml")
    s.config.write_text(worker_config(srig, home, redis, become=True))
    try:
        proc = s("cluster", "start", timeout=600)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        yield s
    finally:
        s("cluster", "stop", timeout=300)


def all_alive(s: Sage, seconds: float, hosts: list[str] = ALL) -> float:
    return alive.all_alive(s, seconds, hosts)


def on_worker(srig, *argv: str):
    return srig.ssh(WORKER, list(argv), check=False)


def raylets(srig) -> list[str]:
    return on_worker(srig, "pgrep", "-u", srig.user, "-x", "raylet").stdout.split()


def test_the_worker_runs_ray_as_an_enabled_system_unit_as_the_ssh_user(started, srig):
    assert on_worker(srig, "stat", "-c", "%U %a", SYSTEM_UNIT_FILE).stdout.split() == ["root", "644"]
    assert on_worker(srig, "test", "-e", USER_UNIT_FILE).returncode == 1
    assert on_worker(srig, "systemctl", "is-enabled", UNIT).stdout.strip() == "enabled"
    assert on_worker(srig, "systemctl", "is-active", UNIT).stdout.strip() == "active"
    [pid] = raylets(srig)
    assert on_worker(srig, "ps", "-o", "user=", "-p", pid).stdout.strip() == srig.user  # never root
    cgroup = on_worker(srig, "cat", f"/proc/{pid}/cgroup").stdout
    assert f"/system.slice/{UNIT}" in cgroup, cgroup
    data = status(started)
    assert data["healthy"] and data["cluster"]["alive"] == len(ALL), data
    sup = data["hosts"][WORKER]["supervisor"]
    assert sup["kind"] == "systemd" and sup["text"] == "systemd (system unit)", sup
    assert sup["unit"]["scope"] == "system" and sup["unit"]["enabled"], sup
    assert data["hosts"][HEAD]["supervisor"]["text"] == "systemd (user unit, linger on)"  # no sudo on the head
    assert "systemd (system unit)" in started("cluster", "status").stdout


def test_no_secret_in_the_system_unit_and_the_env_file_is_the_users_0600(started, srig):
    token = (started.home / ".sage" / "ray_auth_token").read_text().strip()
    unit = on_worker(srig, "cat", SYSTEM_UNIT_FILE).stdout
    assert token and token not in unit, unit
    head_unit = srig.ssh(HEAD, ["cat", USER_UNIT_FILE]).stdout
    assert "--redis-password" in head_unit and redis_store.PASSWORD not in head_unit, head_unit
    assert f"User={srig.user}" in unit.splitlines() and "WantedBy=multi-user.target" in unit.splitlines(), unit
    assert on_worker(srig, "stat", "-c", "%U %a", ".sage/ray-node.env").stdout.split() == [srig.user, "600"]


def test_a_killed_head_gcs_comes_back_on_redis_under_its_unit_and_the_worker_keeps_its_actor(started, srig):
    # First of the drills: after a fault of the worker Ray may list its old node alive a while, and pin the actor there.
    before = actor.count(srig, HEAD, PORT, WORKER)
    pids = raylets(srig)
    srig.ssh(HEAD, ["pkill", "-9", "-u", srig.user, "-x", "gcs_server"])
    took = all_alive(started, 45)
    print(f"head gcs_server kill -9 (redis, user unit) -> every node alive: {took:.1f} s")
    assert raylets(srig) == pids  # reconnected, not restarted
    assert actor.count(srig, HEAD, PORT, WORKER) == before + 1
    assert status(started)["hosts"][HEAD]["supervisor"]["unit"]["restarts"] >= 1


def test_a_killed_raylet_comes_back_by_itself_within_30_s(started, srig):
    on_worker(srig, "kill", "-9", raylets(srig)[0])
    took = all_alive(started, 30)
    print(f"raylet kill -9 under the system unit -> every node alive: {took:.1f} s")
    assert status(started)["hosts"][WORKER]["supervisor"]["unit"]["restarts"] >= 1


def test_a_rebooted_worker_is_back_by_itself_within_60_s(started, srig):
    srig.reboot(WORKER)  # the system manager starts it (multi-user.target), nobody logs in
    took = all_alive(started, 60)
    print(f"worker reboot under the system unit -> every node alive: {took:.1f} s")


def test_one_start_moves_the_worker_to_a_user_unit_and_back(started, srig, home, redis):
    started.config.write_text(worker_config(srig, home, redis, become=False))
    try:
        code, check = started.json("cluster", "start", "--check", timeout=300)
        note = check["hosts"][WORKER].get("note", "")
        assert "would have: stopped, disabled and removed system unit" in note, check["hosts"][WORKER]
        assert on_worker(srig, "test", "-e", SYSTEM_UNIT_FILE).returncode == 0  # --check changed nothing
        code, data = started.json("cluster", "start", timeout=300)
        assert code == 0 and "moved to a user unit" in data["hosts"][WORKER]["note"], data["hosts"][WORKER]
        assert on_worker(srig, "test", "-e", SYSTEM_UNIT_FILE).returncode == 1
        assert status(started)["hosts"][WORKER]["supervisor"]["text"] == "systemd (user unit, linger on)"
    finally:
        started.config.write_text(worker_config(srig, home, redis, become=True))
    code, data = started.json("cluster", "start", timeout=300)
    assert code == 0 and "moved to a system unit" in data["hosts"][WORKER]["note"], data["hosts"][WORKER]
    assert on_worker(srig, "test", "-e", USER_UNIT_FILE).returncode == 1
    assert len(raylets(srig)) == 1  # never Ray twice
    all_alive(started, 60)


def test_become_where_sudo_asks_for_a_password_is_one_line_and_a_failed_start(started, srig):
    sudoers = srig.host(WORKER).dir / "sudoers.d" / "sage-rig"  # the worker's own /etc/sudoers.d
    kept = sudoers.with_name("sage-rig.kept")  # sudo skips a name with a dot in it
    sudoers.rename(kept)
    try:
        proc = started("cluster", "start", timeout=300)
    finally:
        kept.rename(sudoers)
    assert proc.returncode != 0, proc.stdout
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if "cannot run sudo without a password" in line]
    assert lines and WORKER in lines[0] and "ssh.become: false" in lines[0], proc.stdout + proc.stderr


def test_stop_disables_the_system_unit(started, srig):
    proc = started("cluster", "stop", timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert on_worker(srig, "systemctl", "is-enabled", UNIT).stdout.strip() == "disabled"
    assert on_worker(srig, "systemctl", "is-active", UNIT).stdout.strip() == "inactive"
    assert not raylets(srig)
