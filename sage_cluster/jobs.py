"""`sage job ...`: Ray's Jobs API on the head's dashboard, with the cluster's token and, when the dashboard is
bound to a remote head's loopback, an SSH tunnel that sage opens and closes (dashboard.py's, so the head's host
key policy applies).

The token goes to Ray's client as an HTTP header of this process only: never an argument of a process, an
environment variable of a child, or a line of output.

Where a job runs: Ray's runtime_env working_dir takes only a local directory (uploaded) or a URI, not a path
on the node, so a job meant for the deployed project gets the entrypoint `cd <project> && <CMD ARGS>` (Ray runs
it through a shell, so every word is quoted). The driver inherits the raylet's environment: the env Ray was
started in (remote.python_path's directory first on PATH, the token's settings).
"""
from __future__ import annotations

import json
import logging
import shlex
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

from ansible_collections.sage.cluster.plugins.plugin_utils import config as cfgmod
from ansible_collections.sage.cluster.plugins.plugin_utils.config import Config, ConfigError
from ansible_collections.sage.cluster.plugins.plugin_utils.security import token_enabled

from sage_cluster import dashboard, ray_node, security

TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
POLL = 0.5  # seconds between two looks at a job's status while it runs
LAST_LINES = 10
# How Ray's client words an unknown job id (its RuntimeError for an HTTP 404 from /api/jobs/<id>).
NOT_FOUND = "status code 404"


class JobError(Exception):
    """The cluster or the job said no: one line, exit 1."""


# ---------------------------------------------------------------- the submission (pure)

def project_dir(cfg: Config) -> str:
    """Where the deployed project is on the head: remote.sage_home, or deploy.source when the head is this machine
    (deploy sends nothing there: it runs the source itself)."""
    if cfgmod.is_this_machine(cfg["head"]["host"]):
        return str(Path(cfg["deploy"]["source"]).expanduser().resolve())
    return cfg["remote"]["sage_home"]


def entrypoint(argv: list[str], directory: str | None) -> str:
    """The shell line Ray runs: each word quoted, in `directory` (None: where Ray puts the job, its working_dir)."""
    command = " ".join(shlex.quote(word) for word in argv)
    return f"cd {shlex.quote(directory)} && {command}" if directory else command


def pairs(values: tuple[str, ...] | list[str], option: str, example: str) -> dict[str, str]:
    """KEY=VALUE options -> a dict (a value may hold "="); a bad one is a one-line ConfigError."""
    out = {}
    for text in values:
        key, sep, value = text.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"argument {option} {text!r} must be KEY=VALUE. Fix: e.g. {option} {example}.")
        out[key.strip()] = value
    return out


def resources(text: str | None) -> dict[str, float] | None:
    """--entrypoint-resources: a JSON object or NAME=AMOUNT[,NAME=AMOUNT...] -> {name: amount}."""
    if text is None:
        return None
    option, example = "--entrypoint-resources", "'accel=1' or '{\"accel\": 1}'"
    if text.lstrip().startswith("{"):
        try:
            parsed = json.loads(text)
        except ValueError as exc:
            raise ConfigError(f"argument {option}: not valid JSON ({exc}). Fix: e.g. {option} {example}.") from None
    else:
        parsed = pairs([p for p in text.split(",") if p.strip()] or [text], option, example)
    out = {}
    for name, amount in parsed.items():
        try:
            out[name] = float(amount) if not isinstance(amount, bool) else -1.0
        except (TypeError, ValueError):
            out[name] = -1.0  # refused below, with the others
        if out[name] < 0:
            raise ConfigError(f"argument {option}: {name}={amount!r} is not an amount (a number >= 0). "
                              f"Fix: e.g. {option} {example}.")
    return out


def runtime_env(json_text: str | None, env: tuple[str, ...], working_dir: str | None) -> dict[str, Any] | None:
    """--runtime-env-json, with --env's variables added to its env_vars and --working-dir as its working_dir."""
    out: dict[str, Any] = {}
    if json_text is not None:
        try:
            out = json.loads(json_text)
        except ValueError as exc:
            raise ConfigError(f"argument --runtime-env-json: not valid JSON ({exc}). "
                              "Fix: e.g. --runtime-env-json '{\"pip\": [\"requests\"]}'.") from None
        if not isinstance(out, dict):
            raise ConfigError("argument --runtime-env-json must be a JSON object. "
                              "Fix: e.g. --runtime-env-json '{\"pip\": [\"requests\"]}'.")
    if env:
        out["env_vars"] = {**(out.get("env_vars") or {}), **pairs(env, "--env", "MODE=fast")}
    if working_dir is not None:
        path = Path(working_dir).expanduser()
        if not path.is_dir():
            raise ConfigError(f"argument --working-dir {working_dir!r}: no such directory on this machine. "
                              "Fix: name the directory of the code to upload.")
        out["working_dir"] = str(path.resolve())
    return out or None


