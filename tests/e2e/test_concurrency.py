"""Many sage processes on one cluster: the lock, concurrent scale edits, and config writes killed mid-way."""
from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from ansible_collections.sage.cluster.plugins.plugin_utils import config

from tests.conftest import Sage, user_env

# Ghost workers: valid names that never resolve, so each run's playbook fails fast after the config edit.
BASE = """\
# Concurrency test cluster: this comment must survive every edit.
head:
  host: "localhost"   # this machine
  head_port: 6390
workers_ssh_hosts: "{workers}"   # the list under test
ssh:
  connect_timeout: 2
deploy:
  source: "{project}"   # scale add deploys: never the home directory
"""


def write_base(path: Path, workers: list[str]) -> None:
    project = path.parent / "project"
    project.mkdir(exist_ok=True)
    path.write_text(BASE.format(workers=",".join(workers), project=project))


def test_a_second_mutating_command_waits_then_names_the_holder(sage: Sage, tmp_path: Path):
    sage.config = tmp_path / "c.yaml"
    write_base(sage.config, [])
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; sys.argv = ['sage', 'cluster', 'start'];"
         "from sage_cluster.lock import cluster_lock; from pathlib import Path;"
         f"cm = cluster_lock(Path({str(sage.config)!r})); cm.__enter__(); print('held', flush=True); time.sleep(60)"],
        env=sage.env(), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        started = time.monotonic()
        proc = sage("cluster", "stop", env={"SAGE_LOCK_WAIT": "2"}, timeout=120)
        waited = time.monotonic() - started
        assert proc.returncode == 1
        assert f"pid {holder.pid} (sage cluster start)" in proc.stderr
        assert 2 <= waited < 30
        assert "Traceback" not in proc.stderr
    finally:
        holder.kill()
        holder.wait()
    # Released with its holder: the next command takes the lock at once (it would give up after 2 s) and runs on
    # the head, this machine, in check mode.
    after = sage("cluster", "stop", "--check", "--json", env={"SAGE_LOCK_WAIT": "2"}, timeout=120)
    assert after.returncode == 0, after.stderr
    assert {name: h["result"] for name, h in json.loads(after.stdout)["hosts"].items()} == {"localhost": "ok"}


def test_twenty_concurrent_scales_leave_exactly_the_expected_hosts(sage: Sage, tmp_path: Path):
    sage.config = tmp_path / "c.yaml"
    removed = [f"old{i}.invalid:22" for i in range(10)]
    kept = ["keep.invalid:22"]
    write_base(sage.config, kept + removed)
    added = [f"new{i}.invalid:22" for i in range(10)]
    env = sage.env(SAGE_LOCK_WAIT="600")
    scales = [*(("add", h) for h in added), *(("remove", h) for h in removed)]
    procs = [subprocess.Popen([sys.executable, "-m", "sage_cluster", "worker", op, host, "--json"],
                              env=env, cwd=sage.home, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for op, host in scales]
    for (op, host), p in zip(scales, procs):
        out, err = p.communicate(timeout=900)
        assert "Traceback" not in err and "busy" not in err
        # Each edit went through; then its playbook reached for the ghost host, whose name does not resolve: exit 1,
        # with that host, and only that host, not ok. An add's first step there is the deploy's rsync from this
        # machine (failed); a remove's is the stop over Ansible's ssh (unreachable).
        ghost = host.split(":")[0]
        hosts = json.loads(out)["hosts"]
        failed = {name: h["result"] for name, h in hosts.items() if h["result"] not in ("ok", "changed")}
        expected = {ghost: "failed" if op == "add" else "unreachable"}
        assert (p.returncode, failed) == (1, expected), f"worker {op} {host}: {out}\n{err}"
        assert f"Could not resolve hostname {ghost}" in hosts[ghost]["error"]
    cfg = config.load(sage.config)
    assert sorted(map(str, cfg.workers)) == sorted(kept + added)
    text = sage.config.read_text()
    assert text.startswith("# Concurrency test cluster: this comment must survive every edit.\n")
    assert '"   # the list under test' in text


WRITER = """
import sys
from pathlib import Path
from sage_cluster import config_edit
path = Path(sys.argv[1])
i = 0
while True:
    i += 1
    host = config.Endpoint(f"w{i % 7}.invalid", 22)
    try:
        config_edit.edit_workers(path, add=host)
    except config.ConfigError:
        config_edit.edit_workers(path, remove=host)
"""


def test_config_writes_killed_at_any_point_leave_old_or_new(tmp_path: Path):
    path = tmp_path / "c.yaml"
    write_base(path, ["a.invalid:22"])
    rng = random.Random(7)
    for _ in range(25):
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], env=user_env(tmp_path))
        time.sleep(0.3 + rng.random() * 0.4)
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        cfg = config.load(path)  # parses: never half a file
        hosts = [w.host for w in cfg.workers]
        assert hosts[0] == "a.invalid" and len(hosts) == len(set(hosts))
        assert path.read_text().startswith("# Concurrency test cluster")
