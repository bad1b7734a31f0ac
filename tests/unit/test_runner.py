"""The one line a failed host gets in the summary (pure logic over Ansible's result dicts)."""
from sage_cluster.runner import _first_line


def test_a_missing_remote_python_names_the_config_key() -> None:
    # What ansible-core 2.19 returns when the interpreter the inventory names does not exist on the host.
    res = {"changed": False, "module_stderr": "/bin/sh: 1: /home/sage/nope: not found\n", "module_stdout": "",
           "msg": "The module interpreter '/home/sage/nope' was not found.", "rc": 127}
    line = _first_line(res)
    assert "/home/sage/nope: not found" in line and "remote.python_path" in line and "\n" not in line


def test_a_module_failure_keeps_the_modules_message() -> None:
    assert _first_line({"msg": "ray start failed (exit 1): port in use\nmore", "rc": 1}) == \
        "ray start failed (exit 1): port in use"
