"""One mutating command at a time per cluster: an flock on ~/.sage/locks/<config>.lock naming its holder.

The playbooks a command runs hold the lock too (runner.held_by_playbooks): a killed sage's playbook keeps it until
its last task has ended, so the next command never overlaps it."""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sage_cluster import report
from sage_cluster.runner import held_by_playbooks, state_dir

DEFAULT_WAIT = 300.0


class LockBusy(Exception):
    """Another sage command held the cluster lock for longer than we were willing to wait."""


def lock_path(config_path: Path | None) -> Path:
    key = str(config_path.resolve()) if config_path else "builtin"
    locks = state_dir() / "locks"
    locks.mkdir(mode=0o700, exist_ok=True)
    return locks / f"{hashlib.sha256(key.encode()).hexdigest()[:16]}.lock"


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text() or "{}")
        pid, command = info["pid"], info["command"]
    except (OSError, ValueError, KeyError):
        return "another process"
    if _alive(pid):
        return f"pid {pid} ({command})"
    # sage is gone; its playbook holds the lock until the tasks it had begun end (runner.held_by_playbooks).
    return f"the playbook of a killed `{command}` (pid {pid}), still ending its tasks on the nodes,"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # someone else's process: alive
    return True


@contextmanager
def cluster_lock(config_path: Path | None, wait: float | None = None) -> Iterator[None]:
    """Hold the cluster's lock; wait up to `wait` s ($SAGE_LOCK_WAIT, default 300) for the current holder."""
    if wait is None:
        wait = float(os.environ.get("SAGE_LOCK_WAIT", DEFAULT_WAIT))
    path = lock_path(config_path)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + wait
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not told:
                    report.note(f"Waiting up to {wait:g}s for the cluster's lock: {_holder(path)} holds it.")
                    told = True
                if time.monotonic() >= deadline:
                    raise LockBusy(f"the cluster is busy: {_holder(path)} holds its lock ({path}); "
                                   f"waited {wait:g}s. Try again when it ends.") from None
                time.sleep(0.1)
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "command": " ".join(["sage", *sys.argv[1:]])}).encode(), 0)
        with held_by_playbooks(fd):
            yield
    finally:
        os.close(fd)  # releases the flock
