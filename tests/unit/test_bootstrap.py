"""setup-ssh and provision: the controller's logic (platform tags, verdicts, targets, the password's sources, the
notes after a run) and the node-side shell text that adds the key, run here against a temporary home."""
from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from ansible_collections.sage.cluster.plugins.module_utils import sage_provision as logic
from ansible_collections.sage.cluster.plugins.plugin_utils import wheelhouse
from ansible_collections.sage.cluster.plugins.plugin_utils.config import ConfigError, Endpoint, parse

from sage_cluster import provision, sshsetup
from sage_cluster.runner import HostResult, RunResult
from tests.unit.helpers import PY_SAGE, run

CONFIG = """\
head: {host: h1}
workers_ssh_hosts: "w1:22,w2:2222"
"""


def cfg(tmp_path: Path):
    path = tmp_path / "c.yaml"
    path.write_text(CONFIG)
    return parse(CONFIG, path)


def result(**hosts: HostResult) -> RunResult:
    return RunResult(playbook="x.yml", hosts=hosts, status="failed", seconds=1.0, artifact_dir="/tmp/x")


def test_platforms_name_every_manylinux_the_node_takes():
    tags = wheelhouse.platforms("2.36", "x86_64")
    assert tags[0] == "manylinux_2_36_x86_64" and "manylinux_2_17_x86_64" in tags
    assert tags[-3:] == ["manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"]
    assert wheelhouse.platforms("2.31", "aarch64")[-1] == "manylinux2014_aarch64"
    with pytest.raises(wheelhouse.WheelhouseError):
        wheelhouse.platforms("musl", "x86_64")
    assert wheelhouse.wheelhouse_key("2.60.0", "3.11", "2.36", "x86_64") == "ray-2.60.0-cp311-glibc2.36-x86_64"
    with pytest.raises(wheelhouse.WheelhouseError, match="glibc"):
        wheelhouse.build_wheelhouse("2.60.0", "3.11", None, "x86_64")


@pytest.mark.parametrize("found, needed, summary", [
    (None, True, "create a venv, install ray[default]==2.60.0"),
    ({"python": "3.11.2", "ray": None}, True, "install ray[default]==2.60.0"),
    ({"python": "3.11.2", "ray": "2.58.0"}, True, "upgrade ray 2.58.0 -> 2.60.0"),
    ({"python": "3.11.2", "ray": "2.61.1"}, True, "downgrade ray 2.61.1 -> 2.60.0"),
    ({"python": "3.11.2", "ray": "2.60.0"}, False, "ray 2.60.0, python 3.11.2"),
])
def test_what_an_env_needs(found, needed, summary):
    assert logic.verdict(found, "2.60.0", "3.11") == (needed, summary, None)


def test_an_env_of_another_python_is_not_touched():
    needed, _, error = logic.verdict({"python": "3.10.12", "ray": "2.60.0"}, "2.60.0", "3.11")
    assert not needed and "3.10.12" in error and "Python 3.11" in error


def test_the_probe_command_reads_the_python_from_stdin():
    out = subprocess.run(["sh", "-c", logic.PROBE_COMMAND], input=sys.executable + "\n", capture_output=True,
                         text=True, check=True).stdout
    assert '"python": "%d.%d.%d"' % sys.version_info[:3] in out
    missing = subprocess.run(["sh", "-c", logic.PROBE_COMMAND], input="/no/such/python\n", capture_output=True,
                             text=True)
    assert missing.returncode == 0 and missing.stdout == ""


def test_python_note_says_when_patch_releases_differ():
    def host(name, version):
        return HostResult(name, data={"provision": {"python": version}})
    same = result(a=host("a", "3.11.2"), b=host("b", "3.11.2"))
    note = provision.python_note(same, "minor")
    assert "a Ray driver started here needs RAY_DEFAULT_PYTHON_VERSION_MATCH_LEVEL=minor" in note
    differ = result(a=host("a", "3.11.2"), b=host("b", "3.11.9"))
    note = provision.python_note(differ, "minor")
    assert "3.11.2 on a; 3.11.9 on b" in note and "they form one cluster" in note
    assert "Ray will refuse" in provision.python_note(differ, "patch")


def test_targets_are_the_named_remote_nodes(tmp_path):
    c = cfg(tmp_path)
    assert sshsetup.targets(c, []) == ["h1", "w1", "w2"]
    assert sshsetup.targets(c, [Endpoint("W2", 2222)]) == ["w2"]
    with pytest.raises(ConfigError, match="w2:22 is not a remote node"):
        sshsetup.targets(c, [Endpoint("w2", 22)])


