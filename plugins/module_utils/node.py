"""What sage's modules do alike on a node: the records sage keeps there (their paths in one place), running a
command with a timeout into a log, the telling line of a failure, the env's Python and Ray versions, and
whether a port is free. The env a node's tools run in is sage_env.py's; finding it (`auto`), detect_env.py's;
Ray's own processes, ray_node.py's.

Standard library only: modules carry it to the node inside AnsiballZ, and `sage` imports it too.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import tempfile
import time

# sage's files on a node, under the SSH user's home.
ENV_RECORD = "~/.sage/env.json"  # python_path/ray_command `auto`: what detect_env found, while its Python exists
DEPLOY_RECORD = "~/.sage/deploy.json"  # what sage_deploy sent and installed; its install log beside it (.log)
PROVISION_LOG = "~/.sage/provision.log"  # sage_provision's pip output
HEAD_STARTED = "~/.sage/ray_head_started"  # a head's start writes it, its stop removes it: a lost head
# (marker there, no GCS running) is healed on its store, a stopped one starts anew
WHEELS_DIR = ".sage/wheels"  # sage_wheelhouse's wheels, relative to the home (as rsync's paths are)

# What kind of failure a failed result reports, as its `kind`: one word set where the failure is known, so that
# sage names the next step (sage_cluster/runner.py reads it) without matching the message's text.
AUTH = "auth"  # key login fails and no password was given (sage cluster setup-ssh); the runner: ssh's own refusal
NO_PYTHON = "no_python"  # the node cannot start the module's Python (set by the runner: the module never ran)
RAY_DRIFT = "ray_drift"  # the env holds another Ray release than the cluster's (sage cluster provision)

# Words of a line that names a failure (Python's tracebacks, pip's and Ray's errors, a refused connection).
ERROR_WORDS = ("ERROR", "Error", "error", "failed", "Failed", "refused", "not found", "No such")


def telling_line(lines, words=ERROR_WORDS, skip=(), none="no output"):
    """The line of a failed command's output that says most, in one message line's length: the last one naming
    an error (any of `words`), else the last one; lines holding any of `skip` never count, and `none` stands for
    no line at all. ssh's callers pass no words: its last line is its fatal one."""
    lines = [line.strip() for line in lines if line.strip() and not any(s in line for s in skip)]
    for line in reversed(lines):
        if any(w in line for w in words):
            return line[:300]
    return lines[-1][:300] if lines else none


def read_json(path):
    """A JSON record of the node ({} when it is missing, unreadable or not an object)."""
    try:
        with open(os.path.expanduser(path)) as fh:
            data = json.load(fh)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def write_json(path, data, **dump):
    """Write a record whole (a temp file, then a rename): the file 0600, its directory made 0700 when missing.
    dump: json.dump's layout arguments."""
    path = os.path.expanduser(path)
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path))
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, **dump)
    os.replace(tmp, path)


def tail(path, count, window=256 * 1024):
    """The last `count` lines of a log ([] when it is not there), read from its last `window` bytes."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - window))
            return fh.read().decode(errors="replace").splitlines()[-count:] if count else []
    except FileNotFoundError:
        return []


def run_logged(argv, log_path, timeout, title, env=None, cwd=None, gone=None, fresh=False):
    """Run argv with its output in log_path (0600, its directory made 0700 when missing) after a line `=== <time>
    <title>` (the title, not argv: an argument may be a secret). Appended, or a fresh log with `fresh`. No stdin
    and a session of its own: nothing ties the command, or the daemons it starts, to the SSH session.

    Returns (exit code, None, output) or (None, why it was cut short, output): "timed out" after timeout s, or
    what gone() (asked every second while it runs) says is gone; then its whole process group is killed. output:
    what this run wrote. OSError when argv[0] cannot be run."""
    os.makedirs(os.path.dirname(log_path), mode=0o700, exist_ok=True)
    with open(log_path, "wb" if fresh else "ab") as log:
        os.chmod(log_path, 0o600)
        log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {title}\n".encode())
        log.flush()
        start = log.tell()
        proc = subprocess.Popen(argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                env=env, start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            try:
                rc, why = proc.wait(timeout=1 if gone else timeout), None
                break
            except subprocess.TimeoutExpired:
                rc, why = None, "timed out" if time.monotonic() >= deadline else gone() if gone else None
            if why:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                break
    with open(log_path, "rb") as log:
        log.seek(start)
        return rc, why, log.read().decode(errors="replace")


# Run by an env's own Python: its version and its Ray's, without importing Ray (that takes seconds).
VERSIONS = r"""
import json, sys
try:
    from importlib import metadata
    ray = metadata.version("ray")
except Exception:
    ray = None
print(json.dumps({"python": "%d.%d.%d" % sys.version_info[:3], "ray": ray}))
"""


def versions(python, env=None):
    """({python, ray}, None): the versions in python's env (ray None without Ray); or (None, why that Python
    does not answer, in one line)."""
    try:
        proc = subprocess.run([python, "-c", VERSIONS], capture_output=True, text=True, timeout=60, env=env,
                              stdin=subprocess.DEVNULL, check=False)
        if proc.returncode == 0:
            return json.loads(proc.stdout), None
        return None, telling_line(proc.stderr.splitlines(), none=f"exit {proc.returncode}")
    except (OSError, ValueError, subprocess.SubprocessError) as exc:
        return None, str(exc)[:300]


def port_free(port, host=""):
    """Whether nothing listens on the port (host "": any address). SO_REUSEADDR, as servers set it: connections
    of an earlier listener that wait out TIME_WAIT do not make the port busy."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
            return True
        except OSError:
            return False
