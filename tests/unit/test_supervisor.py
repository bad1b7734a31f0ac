"""The unit sage writes for a supervised node, its env file, the supervisor a node gets, and what status says."""
from __future__ import annotations

import json
import shlex
from pathlib import Path
import subprocess

import pytest

from ansible_collections.sage.cluster.plugins.module_utils import ray_node, supervisor
from ansible_collections.sage.cluster.plugins.plugin_utils import config, inventory

ARGV = ["/opt/env/bin/ray", "start", "--node-ip-address=10.0.0.2", "--temp-dir=/tmp/ray_head",
        '--resources={"accel": 1}', "--redis-username=default", "--redis-password=s3cr%t$pw", "--head"]


def test_the_unit_runs_ray_start_block_and_holds_no_secret():
    text, secret = supervisor.unit_text(ARGV, "/tmp/logs/head.log", "/home/u/.sage/ray-node.env", "head")
    assert "s3cr" not in text
    assert secret == {"SAGE_RAY_REDIS_PASSWORD": "s3cr%t$pw"}
    assert '"--redis-password="${SAGE_RAY_REDIS_PASSWORD}' in text
    assert '"--block"' in text and "ExecStop" not in text
    for line in ("Restart=on-failure", "StartLimitIntervalSec=0", "KillMode=mixed", "TimeoutStopSec=30",
                 "LimitNOFILE=1048576", 'EnvironmentFile=/home/u/.sage/ray-node.env', "WantedBy=default.target"):
        assert line in text.splitlines(), line
    # systemd's specifiers and variables are escaped: the JSON of --resources reaches Ray as it is.
    assert '"--resources={\\"accel\\": 1}"' in text
    assert "%%" not in supervisor.unit_word("plain") and supervisor.unit_word("a%b$c") == '"a%%b$$c"'


def test_the_log_wrapper_runs_the_command_with_its_output_appended(tmp_path):
    log = tmp_path / "new" / "worker.log"
    subprocess.run(["sh", "-c", supervisor.LOG_WRAPPER, str(log), "echo", "hello"], check=True)
    subprocess.run(["sh", "-c", supervisor.LOG_WRAPPER, str(log), "echo", "again"], check=True)
    assert log.read_text() == "hello\nagain\n" and log.stat().st_mode & 0o077 == 0


def test_the_env_file_quotes_what_systemd_would_unescape():
    text = supervisor.env_text({"PATH": "/opt/env/bin:/usr/bin", "X": 'a"b\\c$d`e'})
    assert text == 'PATH="/opt/env/bin:/usr/bin"\nX="a\\"b\\\\c\\$d\\`e"\n'
    # A POSIX shell reads that quoting back the same way systemd's EnvironmentFile parser does.
    out = subprocess.run(["sh", "-c", text.replace("\n", "; ") + 'printf %s "$X"'], capture_output=True, text=True)
    assert out.stdout == 'a"b\\c$d`e'


def test_which_supervisor_a_node_gets():
    assert supervisor.choose("none", "systemd", None, None, "u") == ("none", "config")
    assert supervisor.choose("auto", "systemd", None, None, "u") == ("systemd", "user unit, linger on")
    assert supervisor.choose("auto", "hostinit.py", None, None, "u") == ("none", "PID 1 is not systemd")
    kind, why = supervisor.choose("auto", "systemd", None, "Access denied", "u")
    assert kind == "none" and "sudo loginctl enable-linger u" in why
    assert supervisor.choose("systemd", "init", None, None, "u")[0] == "fail"
    assert supervisor.choose("auto", "systemd", "Failed to connect to bus", None, "u")[0] == "none"


def test_status_describes_the_supervisor_and_flags_a_unit_without_ray():
    unit = {"ActiveState": "active", "SubState": "running", "UnitFileState": "enabled", "NRestarts": "2"}
    sup = supervisor.describe("auto", {"pid1": "systemd", "linger": True, "unit": unit})
    assert sup == {"kind": "systemd", "text": "systemd (user unit, linger on)",
                   "unit": {"name": "sage-ray.service", "active_state": "active", "sub_state": "running",
                            "enabled": True, "restarts": 2}}
    assert "ray stop" in supervisor.unit_without_ray(sup, {"running": False})
    assert supervisor.unit_without_ray(sup, {"running": True}) is None
    restarting = {"unit": {**sup["unit"], "active_state": "activating", "sub_state": "auto-restart"}}
    assert "starts it again within 5 s (restarts so far: 2)" in supervisor.unit_without_ray(restarting,
                                                                                          {"running": False})
    assert supervisor.describe("none", {"pid1": "systemd", "unit": None})["text"] == "none: config"
    assert supervisor.describe("auto", {"pid1": "hostinit.py", "unit": None}) == {
        "kind": "none", "text": "none: PID 1 is not systemd"}