def test_the_password_comes_from_a_file_or_the_environment(tmp_path, monkeypatch):
    secret = tmp_path / "pw"
    secret.write_text("p4ss word\nignored\n")
    monkeypatch.setenv(sshsetup.PASSWORD_ENV, "from-env")
    assert sshsetup.password_from(str(secret)) == "p4ss word"
    assert sshsetup.PASSWORD_ENV not in os.environ  # children (ansible-playbook, ssh) do not inherit it
    monkeypatch.setenv(sshsetup.PASSWORD_ENV, "from-env")
    assert sshsetup.password_from(None) == "from-env"
    assert sshsetup.password_from(None) is None
    (tmp_path / "empty").write_text("")
    with pytest.raises(ConfigError, match="empty"):
        sshsetup.password_from(str(tmp_path / "empty"))


def test_a_failure_is_not_ssh_learning_the_host_key():
    from sage_cluster.runner import failure_reason
    text = ("rsync to /home/s failed (exit 255): Warning: Permanently added 'w1' (ED25519) to the list of known "
            "hosts.\ns@w1: Permission denied (publickey,password).\nrsync: connection unexpectedly closed")
    assert failure_reason({"msg": text}) == "s@w1: Permission denied (publickey,password)."


def test_next_steps_name_the_command_a_bare_machine_needs(tmp_path):
    """Each step follows from the kind of failure the runner gives a host (from the result's own `kind`, or from
    a failure before any module ran), never from a message's words."""
    from sage_cluster.runner import EventHandler

    c = cfg(tmp_path)
    events = EventHandler()
    for kind, host, res in [
            ("unreachable", "w1", {"msg": "Failed to connect: sage@w1: Permission denied (publickey)."}),
            ("failed", "w2", {"rc": 127, "module_stderr": "/bin/sh: 1: /x/bin/python: not found\n"}),
            ("failed", "h1", {"msg": "this node has another Ray (2.58.0) than the cluster", "kind": "ray_drift"}),
            ("failed", "h2", {"msg": "cannot run the remote Python: this node has another Ray (no kind)"}),
            ("ok", "h3", {})]:
        events({"event": f"runner_on_{kind}", "event_data": {"host": host, "res": res}})
    assert {n: h.kind for n, h in events.hosts.items()} == {"w1": "auth", "w2": "no_python", "h1": "ray_drift",
                                                            "h2": "", "h3": ""}
    steps = provision.next_steps(c, result(**events.hosts))
    assert steps == ["w1: key login fails: `sage cluster setup-ssh w1:22` sets it up with the password once",
                     "h1: another Ray release: `sage cluster provision h1:22` gives it this machine's",
                     "w2: no env at remote.python_path: `sage cluster provision w2:2222` makes one with this "
                     "machine's Ray"]


def add_key(home: Path, key: str) -> str:
    from ansible_collections.sage.cluster.plugins.action import sage_key_login as plugin
    return subprocess.run(["sh", "-c", plugin.ADD_KEY], input=key + "\n", capture_output=True, text=True,
                          env={"HOME": str(home), "PATH": os.environ["PATH"]}, check=True).stdout.strip()


def test_the_key_is_added_once_with_private_modes(tmp_path):
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEbAnHgq0mBGkPZIYZcqTltCWZsOTKDrdnula+HeYgUA sage-cluster"
    ssh = tmp_path / ".ssh"
    ssh.mkdir(mode=0o755)
    (ssh / "authorized_keys").write_text("ssh-rsa AAAAother someone")  # no final newline
    assert add_key(tmp_path, key) == "added"
    assert (ssh / "authorized_keys").read_text() == f"ssh-rsa AAAAother someone\n{key}\n"
    assert stat.S_IMODE(ssh.stat().st_mode) == 0o700
    assert stat.S_IMODE((ssh / "authorized_keys").stat().st_mode) == 0o600
    # The same key material with options or another comment is the same key: never added twice.
    (ssh / "authorized_keys").write_text(f'from="10.0.0.0/8" {key.rsplit(" ", 1)[0]} old-comment\n')
    assert add_key(tmp_path, key) == "present"
    assert len((ssh / "authorized_keys").read_text().splitlines()) == 1
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    assert add_key(fresh, key) == "added" and (fresh / ".ssh" / "authorized_keys").read_text() == key + "\n"


def test_commands_refuse_unknown_nodes_in_one_line(tmp_path):
    (tmp_path / ".sage").mkdir()
    (tmp_path / ".sage" / "config.yaml").write_text(CONFIG)
    for command in (["setup-ssh", "nope:22"], ["provision", "nope:22", "--check"]):
        proc = run([*PY_SAGE, "cluster", *command], tmp_path)
        assert proc.returncode == 2 and "nope:22 is not a remote node" in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    empty = tmp_path / "empty"
    empty.write_text("")
    proc = run([*PY_SAGE, "cluster", "setup-ssh", "--password-file", str(empty)], tmp_path)
    assert proc.returncode == 2 and "the file is empty" in proc.stderr
