"""Bare machines become a cluster: `setup-ssh` -> `provision` -> `deploy` -> `start`.

Its own rig (b-head, b-w1, b-w2 on 127.0.0.80-82, a user of its own whose password it sets, Ray on 6391): b-w1
takes only the password and has no authorized key; every host takes the password and has only the system
python3 (Debian's 3.11.2; this machine runs 3.11.7), none the env remote.python_path names (a venv in each
host's own home); b-w2's pip reaches no index (its pip.conf names a closed port), the others' reach the index
this module serves on 127.0.0.1 (the rig's cached wheels of the controller's Ray), as does this machine's pip.
The tests run in file order and share one cluster.
"""
from __future__ import annotations

import json
import os
import pwd
import stat
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import Sage
from tests.rig import Rig, controller_ray_version, ensure_wheels, installed_ray_version, rig_root, why_not_available
from tests.rig.config import sage_config
from tests.rig.index import serve_index

# provision gives the nodes a Python of this machine's minor: the rig's hosts have Debian's 3.11 only.
pytestmark = [pytest.mark.rig, pytest.mark.nodes_python]

HEAD, OFFLINE, NEW = "b-head", "b-w2", "b-w3"
ALL = [HEAD, "b-w1", OFFLINE]  # the config's nodes; NEW, as bare as b-w1, joins through scale add
USER = "sagebare"
ENV = f"/home/{USER}/envs/ray"
PASSWORD = "bare-Pw-4711-secret"
OLD_RAY = "/opt/pypi/files/ray-2.58.0-cp311-cp311-manylinux2014_x86_64.whl"

# Runs on the head: one task pinned to each alive node says where it ran.
TASK_ON_EVERY_NODE = textwrap.dedent("""
    import json, socket, sys, ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
    ray.init(address=sys.argv[1], log_to_driver=False)

    @ray.remote
    def where():
        return socket.gethostname()

    nodes = [n["NodeID"] for n in ray.nodes() if n["Alive"]]
    refs = [where.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n, soft=False)).remote() for n in nodes]
    print(json.dumps(sorted(ray.get(refs, timeout=120))))
""")


class BareSage(Sage):
    """`sage` whose pip (the wheels it builds) uses this module's index only."""

    index: str = ""

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in super().env().items() if not k.startswith("PIP_")}
        return {**env, "PIP_INDEX_URL": self.index, "PIP_CONFIG_FILE": os.devnull}


@pytest.fixture(scope="module")
def bare(tmp_path_factory):
    reason = why_not_available()
    if reason:
        pytest.skip(reason)
    wheels = ensure_wheels()  # downloads once (outside a network namespace), then kept
    with Rig([*ALL, NEW], root=rig_root("bare-hosts"), user=USER, first_ip=80) as rig:
        server = serve_index(wheels, tmp_path_factory.mktemp("index"))
        index = server.index_url
        for name in [*ALL, NEW]:
            rig.allow_password(name, PASSWORD, keys=name not in ("b-w1", NEW))
            if name == OFFLINE:
                rig.cut_off_index(name)
            else:
                rig.write_pip_conf(name, f"[global]\nindex-url = {index}\n")
        home = tmp_path_factory.mktemp("home")
        project = tmp_path_factory.mktemp("project")
        (project / "job.py").write_text("print('job')\n")
        config = home / "cluster.yaml"
        config.write_text(sage_config(
            rig, HEAD, ALL[1:], head_port=6391, dashboard_port=8391, comment="bare hosts",
            ssh={"key_path": str(home / ".ssh" / "id_ed25519")},  # not there yet: setup-ssh makes it
            remote={"python_path": f"{ENV}/bin/python", "ray_command": f"{ENV}/bin/ray", "conda_env": "",
                    "sage_home": f"/home/{USER}/proj"},
            head={"temp_dir": "/tmp/ray_bare"}, worker={"temp_dir": "/tmp/ray_bare"},
            deploy={"source": str(project)}))
        s = BareSage(home=home, config=config, cwd=project)
        s.index = index
        yield s, rig
        s("cluster", "stop", timeout=300)
        server.shutdown()


