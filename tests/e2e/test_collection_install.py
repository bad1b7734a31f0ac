"""The collection as ops staff install it: `ansible-galaxy collection build` this checkout, install the tarball into
an empty collections path, and drive rig hosts from a directory outside the checkout through an inventory file
that uses the plugin sage.cluster.sage (docs/ops.md, "The installed collection").

Nothing of the checkout is in reach of those runs: the collections path is the install dir only, the ansible.cfg
is the one docs/ops.md gives (written here, not the repository's), HOME is the test's own and no `sage` command
runs first (the playbook run makes the Ray token itself).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.e2e.test_ops_door import ray_alive, raylets, recap
from tests.rig import Rig, ensure_env, rig_root, why_not_available
from tests.rig.config import sage_config

pytestmark = pytest.mark.rig

REPO = Path(__file__).resolve().parents[2]
HEAD, WORKERS = "gal-head", ["gal-w1"]
ALL = [HEAD, *WORKERS]
HEAD_PORT, DASHBOARD_PORT = 6396, 8296


def docs_ansible_cfg() -> str:
    """The ansible.cfg docs/ops.md gives ops staff for the installed collection."""
    docs = (REPO / "docs" / "ops.md").read_text()
    found = re.search(r"```ini\n(# ansible\.cfg for the installed collection.*?)```", docs, re.S)
    assert found, "docs/ops.md has no ansible.cfg block for the installed collection"
    return found.group(1)


class Ops:
    """An operator outside the checkout: own HOME, own ansible.cfg, the collection installed in `collections`."""

    def __init__(self, rig: Rig, work: Path):
        self.rig, self.work = rig, work
        self.home, self.cwd, self.collections = work / "home", work / "ops", work / "collections"
        for d in (self.home, self.cwd):
            d.mkdir()

    def env(self, **extra: str) -> dict[str, str]:
        # No PYTHONPATH either (tests/rig/isolated points it at the checkout).
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SAGE_", "ANSIBLE_")) and k != "PYTHONPATH"}
        env.update(HOME=str(self.home), ANSIBLE_CONFIG=str(self.work / "ansible.cfg"),
                   ANSIBLE_COLLECTIONS_PATH=str(self.collections), **extra)
        return env

    def run(self, *argv: str, timeout: float = 300, **extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(list(argv), cwd=self.cwd, env=self.env(**extra), capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)

    def playbook(self, name: str, *extra: str, **env: str) -> subprocess.CompletedProcess:
        proc = self.run("ansible-playbook", "-i", "my.sage.yml", name, *extra, **env)
        assert proc.returncode == 0, f"{name} {' '.join(extra)}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        return proc


@pytest.fixture(scope="module")
def ops():
    reason = why_not_available()
    if reason:
        pytest.skip(reason)
    with Rig(ALL, root=rig_root("galaxy"), first_ip=90) as rig:  # tears down on failure, Ctrl-C and SIGTERM too
        ensure_env()
        # A short path: the ssh control sockets under ~/.ansible/cp must fit a Unix socket's 107 bytes.
        work = Path(tempfile.mkdtemp(prefix="gal-", dir="/tmp"))
        o = Ops(rig, work)
        try:
            (work / "ansible.cfg").write_text(docs_ansible_cfg())
            config = work / "cluster.yaml"
            config.write_text(sage_config(rig, HEAD, WORKERS, head_port=HEAD_PORT, dashboard_port=DASHBOARD_PORT,
                                          comment="The installed collection's rig: a head and a worker."))
            (o.cwd / "my.sage.yml").write_text(f"plugin: sage.cluster.sage\nconfig: {config}\n")
            yield o
        finally:
            o.run("ansible-playbook", "-i", "my.sage.yml", "sage.cluster.cluster", "-e", "sage_action=stop",
                  timeout=180)
            shutil.rmtree(work, ignore_errors=True)


def test_the_built_collection_installs_into_an_empty_path(ops):
    build = ops.run("ansible-galaxy", "collection", "build", str(REPO), "--output-path", str(ops.work / "dist"))
    assert build.returncode == 0, build.stdout + build.stderr
    tarball, = (ops.work / "dist").glob("sage-cluster-*.tar.gz")
    install = ops.run("ansible-galaxy", "collection", "install", str(tarball), "-p", str(ops.collections))
    assert install.returncode == 0, install.stdout + install.stderr
    installed = ops.collections / "ansible_collections" / "sage" / "cluster"
    assert (installed / "plugins" / "inventory" / "sage.py").is_file()
    assert not (installed / "sage_cluster").exists() and not (installed / "tests").exists()
    # Ansible finds the plugin there, and only there.
    doc = ops.run("ansible-doc", "-t", "inventory", "sage.cluster.sage", ANSIBLE_NOCOLOR="1")
    assert doc.returncode == 0 and f"({installed}/plugins/inventory/sage.py)" in doc.stdout, doc.stdout + doc.stderr


def test_start_through_the_plugin_starts_every_node(ops):
    proc = ops.playbook("sage.cluster.cluster", "-e", "sage_action=start")
    hosts = recap(proc.stdout)
    assert set(hosts) == set(ALL), proc.stdout
    assert all(h["failed"] == 0 and h["unreachable"] == 0 and h["changed"] >= 1 for h in hosts.values()), proc.stdout
    assert ray_alive(ops.rig, HEAD, HEAD_PORT) == len(ALL)
    # The run made the token it started the nodes with (no `sage` ran here): 0600, 64 hex digits.
    token = ops.home / ".sage" / "ray_auth_token"
    assert stat.S_IMODE(token.stat().st_mode) == 0o600 and len(token.read_text().strip()) == 64
    assert "Failed to add the host" not in proc.stdout + proc.stderr, proc.stdout


def test_status_reports_every_host(ops):
    proc = ops.playbook("sage.cluster.status", ANSIBLE_STDOUT_CALLBACK="ansible.posix.json")
    result = json.loads(proc.stdout)
    task = [t for play in result["plays"] for t in play["tasks"] if "Ray node" in t["task"]["name"]][-1]
    sage = {name: task["hosts"][name]["sage"] for name in ALL}
    assert {n: s["running"] for n, s in sage.items()} == {n: True for n in ALL}, sage
    assert sage[HEAD]["cluster"]["alive"] == len(ALL), sage[HEAD]
    assert {n: s["node_ip"] for n, s in sage.items() if n != HEAD} == {w: ops.rig.host(w).ip for w in WORKERS}


def test_stop_leaves_no_raylet(ops):
    proc = ops.playbook("sage.cluster.cluster", "-e", "sage_action=stop")
    hosts = recap(proc.stdout)
    assert set(hosts) == set(ALL) and all(h["failed"] == 0 for h in hosts.values()), proc.stdout
    assert {name: raylets(ops.rig, name) for name in ALL} == {name: [] for name in ALL}
