"""The cluster start (playbooks/cluster.yml): the head's task, then the workers' in the same play. On real SSH
hosts and real Ray, through `sage` and through a plain ansible-playbook:
- a head that replaces its old Ray (here: a new token): every worker joins the NEW head;
- a head whose start fails after its GCS came up: the start fails in seconds, not after ray_node_timeout, every
  worker's line says the head failed, and no Ray is left on any node.

Its own small rig (o-head, o-w1..o-w3 on 127.0.0.50-53, Ray on 6383), so it never meets the other tests' clusters.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import Sage
from tests.e2e.test_rig_cluster import PY, TASKS_ON_EVERY_NODE
from tests.conftest_rig import ray_rig
from tests.rig import Rig, rig_root
from tests.rig.config import sage_config
from tests.rig.rig import DEFAULT_ENV

pytestmark = pytest.mark.rig

HEAD, WORKERS = "o-head", ["o-w1", "o-w2", "o-w3"]
ALL = [HEAD, *WORKERS]
PORT = 6383
# The ray_command of every node lives in the node's own home (each rig host has its own /home): the real ray,
# or on the head, for the failure test, a ray whose start fails after it started the head.
RAY = "/home/sage/bin/ray"
FAILING_RAY = f"""#!/bin/sh
{DEFAULT_ENV}/bin/ray "$@"
[ "$1" = start ] && exit 3
exit 0
"""


@pytest.fixture(scope="module")
def orig():
    yield from ray_rig(ALL, root=rig_root("head-first"), first_ip=50)


@pytest.fixture
def user(orig, tmp_path):
    """A sage user with a config for the rig; every node's ray_command is the real ray until a test changes it."""
    for name in ALL:
        orig.ssh(name, ["mkdir", "-p", "/home/sage/bin"])
        orig.ssh(name, ["ln", "-sfn", f"{DEFAULT_ENV}/bin/ray", RAY])
    config = tmp_path / "sage.yaml"
    config.write_text(sage_config(orig, HEAD, WORKERS, head_port=PORT, dashboard_port=8283,
                                  comment="the head first", remote={"ray_command": RAY}))
    yield Sage(home=tmp_path, config=config, cwd=tmp_path)
    for name in ALL:
        orig.ssh(name, ["pkill", "-9", "-u", "sage", "-f", "ray"], check=False)


REPO = Path(__file__).resolve().parents[2]


def start(user: Sage, door: str) -> tuple[int, dict[str, str]]:
    """`cluster start` through a door: exit code and each failed host's error ('' for a host that did fine)."""
    if door == "sage":
        code, result = user.json("cluster", "start")
        return code, {name: h.get("error") or "" for name, h in result["hosts"].items()}
    # An operator's ansible-playbook; one JSON line per result, no wrapped messages.
    env = dict(user.env(), ANSIBLE_CALLBACK_RESULT_FORMAT="json")
    proc = subprocess.run([str(Path(sys.executable).with_name("ansible-playbook")), "-i", "inventory/sage.yml",
                           "playbooks/cluster.yml", "-e", "sage_action=start"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    errors = {name: "" for name in ALL}
    for line in proc.stdout.splitlines():
        for name in ALL:
            if line.startswith((f"fatal: [{name}]", f"fatal: [{name} ")):
                errors[name] = line
    return proc.returncode, errors


DOORS = ["sage", "ansible-playbook"]


def raylets(rig: Rig, name: str) -> str:
    return rig.ssh(name, ["pgrep", "-u", "sage", "-a", "-x", "raylet|gcs_server"], check=False).stdout


def gcs_pid(rig: Rig) -> str:
    return rig.ssh(HEAD, ["pgrep", "-u", "sage", "-x", "gcs_server"], check=False).stdout.strip()


@pytest.mark.parametrize("door", DOORS)
def test_a_head_that_replaces_its_old_ray_is_the_one_the_workers_join(user, orig, door):
    code, first = user.json("cluster", "start")
    assert code == 0, first
    old_gcs = gcs_pid(orig)
    assert old_gcs
    # A new token: the head's old Ray (GCS on the same port, which answers until the head stops it) must go, and
    # a worker that took that open port for the new head would join a GCS about to die.
    token = user.home / ".sage" / "ray_auth_token"
    token.write_text(os.urandom(32).hex() + "\n")
    code, errors = start(user, door)
    assert code == 0, errors
    new_gcs = gcs_pid(orig)
    assert new_gcs and new_gcs != old_gcs
    head_ip = orig.host(HEAD).ip
    for name in WORKERS:
        assert f"--gcs-address={head_ip}:{PORT}" in raylets(orig, name), name
    _, status = user.json("cluster", "status")
    assert status["cluster"]["alive"] == 4, status
    # The new token is the one the head holds; a task runs on every host of the new cluster.
    run = orig.ssh(HEAD, ["env", "RAY_AUTH_MODE=token", PY, "-c", TASKS_ON_EVERY_NODE, f"{head_ip}:{PORT}"],
                   timeout=300)
    assert json.loads(run.stdout.strip().splitlines()[-1]) == sorted(ALL)


def worker_log(rig: Rig, name: str) -> str:
    log = rig.host(name).tmp / "sage_worker_logs" / "worker.log"
    return log.read_text() if log.exists() else ""


@pytest.mark.parametrize("door", DOORS)
def test_a_head_that_fails_fails_the_workers_at_once_and_leaves_no_ray(user, orig, door):
    ray = orig.host(HEAD).home / "bin" / "ray"
    ray.unlink()
    ray.write_text(FAILING_RAY)
    ray.chmod(0o755)
    logs = {name: worker_log(orig, name) for name in WORKERS}
    code, errors = start(user, door)
    assert code != 0, errors
    assert "ray start failed (exit 3)" in errors[HEAD], errors
    for name in WORKERS:
        assert (f"the head {HEAD} failed to start Ray, so this worker did not start: ray start failed (exit 3)"
                in errors[name]), errors
        # Failed at once: no `ray start` ran there (the module appends each one to worker.log), so nothing could
        # wait out ray_node_timeout (90 s) against a head that is gone.
        assert worker_log(orig, name) == logs[name], name
    for name in ALL:
        assert "raylet" not in raylets(orig, name), name