# ---------------------------------------------------------------- the connection

def needs_tunnel(cfg: Config) -> bool:
    """A dashboard on a remote head's loopback is reached only through SSH; any other address directly."""
    head = cfg["head"]
    return head["dashboard_host"] in cfgmod.LOOPBACK_NAMES and not cfgmod.is_this_machine(head["host"])


def direct_url(cfg: Config) -> str:
    head = cfg["head"]
    if cfgmod.is_this_machine(head["host"]):
        return f"http://{dashboard.local_target(cfg)}:{head['dashboard_port']}"
    return ray_node.dashboard_url(head["dashboard_host"], head["host"], head["dashboard_port"])


def free_port() -> int:
    """A local port nothing listens on, for the tunnel (the head's own port may be taken here, e.g. on the rig)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def connect(cfg: Config) -> Iterator[Any]:
    """A JobSubmissionClient on the head's dashboard, through a tunnel for as long as the block runs if needed."""
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobSubmissionClient  # slow to import: only `sage job` pays for it

    # Ray's client logs each closed log stream at INFO on stderr: not news to the person watching.
    logging.getLogger("ray.dashboard.modules.job.sdk").setLevel(logging.WARNING)
    head = cfg["head"]
    where = f"the head {head['host']}'s dashboard (port {head['dashboard_port']}"
    tunnel, previous = None, None
    try:
        if needs_tunnel(cfg):
            # SIGTERM, like Ctrl-C, closes the tunnel: ssh runs in a session of its own and would outlive us.
            previous = signal.signal(signal.SIGTERM, dashboard.interrupt)
            port = free_port()
            try:
                tunnel = dashboard.open_tunnel(cfg, port)
            except dashboard.TunnelFailed as exc:
                raise JobError(str(exc)) from None
            url, where = f"http://127.0.0.1:{port}", where + ", through SSH"
        else:
            url = direct_url(cfg)
        headers = {"Authorization": f"Bearer {security.read_token()}"} if token_enabled(cfg) else None
        try:
            client = JobSubmissionClient(url, headers=headers)
        except AuthenticationError:
            raise JobError(f"{where}) refused this machine's Ray token. Fix: `sage cluster restart` starts "
                           "every node with it.") from None
        except (ConnectionError, RuntimeError) as exc:
            raise JobError(f"nothing answers on {where}): {_first_line(exc)}. Fix: `sage cluster start`, "
                           "then `sage cluster status`.") from None
        yield client
    finally:
        if tunnel is not None:
            dashboard.close(tunnel)
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def call(what: str, job_id: str | None, fn: Callable[[], Any]) -> Any:
    """One request about a job (None: about the jobs); a job Ray does not know, or a refused request, is a JobError."""
    from ray.exceptions import RayError

    job = f"job {job_id}" if job_id else "jobs"
    try:
        return fn()
    except (RuntimeError, RayError) as exc:  # RayError: e.g. a refused token
        if job_id and NOT_FOUND in str(exc):
            raise JobError(f"no job {job_id} on this cluster. Fix: `sage job list` shows the jobs.") from None
        raise JobError(f"cannot {what} {job}: {_first_line(exc)}") from None
    except (ConnectionError, OSError) as exc:
        raise JobError(f"lost the connection to the head's dashboard while trying to {what} {job}: "
                       f"{_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]


# ---------------------------------------------------------------- what the commands do

def status_of(details: Any) -> str:
    return str(getattr(details.status, "value", details.status))


def as_json(details: Any) -> dict[str, Any]:
    """One job as `--json` prints it (Ray's own field names)."""
    return {**details.model_dump(mode="json"), "status": status_of(details)}


def result_json(job_id: str, details: Any, code: int, meaning: str) -> dict[str, Any]:
    """What `sage job submit --json` and `sage job stop --json` print: the job as the command left it (details None:
    not known), the command's exit code and what it means."""
    return {"job_id": job_id, "status": status_of(details) if details is not None else None,
            "message": getattr(details, "message", None) or None, "exit_code": code, "exit_meaning": meaning}


def submitted(client: Any) -> list[Any]:
    """The jobs submitted through the Jobs API (not the drivers of `ray.init` sessions), oldest first."""
    jobs = [j for j in client.list_jobs() if j.submission_id]
    return sorted(jobs, key=lambda j: j.start_time or 0)


def follow(client: Any, job_id: str, write: Callable[[str], None]) -> Any:
    """Print the job's output from its start until it ends; return its final details.

    Ray's log stream (tail_job_logs) closes seconds after the job ended (docs/performance.md, "Figures behind the
    code"), so the status is polled beside it: once the job has ended, the stream is dropped and what it had not
    yet delivered is printed from the job's full log."""
    import asyncio  # only `sage job submit` waits on it: not on every sage command's start

    printed = 0

    async def tail() -> None:
        nonlocal printed
        try:
            async for chunk in client.tail_job_logs(job_id):
                write(chunk)
                printed += len(chunk)
        except Exception:  # a broken stream (a vanished driver, a dropped tunnel) is not retried:
            return         # the status says how the job ended, and the full log gives the rest

    async def until_ended() -> Any:
        stream = asyncio.ensure_future(tail())
        try:
            while True:
                details = await asyncio.to_thread(call, "read", job_id, lambda: client.get_job_info(job_id))
                if status_of(details) in TERMINAL:
                    return details
                await (asyncio.sleep(POLL) if stream.done() else asyncio.wait({stream}, timeout=POLL))
        finally:
            stream.cancel()

    details = asyncio.run(until_ended())
    write(call("read the logs of", job_id, lambda: client.get_job_logs(job_id))[printed:])
    return details


def ended(client: Any, job_id: str, timeout: float | None = None) -> Any:
    """The job's details once it has ended; a JobError if it has not within `timeout` seconds."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        details = call("read", job_id, lambda: client.get_job_info(job_id))
        if status_of(details) in TERMINAL:
            return details
        if deadline is not None and time.monotonic() > deadline:
            raise JobError(f"job {job_id} is still {status_of(details)} {timeout:.0f} s after the stop request. "
                           f"Fix: try again; `sage job status {job_id}` shows it.")
        time.sleep(POLL)


def stop(client: Any, job_id: str, timeout: float = 60) -> Any:
    """Ask Ray to stop the job and wait until it has ended (Ray sends SIGTERM, then SIGKILL); its final details."""
    call("stop", job_id, lambda: client.stop_job(job_id))
    return ended(client, job_id, timeout)


def last_lines(client: Any, job_id: str, n: int = LAST_LINES) -> list[str]:
    return call("read the logs of", job_id, lambda: client.get_job_logs(job_id)).splitlines()[-n:]


def how_to_follow(job_id: str) -> str:
    return f"Follow it: sage job logs {job_id} --follow; stop it: sage job stop {job_id}"


# ---------------------------------------------------------------- the stale-deploy check

STALE_WAIT = 60  # seconds a finished job waits for the stale check's answer before exiting


def stale_check(cfg: Config, warn: Callable[[str], None]) -> threading.Thread | None:
    """Run status.yml in the background, beside the job (it takes about as long as the job's own start), and
    warn(one line) if it flags a node stale. Join the thread before exiting so the
    warning is not lost. None when no node gets deploys (a one-machine cluster)."""
    if not cfg.workers and cfgmod.is_this_machine(cfg["head"]["host"]):
        return None
    from sage_cluster import operations

    def run() -> None:
        try:
            result = operations.run(cfg, operations.Invocation(json=True), "status.yml", "status")
        except Exception:  # a warning that cannot be computed is no reason to fail the job
            return
        if stale := sorted(n for n, h in result.hosts.items() if (h.data.get("deploy") or {}).get("stale")):
            warn(f"{', '.join(stale)} run{'s' if len(stale) == 1 else ''} an older deploy than this machine's "
                 "source (stale): the job may run old code there. Fix: `sage cluster deploy`.")

    thread = threading.Thread(target=run, name="sage-stale-check", daemon=True)
    thread.start()
    return thread


def write_stdout(chunk: str, stream: TextIO | None = None) -> None:
    """A job's output as it comes: on stdout, or on `stream` (stderr when stdout is for --json)."""
    out = stream or sys.stdout
    out.write(chunk)
    out.flush()