class Sampler(threading.Thread):
    """Every process's arguments (and, but for the sage command's own, environment), read every 20 ms. A child of
    sage forked but not yet exec'd shows sage's first environment (the memory it copied) in /proc: sage's own, too."""

    def __init__(self, secret: bytes, own_pid=lambda: None):
        super().__init__(daemon=True)
        self.secret, self.own_pid, self.seen, self.samples, self.stop = secret, own_pid, [], 0, threading.Event()

    def run(self) -> None:
        own = None
        while not self.stop.is_set():
            if own is None:
                try:
                    own = Path(f"/proc/{self.own_pid()}/environ").read_bytes()
                except (OSError, TypeError):
                    pass
            for pid in filter(str.isdigit, os.listdir("/proc")):
                for what in ("cmdline", "environ"):
                    if what == "environ" and int(pid) in (os.getpid(), self.own_pid()):
                        continue
                    try:
                        data = Path(f"/proc/{pid}/{what}").read_bytes()
                    except OSError:
                        continue
                    if self.secret in data and not (what == "environ" and data == own):
                        self.seen.append((pid, what, data.replace(b"\0", b" ")[:200]))
            self.samples += 1
            time.sleep(0.02)


def setup_ssh(s: BareSage, *args: str, password: str = PASSWORD) -> tuple[int, dict, Sampler]:

    env = {**s.env(), "SAGE_SSH_PASSWORD": password}
    proc = subprocess.Popen([sys.executable, "-m", "sage_cluster", "cluster", "setup-ssh", "--json", *args],
                            env=env, cwd=s.cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # sage's own environment keeps the variable it was given (/proc shows a process's first environment); its
    # children do not get it.
    sampler = Sampler(password.encode(), lambda: proc.pid)
    sampler.start()
    out, err = proc.communicate(timeout=300)
    sampler.stop.set()
    sampler.join()
    assert password not in out + err
    try:
        return proc.returncode, json.loads(out), sampler
    except json.JSONDecodeError:
        raise AssertionError(f"not JSON:\n{out}\n{err}") from None


def raylet_environs() -> list[list[str]]:
    """The environment of every raylet of the rig's user (the rig's hosts are PID namespaces of this machine)."""
    uid, out = pwd.getpwnam(USER).pw_uid, []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() == "raylet" and os.stat(f"/proc/{pid}").st_uid == uid:
                out.append(Path(f"/proc/{pid}/environ").read_bytes().decode().split("\0"))
        except OSError:
            continue
    return out


def states(result: dict) -> dict[str, str]:
    return {n: h["result"] for n, h in result["hosts"].items()}


def authorized(rig: Rig, name: str) -> list[str]:
    return (rig.host(name).home / ".ssh" / "authorized_keys").read_text().splitlines()


def test_setup_ssh_makes_the_key_and_adds_it_once(bare):
    s, rig = bare
    key = s.home / ".ssh" / "id_ed25519"
    assert not key.exists()
    code, result, sampler = setup_ssh(s)
    assert code == 0, result
    assert states(result) == {n: "changed" for n in ALL}
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and key.with_suffix(".pub").exists()
    public = key.with_suffix(".pub").read_text().split()[1]
    for name in ALL:
        ssh_dir = rig.host(name).home / ".ssh"
        assert stat.S_IMODE(ssh_dir.stat().st_mode) == 0o700
        assert stat.S_IMODE((ssh_dir / "authorized_keys").stat().st_mode) == 0o600
        assert sum(public in line for line in authorized(rig, name)) == 1, name
    assert len(authorized(rig, "b-w1")) == 1  # it had none
    assert sampler.samples > 20 and not sampler.seen, sampler.seen

    # Again: every node takes the key, nothing changes, the password is not used.
    before = {n: authorized(rig, n) for n in ALL}
    code, result, sampler = setup_ssh(s)
    assert code == 0 and states(result) == {n: "ok" for n in ALL}, result
    assert {n: authorized(rig, n) for n in ALL} == before and not sampler.seen

    # A wrong password: one line for the node that needs it, the others are fine; then the right one heals it.
    (rig.host("b-w1").home / ".ssh" / "authorized_keys").write_text("")
    for socket in (s.home / ".sage" / "cp").iterdir():  # the last run's SSH connections would still log in
        socket.unlink()
    code, result, sampler = setup_ssh(s, password="not-the-password")
    assert code == 1 and states(result) == {HEAD: "ok", "b-w1": "failed", OFFLINE: "ok"}, result
    assert "wrong password" in result["hosts"]["b-w1"]["error"]
    assert "not-the-password" not in json.dumps(result) and not sampler.seen
    code, result, _ = setup_ssh(s, "b-w1:22")
    assert code == 0 and states(result) == {"b-w1": "changed"}, result

    # Nowhere under ~/.sage (runs, artifacts, events), nor anywhere else in this user's home.
    for path in s.home.rglob("*"):
        if path.is_file():
            assert PASSWORD.encode() not in path.read_bytes(), path


def test_provision_brings_each_node_the_controllers_ray(bare):
    s, rig = bare
    ray = controller_ray_version()
    code, result = s.json("cluster", "provision", "--check")
    assert code == 0 and states(result) == {n: "changed" for n in ALL}, result
    assert all("would create a venv" in h["provision"]["summary"] for h in result["hosts"].values()), result
    assert not any(installed_ray_version(str(rig.host(n).home / "envs" / "ray")) for n in ALL)

    proc = s("cluster", "provision", timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    for name in ALL:
        assert installed_ray_version(str(rig.host(name).home / "envs" / "ray")) == ray, name
        line = next(ln for ln in proc.stdout.splitlines() if ln.startswith(name))
        source = "wheels from the controller" if name == OFFLINE else "the node's index"
        assert "changed" in line and source in line, proc.stdout
    # The nodes run Debian's 3.11.2, this machine 3.11.7: said, with what Ray needs for it.
    assert "3.11.2 on b-head, b-w1, b-w2" in proc.stderr
    assert "RAY_DEFAULT_PYTHON_VERSION_MATCH_LEVEL=minor" in proc.stderr
    assert len(list((s.home / ".sage" / "wheels").glob(f"ray-{ray}-cp311-*/*.whl"))) > 10

    code, result = s.json("cluster", "provision")
    assert code == 0 and states(result) == {n: "ok" for n in ALL}, result


def test_deploy_and_start_make_one_cluster(bare):
    s, rig = bare
    s("cluster", "deploy", check=True)
    s("cluster", "start", check=True, timeout=600)
    code, status = s.json("cluster", "status")
    assert code == 0 and status["cluster"]["alive"] == 3, status
    run = rig.ssh(HEAD, ["env", "RAY_AUTH_MODE=token", f"{ENV}/bin/python", "-c", TASK_ON_EVERY_NODE,
                         f"{rig.host(HEAD).ip}:6391"], timeout=300, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    assert json.loads(run.stdout.strip().splitlines()[-1]) == sorted(ALL)
    # Ray's minor-level Python matching (remote.python_version_match's default) in every node's Ray, which hands
    # it to what it starts (job drivers too): nodes whose Pythons differ at the patch level form one cluster.
    environs = raylet_environs()
    assert len(environs) == len(ALL) and all("RAY_DEFAULT_PYTHON_VERSION_MATCH_LEVEL=minor" in e for e in environs)


def test_start_on_a_terminal_offers_setup_ssh_where_key_login_fails(bare):
    import pexpect

    s, rig = bare
    (rig.host("b-w1").home / ".ssh" / "authorized_keys").write_text("")
    for socket in (s.home / ".sage" / "cp").iterdir():  # the last run's SSH connections would still log in
        socket.unlink()
    child = pexpect.spawn(sys.executable, ["-m", "sage_cluster", "cluster", "start"], env=s.env(), cwd=str(s.cwd),
                          timeout=300, encoding="utf-8")
    child.expect(r"Key login fails on b-w1\. Set it up now with the password \(sage cluster setup-ssh\)\?")
    child.sendline("y")
    child.expect("SSH password for b-w1")
    child.sendline(PASSWORD)
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0, child.before
    assert "b-w1: setup-ssh changed" in child.before and PASSWORD not in child.before, child.before
    public = (s.home / ".ssh" / "id_ed25519.pub").read_text().split()[1]
    assert sum(public in line for line in authorized(rig, "b-w1")) == 1


def test_a_noop_provision_costs_what_a_noop_deploy_does(bare):
    s, _ = bare
    timed = {}
    for command in ("deploy", "provision"):
        started = time.monotonic()
        code, result = s.json("cluster", command)
        timed[command] = time.monotonic() - started
        assert code == 0 and states(result) == {n: "ok" for n in ALL}, result
    print(f"no-op: deploy {timed['deploy']:.1f}s, provision {timed['provision']:.1f}s")
    assert timed["provision"] <= 1.5 * timed["deploy"] + 1, timed


def test_doctor_and_deploy_check_name_an_env_the_user_cannot_write(bare):
    s, rig = bare
    env = rig.host("b-w1").home / "envs" / "ray"
    pyproject = s.cwd / "pyproject.toml"  # a project deploy installs into each node's env
    pyproject.write_text('[project]\nname = "barejob"\nversion = "0.1"\n')
    subprocess.run(["chown", "-R", "root:root", str(env)], check=True)  # an admin's shared env
    try:
        code, doctor = s.json("cluster", "doctor")
        rows = {(r["host"], r["check"]): r for r in doctor["checks"]}
        assert code == 1 and rows[(HEAD, "env")]["ok"] and not rows[("b-w1", "env")]["ok"], doctor
        assert f"the env {ENV} belongs to root" in rows[("b-w1", "env")]["detail"]
        assert "`sage cluster provision`" in rows[("b-w1", "env")]["fix"]
        code, result = s.json("cluster", "deploy", "--check")
        assert code == 1 and states(result) == {HEAD: "changed", "b-w1": "failed", OFFLINE: "changed"}, result
        assert f"the env {ENV} belongs to root and {USER} cannot write to it" in result["hosts"]["b-w1"]["error"]
    finally:
        subprocess.run(["chown", "-R", f"{USER}:{USER}", str(env)], check=True)
        pyproject.unlink()
    # Without a project to install, an env the user cannot write is fine: doctor says so.
    subprocess.run(["chown", "-R", "root:root", str(env)], check=True)
    try:
        code, doctor = s.json("cluster", "doctor")
        row = next(r for r in doctor["checks"] if (r["host"], r["check"]) == ("b-w1", "env"))
        assert row["ok"] and "installs nothing" in row["detail"], row
    finally:
        subprocess.run(["chown", "-R", f"{USER}:{USER}", str(env)], check=True)


def test_scale_add_of_a_bare_machine(bare):
    s, rig = bare
    proc = s("cluster", "scale", "add", f"{NEW}:22", timeout=600)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"{NEW}: key login fails: `sage cluster setup-ssh {NEW}:22`" in proc.stderr, proc.stdout + proc.stderr
    assert f"{NEW} stays in the config" in proc.stderr
    code, result, sampler = setup_ssh(s, f"{NEW}:22")
    assert code == 0 and states(result) == {NEW: "changed"} and not sampler.seen, result
    # Out of the config again; stopping Ray there fails, for want of an env, and says what would give it one.
    proc = s("cluster", "scale", "remove", f"{NEW}:22", timeout=600)
    assert proc.returncode == 1 and NEW not in s.config.read_text(), proc.stdout + proc.stderr
    assert f"{NEW}: no env at remote.python_path: `sage cluster provision {NEW}:22`" in proc.stderr
    # Without its env: --provision gives it this machine's Ray first, then deploy, start, and Ray counts it.
    proc = s("cluster", "scale", "add", f"{NEW}:22", "--provision", timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert installed_ray_version(str(rig.host(NEW).home / "envs" / "ray")) == controller_ray_version()
    code, status = s.json("cluster", "status")
    assert code == 0 and status["cluster"]["alive"] == 4, status


def test_a_node_with_another_ray_is_brought_to_the_controllers(bare):
    s, rig = bare
    s("cluster", "stop", check=True, timeout=300)
    rig.ssh(OFFLINE, [f"{ENV}/bin/python", "-m", "pip", "install", "-q", "--no-deps", "--no-index", OLD_RAY],
            timeout=300)
    assert installed_ray_version(str(rig.host(OFFLINE).home / "envs" / "ray")) == "2.58.0"
    # A start meets the drift: that node fails at once, naming both releases and the command; the others start.
    ray = controller_ray_version()
    proc = s("cluster", "start", timeout=600)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith(OFFLINE))
    assert "failed" in line and f"another Ray (2.58.0) than the cluster ({ray}" in line, proc.stdout
    assert f"{OFFLINE}: another Ray release: `sage cluster provision {OFFLINE}:22`" in proc.stderr, proc.stderr
    code, status = s.json("cluster", "status")
    assert status["cluster"]["alive"] == 3, status  # the head, b-w1 and the new one
    code, result = s.json("cluster", "provision", timeout=900)
    assert code == 0, result
    assert states(result) == {HEAD: "ok", "b-w1": "ok", OFFLINE: "changed", NEW: "ok"}, result
    summary = result["hosts"][OFFLINE]["provision"]["summary"]
    assert summary.startswith(f"upgrade ray 2.58.0 -> {controller_ray_version()}")
    assert installed_ray_version(str(rig.host(OFFLINE).home / "envs" / "ray")) == ray
    s("cluster", "start", check=True, timeout=600)
    code, status = s.json("cluster", "status")
    assert code == 0 and status["cluster"]["alive"] == 4, status
