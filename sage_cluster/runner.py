"""One playbook run through ansible-runner: events in, per-host results out.

Each run gets a private data dir under ~/.sage/runs/ (mode 0700, old runs rotated) holding the rendered
inventory and ansible-runner's artifacts. Only the environment we mean to pass reaches Ansible's settings, and
ansible-runner's dump of the environment (artifacts/<id>/command) is removed as soon as the run starts.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ansible_collections.sage.cluster.plugins.module_utils import node
from ansible_collections.sage.cluster.plugins.plugin_utils import inventory
from ansible_collections.sage.cluster.plugins.plugin_utils.config import STATE_DIR, Config

from sage_cluster import ansible_root, collections_path, security


KEEP_RUNS = 20
# Bookkeeping tasks whose success is not news to the person watching.
QUIET_ACTIONS = {"ansible.builtin.include_role", "include_role", "ansible.builtin.validate_argument_spec",
                 "validate_argument_spec", "ansible.builtin.include_tasks", "include_tasks",
                 "ansible.builtin.assert", "assert"}


@dataclass
class HostResult:
    host: str
    ok: int = 0
    changed: int = 0
    failed: bool = False
    unreachable: bool = False
    error: str = ""
    kind: str = ""  # what kind of failure error is (node.AUTH, NO_PYTHON, RAY_DRIFT), "" for another
    data: dict[str, Any] = field(default_factory=dict)
    reported_at: float = 0.0  # controller clock when the host's last result arrived (doctor's clock check)

    def note_failure(self, res: dict[str, Any]) -> None:
        """The host's first failure is its reason."""
        if not self.error:
            self.error, self.kind = failure_reason(res), failure_kind(res)

    @property
    def state(self) -> str:
        if self.unreachable:
            return "unreachable"
        if self.failed:
            return "failed"
        return "changed" if self.changed else "ok"


@dataclass
class RunResult:
    playbook: str
    hosts: dict[str, HostResult]
    status: str  # ansible-runner's: successful, failed, canceled, timeout
    seconds: float
    artifact_dir: str
    interrupted: bool = False

    @property
    def ok(self) -> bool:
        return not self.interrupted and all(h.state in ("ok", "changed") for h in self.hosts.values()) \
            and self.status == "successful"


def state_dir() -> Path:
    path = STATE_DIR.expanduser()
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def failure_kind(res: dict[str, Any]) -> str:
    """What kind of failure a host's result is: the module's or action's own `kind`; else, for a failure before any
    of sage's code ran, the shell's or ssh's (Ansible's connection, an rsync over ssh): the one place that reads it
    from their words."""
    if res.get("kind"):
        return str(res["kind"])
    if res.get("rc") in (126, 127) and res.get("module_stderr"):
        return node.NO_PYTHON
    return node.AUTH if "Permission denied (publickey" in _text(res) else ""


def _text(res: dict[str, Any]) -> str:
    text = res.get("msg") or res.get("stderr") or res.get("module_stderr") or res.get("stdout") or ""
    return " ".join(map(str, text)) if isinstance(text, list) else str(text)


def failure_reason(res: dict[str, Any]) -> str:
    """The reason a host failed, in one line a person can act on."""
    if failure_kind(res) == node.NO_PYTHON:
        # The shell could not start the module's interpreter, which the inventory takes from the config.
        why = res["module_stderr"].strip().splitlines()[-1]
        return (f"cannot run the remote Python ({why}): fix remote.python_path in the config; "
                "sage cluster doctor checks it")
    if res.get("argument_errors"):
        # validate_argument_spec's msg is only a header ("Validation of arguments failed:"): the reasons are here.
        whose = (res.get("validate_args_context") or {}).get("name") or "the playbook"
        return f"{whose} refused its variables: {'; '.join(map(str, res['argument_errors']))}"[:300]
    text = _text(res)
    if "REMOTE HOST IDENTIFICATION HAS CHANGED" in text:
        return _host_key_changed(text)
    # ssh's note on learning a new host key comes first and is never the reason.
    lines = [ln.strip() for ln in text.splitlines() if ln.strip().strip("@") and "Permanently added" not in ln]
    return lines[0][:300] if lines else "failed (no message)"


# ssh's words for a host that said nothing: no TCP answer, no banner, a keepalive unanswered, or the persisted
# master that gave up on it (its session's client then only sees the master go).
NO_ANSWER = ("Connection timed out", "not responding", "read from master failed", "mux_client_read_packet")


def no_answer(res: dict[str, Any]) -> bool:
    """Whether an unreachable host's failure is its silence, which ssh words in ways a person cannot act on."""
    text = _text(res)
    return any(words in text for words in NO_ANSWER)


