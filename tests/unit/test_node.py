"""The node helpers every module shares (plugins/module_utils/node.py), run here as a node runs them."""
from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path

import sage_cluster  # noqa: F401  (puts the collection on sys.path)
from ansible_collections.sage.cluster.plugins.module_utils import node


def test_the_telling_line_of_a_failure() -> None:
    assert node.telling_line(["starting", "ConnectionError: refused", "  ", "bye"]) == "ConnectionError: refused"
    assert node.telling_line(["Collecting ray", "ERROR: No matching distribution", "notice"]) == \
        "ERROR: No matching distribution"
    assert node.telling_line(["one", "two  ", ""]) == "two"
    assert node.telling_line([]) == "no output"
    assert node.telling_line([], none="exit 2") == "exit 2"
    assert len(node.telling_line(["x" * 1000])) == 300
    # ssh: its last line is its fatal one, whatever words a warning before it holds; noise never counts.
    ssh = ["Warning: Identity file /k not accessible: No such file or directory.",
           "sage@w1: Permission denied (publickey).", "Warning: Permanently added 'w1' (ED25519)"]
    assert node.telling_line(ssh, words=(), skip=("Warning:",)) == "sage@w1: Permission denied (publickey)."


def test_a_record_is_written_whole_and_private_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "home" / ".sage" / "deploy.json"
    assert node.read_json(path) == {}
    node.write_json(str(path), {"revision": "abc"}, indent=1)
    assert node.read_json(path) == {"revision": "abc"}
    assert path.stat().st_mode & 0o777 == 0o600 and path.parent.stat().st_mode & 0o777 == 0o700
    assert os.listdir(path.parent) == ["deploy.json"]  # no temp file left behind
    path.write_text("[1, 2]")
    assert node.read_json(path) == {}  # not an object: no record
    path.write_text("{not json")
    assert node.read_json(path) == {}


def test_a_logged_run_keeps_its_output_and_says_why_it_was_cut_short(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "x.log"
    rc, why, out = node.run_logged([sys.executable, "-c", "print('hello'); raise SystemExit(3)"], str(log), 30,
                                   "first")
    assert (rc, why, out.strip()) == (3, None, "hello")
    assert log.stat().st_mode & 0o777 == 0o600 and log.parent.stat().st_mode & 0o777 == 0o700
    rc, why, out = node.run_logged([sys.executable, "-c", "print('again', flush=True); import time; time.sleep(30)"],
                                   str(log), 0.5, "second")
    assert (rc, why, out.strip()) == (None, "timed out", "again")
    text = log.read_text()
    assert "first" in text and "hello" in text and "second" in text  # appended, each run under its title
    started = time.monotonic()
    rc, why, _ = node.run_logged(["sleep", "30"], str(log), 30, "third", gone=lambda: "the head is gone",
                                 fresh=True)
    assert (rc, why) == (None, "the head is gone") and time.monotonic() - started < 5
    assert "first" not in log.read_text()  # a fresh log


def test_versions_of_a_python_and_why_one_does_not_answer(tmp_path: Path) -> None:
    found, err = node.versions(sys.executable)
    assert err is None and found["python"] == "%d.%d.%d" % sys.version_info[:3] and "ray" in found
    found, err = node.versions(str(tmp_path / "missing" / "python"))
    assert found is None and "No such file" in err
    broken = tmp_path / "python"
    broken.write_text("#!/bin/sh\necho 'ImportError: broken env' >&2\nexit 1\n")
    broken.chmod(0o755)
    assert node.versions(str(broken)) == (None, "ImportError: broken env")


def test_a_port_in_use_is_not_free() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert not node.port_free(port, "127.0.0.1")
    assert node.port_free(port, "127.0.0.1")


def test_the_tail_of_a_log(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    assert node.tail(str(log), 5) == []
    log.write_text("".join(f"line {i}\n" for i in range(10)))
    assert node.tail(str(log), 2) == ["line 8", "line 9"] and node.tail(str(log), 0) == []
    assert json.dumps(node.tail(str(log), 100)).count("line") == 10
