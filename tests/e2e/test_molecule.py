"""`molecule test` on the Molecule scenario in molecule/default: rig hosts, the sage inventory, cluster.yml.

The scenario's sequence: destroy, syntax, create (rig up), converge (cluster start), idempotence (a second
converge changes nothing), verify (Ray lists every node alive, asked on the head), destroy (cluster stop, rig down).
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.rig import why_not_available

pytestmark = pytest.mark.rig

REPO = Path(__file__).resolve().parents[2]
RIG_ROOT = "/var/tmp/sage-rig-molecule"  # molecule/default/create.yml, destroy.yml and sage/config.yaml name it too
TIMEOUT = 600
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


@pytest.fixture
def molecule_env():
    reason = why_not_available()
    if reason:
        pytest.skip(reason)
    if shutil.which("molecule") is None:
        pytest.skip("no `molecule` on PATH (pip install molecule)")
    # A private HOME: Molecule's ephemeral dir (~/.cache/molecule) and Ansible's ~/.ansible are this run's.
    # Short, as ssh's ControlPath lives in it.
    home = tempfile.mkdtemp(prefix="mol-", dir="/tmp")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SAGE_", "ANSIBLE_", "MOLECULE_"))}
    env.update(HOME=home, NO_COLOR="1", ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0", PY_COLORS="0")
    try:
        yield env
    finally:
        # A safety net for a killed or timed-out run; destroy.yml normally took the rig down already.
        subprocess.run([sys.executable, "-m", "tests.rig", "down", "--root", RIG_ROOT], cwd=REPO,
                       capture_output=True, timeout=120)
        shutil.rmtree(home, ignore_errors=True)


def run_molecule(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    proc = subprocess.Popen(["molecule", *args], cwd=REPO, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)  # its own process group: a timeout ends ansible-playbook too
    try:
        out, _ = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"molecule {' '.join(args)} took over {TIMEOUT} s:\n{ANSI.sub('', out)[-20000:]}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, ANSI.sub("", out), "")


def test_molecule_test(molecule_env):
    proc = run_molecule(molecule_env, "test")
    out = proc.stdout
    assert proc.returncode == 0, out[-30000:]
    for step in ("destroy", "syntax", "create", "converge", "idempotence", "verify"):
        assert re.search(rf"default (?:➜|>) {step}: Executed: Successful", out), f"{step} did not pass:\n{out[-30000:]}"
    assert "Idempotence test failed" not in out
    assert "3 nodes alive: 127.0.0.80 127.0.0.81 127.0.0.82" in out, out[-30000:]
    # The final destroy stopped Ray on every host (cluster.yml -e sage_action=stop), then took the rig down.
    final_destroy = out.rsplit("[default > destroy] Executing", 1)[1]
    for host in ("mol-head", "mol-w1", "mol-w2"):
        assert re.search(rf"{host}\s+: ok=\d+\s+changed=1\s+unreachable=0\s+failed=0", final_destroy), final_destroy
    assert not Path(RIG_ROOT, "state.json").exists(), "destroy left the rig up"
