"""Shared helpers for the unit tests: run the real CLI as a subprocess, with HOME isolated (so ~/.sage is too)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.conftest import user_env

BIN = Path(sys.executable).parent
SAGE = [str(BIN / "sage")] if (BIN / "sage").exists() else [sys.executable, "-m", "sage_cluster"]
PY_SAGE = [sys.executable, "-m", "sage_cluster"]

# The guide's example config, copied from cluster-guide.en.md (values and comments as the guide has them).
GUIDE_CONFIG = '''\
head:
  host: "base-sage"              # head node host name or IP
  head_port: 6379                # Ray cluster (GCS) port, default 6379
  dashboard_port: 8265           # Ray dashboard port, default 8265
  dashboard_host: "0.0.0.0"      # dashboard bind address (0.0.0.0 = all interfaces)
  temp_dir: "/tmp/ray_head"      # Ray temp dir on the head
  log_dir: "/tmp/sage_head_logs" # log dir on the head
worker:
  bind_host: "localhost"          # IP a worker binds to; "localhost" means: use the worker's own host name
  temp_dir: "/tmp/ray_worker"     # Ray temp dir on workers
  log_dir: "/tmp/sage_worker_logs" # log dir on workers
workers_ssh_hosts: "sage2:22,sage4:22"   # worker SSH hosts, host:port, comma separated
ssh:
  user: "sage"                    # SSH login user
  key_path: "~/.ssh/id_rsa"      # SSH private key
  connect_timeout: 10            # SSH connect timeout (seconds)
remote:
  sage_home: "/home/sage"                        # project directory on remote nodes
  python_path: "/opt/conda/envs/sage/bin/python" # remote Python interpreter
  ray_command: "/opt/conda/envs/sage/bin/ray"    # remote ray executable
  conda_env: "sage"                              # conda env to activate
'''


def run(argv: list[str], home: Path, timeout: float = 60, **extra: str) -> subprocess.CompletedProcess:
    """One CLI run as a user would do it; stdin closed so nothing can wait for input."""
    start = time.monotonic()
    proc = subprocess.run(argv, env=user_env(home, NO_COLOR="1", **extra), cwd=home, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=timeout)
    proc.duration = time.monotonic() - start  # type: ignore[attr-defined]
    return proc


def run_many(jobs: dict, home: Path) -> dict:
    """Run {name: argv or (argv, extra env)} concurrently: Python's start-up dominates these tests, so a test
    module starts all its CLI runs at once in a fixture. Returns {name: CompletedProcess}."""
    def one(job):
        argv, extra = job if isinstance(job, tuple) else (job, {})
        return run(argv, home, **extra)

    with ThreadPoolExecutor(max_workers=max(4, 3 * (os.cpu_count() or 2))) as pool:
        futures = {name: pool.submit(one, job) for name, job in jobs.items()}
        return {name: f.result() for name, f in futures.items()}


def stderr_lines(proc: subprocess.CompletedProcess) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.strip()]


def without_others_warnings(stderr: str) -> str:
    """stderr without the Python warnings that installed packages raise on import (a newer cryptography deprecates
    what ansible-core imports, e.g. "_ssh_agent.py:18: CryptographyDeprecationWarning: DSA is deprecated"): ours
    are not among them, and a new release of another project must not fail this suite."""
    lines, kept = stderr.splitlines(keepends=True), []
    skip_source = False
    for line in lines:
        if skip_source and line.startswith("  "):  # the source line Python prints under a warning
            skip_source = False
            continue
        skip_source = "/site-packages/" in line and re.search(r"\.py:\d+: \w*Warning: ", line) is not None
        if not skip_source:
            kept.append(line)
    return "".join(kept)