def _host_key_changed(text: str) -> str:
    fingerprint = re.search(r"(SHA256:\S+)", text)
    offending = re.search(r"Offending \S+ key in (\S+?):(\d+)", text)
    where = f" (old key: {offending.group(1)} line {offending.group(2)})" if offending else ""
    fix = f" If the change is expected: ssh-keygen -R <host> -f {offending.group(1)}" if offending else ""
    return (f"host key changed: the host now offers {fingerprint.group(1).rstrip('.') if fingerprint else 'a new key'}"
            f"{where}; refusing to connect.{fix}")


class EventHandler:
    """ansible-runner's events in, per-host results out; on_event(host, state, task, res) per shown result.

    Fed one event dict at a time (ansible-runner's event_handler), so a unit test can feed it recorded events.
    """

    def __init__(self, on_event: Callable[[str, str, str, dict[str, Any]], None] | None = None,
                 connect_timeout: Callable[[str], int] | None = None) -> None:
        self.on_event = on_event
        self.connect_timeout = connect_timeout  # a host's ssh.connect_timeout, for the words of a silent host
        self.hosts: dict[str, HostResult] = {}

    def __call__(self, event: dict[str, Any]) -> bool:
        data = event.get("event_data", {})
        host = data.get("host")
        kind = event.get("event", "")
        if not host or not kind.startswith("runner_on_"):
            return True
        state = kind.removeprefix("runner_on_")
        if state in ("start", "skipped"):
            return True
        res = data.get("res") or {}
        result = self.hosts.setdefault(host, HostResult(host))
        result.reported_at = time.time()
        if state == "ok":
            result.ok += 1
            result.changed += bool(res.get("changed"))
            result.data.update(res.get("sage") or {})
        elif state == "failed" and not data.get("ignore_errors"):
            result.failed = True
            result.note_failure(res)
            result.data.update(res.get("sage") or {})
        elif state == "unreachable":
            result.unreachable = True
            if not result.error and self.connect_timeout and no_answer(res):
                result.error = f"{host} did not answer within {self.connect_timeout(host)} s (ssh)"
            result.note_failure(res)
        if self.on_event and not (state == "ok" and data.get("task_action") in QUIET_ACTIONS):
            self.on_event(host, "changed" if state == "ok" and res.get("changed") else state,
                          data.get("task", ""), res)
        return True  # keep the event in the artifacts

    def hosts_in(self, stats: dict[str, Any] | None) -> dict[str, HostResult]:
        """Every host the play recap counts. Hosts whose every task was skipped took no part in this run: they
        stay out of the summary."""
        for key in ("ok", "changed", "failures", "dark"):
            for host in (stats or {}).get(key) or {}:
                self.hosts.setdefault(host, HostResult(host))
        return self.hosts


def _rotate(runs: Path) -> None:
    old = sorted(p for p in runs.iterdir() if p.is_dir())[:-KEEP_RUNS]
    for path in old:
        shutil.rmtree(path, ignore_errors=True)


# Descriptors every playbook inherits: the cluster lock's (lock.py, held_by_playbooks).
_INHERITED: set[int] = set()


@contextmanager
def held_by_playbooks(fd: int) -> Iterator[None]:
    """The playbooks run inside this block inherit fd (open, not close-on-exec), and so do the workers Ansible forks
    from them: an flock on it is released only when sage and every one of them has closed it."""
    _INHERITED.add(fd)
    try:
        yield
    finally:
        _INHERITED.discard(fd)


def _patch_playbook_spawn() -> None:
    """How ansible-runner starts ansible-playbook under a pty (pexpect), changed in three ways:

    - The cluster lock outlives a killed sage until its playbook is done (issue 32: a SIGKILLed `sage cluster
      start` left its playbook running, and the next command, which took the freed lock, overlapped it). Ending
      the playbook with sage instead would not end its work: a module already running on a node (a `ray start`)
      goes on after its ssh is gone, and Ansible's workers leave ansible-playbook's session (setsid), beyond a
      process group kill. So the playbook inherits the lock's descriptor (_INHERITED): the next command waits
      until the last worker, which waits for its node's module, has ended.
    - SIGHUP ends ansible-playbook again (ansible-runner has it ignored): sage's death closes the pty, the kernel
      sends SIGHUP, and the orphan starts no new task; the tasks in flight end on their own, under the lock.
    - ansible-runner closes the pty once the process has ended; ptyprocess then sleeps 0.1 s ("to give the kernel
      time") before checking that it has: a tenth of a second of every command, spent after the work is done. A
      pty pexpect opens in this process closes at once; a child still alive is still ended.

    The runner's one private API (pexpect.spawn._spawnpty): ansible-runner runs playbooks only through pexpect
    (RunnerConfig sets runner_mode itself) and has no setting for any of this. tests/unit/test_runner.py fails
    when pexpect, ptyprocess or ansible-runner change under it."""
    import pexpect

    original = pexpect.spawn._spawnpty
    if original.__name__ == "spawn_playbook":  # patched already
        return

    def spawn_playbook(self: Any, args: list[str], preexec_fn: Callable[[], None] | None = None,
                       **kwargs: Any) -> Any:
        fds = tuple(_INHERITED)

        def in_the_child() -> None:
            if preexec_fn is not None:
                preexec_fn()  # pexpect's: ignores SIGHUP
            signal.signal(signal.SIGHUP, signal.SIG_DFL)
            for fd in fds:
                os.set_inheritable(fd, True)

        pty = original(self, args, preexec_fn=in_the_child, pass_fds=fds, **kwargs)
        pty.delayafterclose = 0
        return pty

    pexpect.spawn._spawnpty = spawn_playbook