def test_the_status_probe_reads_the_supervisor_in_its_one_command(tmp_path):
    out = subprocess.run(["dash", "-c", ray_node.probe_command("/dev/null", shlex.quote)], capture_output=True,
                         text=True, env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}).stdout
    facts = ray_node.parse_probe(out)[4]
    assert facts["unit"] is None and facts["pid1"]  # no unit file: no systemctl run
    assert ray_node.parse_supervisor("pid1=systemd\nlinger=yes\nunit=yes\nActiveState=active\nNRestarts=0\n") == {
        "pid1": "systemd", "linger": True, "unit": {"ActiveState": "active", "NRestarts": "0"}}


def test_a_bad_supervisor_is_one_line_naming_file_and_key():
    with pytest.raises(config.ConfigError) as exc:
        config.parse("remote:\n  supervisor: sometimes\n", Path("c.yaml"))
    assert "c.yaml:2" in str(exc.value) and "remote.supervisor" in str(exc.value) and "\n" not in str(exc.value)
    cfg = config.parse("workers_ssh_hosts:\n  - {host: w1, remote: {supervisor: none}}\n", Path("c.yaml"))
    assert inventory.node_vars(cfg, "w1") == {"ray_node_supervisor": "none"}
    assert inventory.role_vars(cfg)["ray_node_supervisor"] == "auto"


def test_doctor_says_what_a_start_would_give_and_changes_nothing():
    unit = {"ActiveState": "active", "SubState": "running", "UnitFileState": "enabled", "NRestarts": "0"}
    on = {"pid1": "systemd", "linger": True, "unit": unit}
    assert supervisor.doctor_check("auto", on, None, "u") == {
        "ok": True, "warn": False, "detail": "auto -> systemd (user unit, linger on)", "fix": ""}
    # Linger off: doctor only reads it; the start turns it on, or says what an admin must run.
    off = supervisor.doctor_check("systemd", {"pid1": "systemd", "linger": False, "unit": None}, None, "u")
    assert off["ok"] and off["warn"] and "linger off" in off["detail"], off
    assert off["detail"].endswith("; now none: no enabled sage-ray unit (`sage cluster start` makes it where "
                                  "systemd allows)"), off
    assert "sudo loginctl enable-linger u" in off["fix"], off
    plain = supervisor.doctor_check("auto", {"pid1": "hostinit.py", "linger": False, "unit": None}, None, "u")
    assert plain == {"ok": True, "warn": False, "detail": "auto -> none: PID 1 is not systemd", "fix": ""}
    refused = supervisor.doctor_check("systemd", {"pid1": "hostinit.py", "linger": False, "unit": None}, None, "u")
    assert not refused["ok"] and refused["detail"] == "remote.supervisor is systemd, but PID 1 is not systemd"
    assert "remote.supervisor" in refused["fix"]
    # A node whose config says none but that still runs the unit: the start moves it.
    moved = supervisor.doctor_check("none", on, None, "u")
    assert moved["ok"] and moved["detail"] == "none: config; now systemd (user unit, linger on)", moved


def test_info_says_each_nodes_supervisor_from_the_config_alone(tmp_path):
    from click.testing import CliRunner

    from sage_cluster.cli import cli

    path = tmp_path / "c.yaml"
    path.write_text("head:\n  host: h1\nworkers_ssh_hosts:\n  - w1:22\n  - {host: w2, remote: {supervisor: none}}\n")
    out = CliRunner().invoke(cli, ["cluster", "info", "--config", str(path), "--json"])
    assert out.exit_code == 0, out.output
    sups = json.loads(out.stdout)["supervisors"]
    assert sups["w2"] == {"asked": "none", "text": "none: config"}
    assert sups["h1"] == sups["w1"] == {"asked": "auto", "text": supervisor.configured("auto")}
    text = CliRunner().invoke(cli, ["cluster", "info", "--config", str(path)]).stdout
    assert f"Supervisor: {supervisor.configured('auto')} (h1, w1)\n" in text
    assert "            none: config (w2)\n" in text
