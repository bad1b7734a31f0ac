"""The runner's pure logic over Ansible's events: per-host results, live progress, a failed host's one line."""
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from sage_cluster import runner
from sage_cluster.runner import EventHandler, failure_reason
from tests.unit.helpers import PY_SAGE, run


def test_a_missing_remote_python_names_the_config_key() -> None:
    # What ansible-core 2.19 returns when the interpreter the inventory names does not exist on the host.
    res = {"changed": False, "module_stderr": "/bin/sh: 1: /home/sage/nope: not found\n", "module_stdout": "",
           "msg": "The module interpreter '/home/sage/nope' was not found.", "rc": 127}
    line = failure_reason(res)
    assert "/home/sage/nope: not found" in line and "remote.python_path" in line and "\n" not in line


def test_a_module_failure_keeps_the_modules_message() -> None:
    assert failure_reason({"msg": "ray start failed (exit 1): port in use\nmore", "rc": 1}) == \
        "ray start failed (exit 1): port in use"


# ---------------------------------------------------------------- event handling, fed recorded events

RECORDED = json.loads((Path(__file__).parent / "data" / "runner_events.json").read_text())


def feed() -> tuple[EventHandler, list[tuple[str, str, str]]]:
    shown: list[tuple[str, str, str]] = []
    handler = EventHandler(lambda host, state, task, res: shown.append((host, state, task)))
    for event in RECORDED["events"]:
        assert handler(event) is True  # ansible-runner keeps the event in the artifacts
    return handler, shown


def test_per_host_results_from_a_recorded_run() -> None:
    hosts = feed()[0].hosts_in(RECORDED["stats"])
    good, gone = hosts["good"], hosts["gone"]
    assert (good.state, good.ok, good.changed) == ("failed", 4, 1)
    # The ignored failure is not the reason; the module's own message is, and its report stays readable.
    assert good.error == "Ray is not running on the head: start it first (sage head start)"
    assert good.data["node_type"] == "head" and good.data["running"] is False
    assert good.data["log_file"] == "/tmp/rec/l/head.log"  # from the earlier ok result: failures add, not replace
    assert gone.state == "unreachable"
    assert gone.error.endswith("ssh: connect to host 127.0.0.1 port 1: Connection refused")


def test_progress_shows_what_a_person_watches() -> None:
    shown = feed()[1]
    assert shown == [
        ("gone", "unreachable", "Read something"),
        ("good", "ok", "Read something"),
        ("good", "changed", "Change something"),
        ("good", "failed", "Fail but ignored"),
        ("good", "ok", "Ray node status"),
        ("good", "failed", "Ray node wait"),
    ]  # no start or skipped events, no argument-spec check that passed


def test_a_host_with_only_skipped_tasks_stays_out_and_recap_hosts_get_in() -> None:
    handler = EventHandler()
    handler({"event": "runner_on_skipped", "event_data": {"host": "idle", "task": "x"}})
    assert handler.hosts == {}
    hosts = handler.hosts_in({"ok": {"quiet": 1}, "dark": {}, "skipped": {"idle": 1}})
    assert sorted(hosts) == ["quiet"] and hosts["quiet"].state == "ok"


def test_ansible_playbooks_pty_closes_without_ptyprocess_sleep_and_a_live_child_still_ends() -> None:
    """The patch's ground: a private pexpect hook and ansible-runner's fixed pexpect mode. Fails when either
    changes (a runner_mode that playbooks can choose would make the patch unneeded: drop it then)."""
    import inspect

    import pexpect
    from ansible_runner.config.runner import RunnerConfig

    assert list(inspect.signature(pexpect.spawn._spawnpty).parameters)[:2] == ["self", "args"]
    assert 'self.runner_mode = "pexpect"' in inspect.getsource(RunnerConfig.__init__)

    runner._patch_playbook_spawn()
    runner._patch_playbook_spawn()  # once per run: wrapping again would stack wrappers
    done = pexpect.spawn("true")
    done.expect(pexpect.EOF)
    assert done.ptyproc.delayafterclose == 0
    done.close()
    assert done.exitstatus == 0
    alive = pexpect.spawn("sleep", ["30"])
    alive.close()
    assert not alive.isalive() and alive.signalstatus is not None


def test_the_roles_check_their_variables_only_where_values_bypass_the_config(tmp_path: Path) -> None:
    """sage's own inventory comes from a checked config: its runs skip the roles' argument-spec task, unless the
    playbook directory's host_vars/ or group_vars/ (values sage never sees) exist."""
    (tmp_path / "playbooks").mkdir()
    assert runner.roles_check_their_variables(tmp_path) is False
    for name in ("host_vars", "group_vars"):
        (tmp_path / "playbooks" / name).mkdir()
        assert runner.roles_check_their_variables(tmp_path) is True
        (tmp_path / "playbooks" / name).rmdir()


def test_an_argument_spec_failure_says_what_was_wrong_not_its_header() -> None:
    res = {"failed": True, "msg": "Validation of arguments failed:\nargument 'ray_node_head_port' is of type str",
           "argument_errors": ["argument 'ray_node_head_port' is of type str and we were unable to convert to int"],
           "validate_args_context": {"type": "role", "name": "ray_node", "argument_spec_name": "main"}}
    assert failure_reason(res) == ("ray_node refused its variables: argument 'ray_node_head_port' is of type str and "
                                   "we were unable to convert to int")


def test_a_bad_value_in_playbooks_host_vars_is_refused_by_the_roles_in_sages_run(tmp_path: Path) -> None:
    """The real run: sage from a copy of this tree whose playbooks/host_vars/ holds a value sage never checked; the
    roles' argument spec refuses it, and sage's line says what (the built-in default: this machine, no SSH)."""
    repo = Path(__file__).resolve().parents[2]  # this checkout (the newest pair runs an installed wheel)
    tree = tmp_path / "tree"
    files = subprocess.run(["git", "ls-files", "-z"], cwd=repo, capture_output=True, check=True).stdout
    for name in filter(None, files.decode().split("\0")):
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(repo / name, tree / name, follow_symlinks=False)
    (tree / "playbooks" / "host_vars").mkdir()
    (tree / "playbooks" / "host_vars" / "localhost.yml").write_text("ray_node_head_port: six\n")
    home = tmp_path / "home"
    home.mkdir()
    proc = run([*PY_SAGE, "cluster", "status", "--json"], home, timeout=120, PYTHONPATH=str(tree))
    assert proc.returncode == 1, proc.stderr
    error = json.loads(proc.stdout)["hosts"]["localhost"]["error"]
    assert error.startswith("ray_node refused its variables: argument 'ray_node_head_port' is of type str"), error


def test_a_playbook_holds_the_cluster_lock_until_it_ends_and_dies_of_sighup(tmp_path: Path) -> None:
    """Issue 32, finding 3: the lock's flock lives in the spawned process once sage has let go of it; a hangup (the
    pty of a killed sage closing) ends that process, which ansible-runner would have ignore it."""
    import fcntl
    import os
    import signal

    import pexpect

    runner._patch_playbook_spawn()
    path = tmp_path / "lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    with runner.held_by_playbooks(fd):
        child = pexpect.spawn("sleep", ["30"], ignore_sighup=True)
    os.close(fd)  # sage is gone
    other = os.open(path, os.O_RDWR)
    try:
        with pytest.raises(BlockingIOError):
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        child.kill(signal.SIGHUP)
        child.expect(pexpect.EOF)
        child.close()
        assert child.signalstatus == signal.SIGHUP
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free once the child has ended
    finally:
        os.close(other)