def roles_check_their_variables(root: Path) -> bool:
    """Whether the roles' argument-spec task runs in sage's runs (sage_rolespec_validate). sage has checked the
    config its inventory comes from against the schema the specs are made of (roledoc), and the task is one more
    on every host (half the controller CPU of a start at 128 hosts); but values in the playbooks' host_vars/ or
    group_vars/ reach the roles unchecked by sage, so with either there the roles check."""
    return any((root / "playbooks" / name).is_dir() for name in ("host_vars", "group_vars"))


def run_playbook(cfg: Config, playbook: str, extravars: dict[str, Any], *, limit: str | None = None,
                 check: bool = False, verbosity: int = 0,
                 on_event: Callable[[str, str, str, dict[str, Any]], None] | None = None,
                 cancel: threading.Event | None = None, passwords: dict[str, str] | None = None) -> RunResult:
    """Run playbooks/<playbook> against the config's inventory; on_event(host, state, task, res) per result.

    passwords: prompt pattern -> answer, typed into ansible-playbook's terminal (a vars_prompt): a secret that so
    stays out of every argument, file and event (extravars land on the command line, and in env/ without
    suppress_env_files)."""
    import ansible_runner  # slow to import: only commands that run a playbook pay for it

    _patch_playbook_spawn()
    root = ansible_root()
    security.prepare_controller(cfg)
    runs = state_dir() / "runs"
    runs.mkdir(mode=0o700, exist_ok=True)
    _rotate(runs)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    data_dir = runs / f"{stamp}-{Path(playbook).stem}-{os.getpid()}"
    (data_dir / "inventory").mkdir(mode=0o700, parents=True)
    inv_path = data_dir / "inventory" / "hosts.yml"
    inv_path.write_text(inventory.render(cfg), encoding="utf-8")
    os.chmod(inv_path, 0o600)

    events = EventHandler(on_event, connect_timeout=lambda host: cfg.node(host)["ssh"]["connect_timeout"])

    def on_status(status: dict[str, Any], runner_config: Any = None) -> None:
        # ansible-runner writes the whole environment to artifacts/<id>/command; it has no place there.
        if status.get("status") == "running" and runner_config is not None:
            Path(runner_config.artifact_dir, "command").unlink(missing_ok=True)

    cmdline = "--check --diff" if check else None
    started = time.monotonic()
    runner = ansible_runner.run(
        private_data_dir=str(data_dir),
        project_dir=str(root / "playbooks"),
        playbook=playbook,
        inventory=str(inv_path),
        extravars={"sage_rolespec_validate": roles_check_their_variables(root), **extravars},
        limit=limit,
        verbosity=verbosity or None,
        cmdline=cmdline,
        envvars={
            "ANSIBLE_CONFIG": str(root / "ansible.cfg"),
            # sage's own copy of the collection sage.cluster, whatever else is installed.
            "ANSIBLE_COLLECTIONS_PATH": str(collections_path()),
            # ansible-runner turns host key checking off unless told; the inventory's ssh args set the policy.
            "ANSIBLE_HOST_KEY_CHECKING": "True",
            "ANSIBLE_LOCAL_TEMP": str(data_dir / "tmp"),
            "ANSIBLE_SSH_CONTROL_PATH_DIR": str(state_dir() / "cp"),
            # The ansible-playbook next to this Python first: no pyenv/asdf shim, the same environment.
            "PATH": os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")]),
            "ANSIBLE_FORKS": str(max(10, len(cfg.workers) + 1)),
            # The inventory is always the YAML file above: loading no other inventory plugin saves time on every
            # run (docs/performance.md, "Figures behind the code").
            "ANSIBLE_INVENTORY_ENABLED": "yaml",
        },
        quiet=True,
        suppress_env_files=True,
        event_handler=events,
        status_handler=on_status,
        cancel_callback=(lambda: cancel.is_set()) if cancel else None,
        passwords=passwords,
    )
    Path(runner.config.artifact_dir, "command").unlink(missing_ok=True)
    return RunResult(playbook=playbook, hosts=events.hosts_in(runner.stats), status=runner.status,
                     seconds=time.monotonic() - started, artifact_dir=str(runner.config.artifact_dir),
                     interrupted=runner.status == "canceled")
