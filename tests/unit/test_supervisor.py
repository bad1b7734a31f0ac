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
    for line in ("Restart=on-failure", "StartLimitIntervalSec=0", "KillMode=mixed", "TimeoutStopSec=60",
                 "LimitNOFILE=1048576", 'EnvironmentFile=/home/u/.sage/ray-node.env', "WantedBy=default.target"):
        assert line in text.splitlines(), line
    # systemd's specifiers and variables are escaped: the JSON of --resources reaches Ray as it is.
    assert '"--resources={\\"accel\\": 1}"' in text
    assert "%%" not in supervisor.unit_word("plain") and supervisor.unit_word("a%b$c") == '"a%%b$$c"'


def test_a_system_unit_runs_ray_as_the_ssh_user_at_boot_after_the_network():
    text, secret = supervisor.unit_text(ARGV, "/tmp/logs/head.log", "/home/u/.sage/ray-node.env", "head", run_as="u")
    user_text, _ = supervisor.unit_text(ARGV, "/tmp/logs/head.log", "/home/u/.sage/ray-node.env", "head")
    lines = text.splitlines()
    for line in ("User=u", "WantedBy=multi-user.target", "After=network-online.target", "Wants=network-online.target",
                 "EnvironmentFile=/home/u/.sage/ray-node.env"):
        assert line in lines, line
    assert "s3cr" not in text and secret == {"SAGE_RAY_REDIS_PASSWORD": "s3cr%t$pw"}
    # The same unit otherwise: one text for both kinds.
    assert {line for line in user_text.splitlines()} - set(lines) == {"WantedBy=default.target"}
    assert "User=" not in user_text and "network-online" not in user_text


def test_only_a_system_units_changes_run_as_root_and_never_ask_for_a_password():
    assert supervisor.systemctl_argv("user", "enable", "x", change=True) == ["systemctl", "--user", "enable", "x"]
    assert supervisor.systemctl_argv("system", "show", "x") == ["systemctl", "show", "x"]
    assert supervisor.systemctl_argv("system", "enable", "x", change=True) == ["sudo", "-n", "--", "systemctl",
                                                                                "enable", "x"]
    assert supervisor.as_owner("user", ["rm", "-f", "--", "/p"]) == ["rm", "-f", "--", "/p"]
    assert supervisor.as_owner("system", ["rm", "-f", "--", "/p"])[:3] == ["sudo", "-n", "--"]


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
    assert supervisor.choose("none", "systemd", "u") == ("none", "config")
    assert supervisor.choose("auto", "systemd", "u") == ("user", "user unit, linger on")
    assert supervisor.choose("auto", "hostinit.py", "u") == ("none", "PID 1 is not systemd")
    kind, why = supervisor.choose("auto", "systemd", "u", linger_error="Access denied")
    assert kind == "none" and "sudo loginctl enable-linger u" in why
    kind, why = supervisor.choose("systemd", "init", "u")
    assert kind == "fail" and why == "remote.supervisor is systemd, but PID 1 is not systemd"
    assert supervisor.choose("auto", "systemd", "u", manager_error="Failed to connect to bus")[0] == "none"


def test_become_gives_a_system_unit_or_one_line_saying_how_to_allow_sudo():
    assert supervisor.choose("auto", "systemd", "u", "w1", become=True) == ("system", "system unit")
    assert supervisor.choose("systemd", "systemd", "u", "w1", become=True)[0] == "system"
    assert supervisor.choose("none", "systemd", "u", "w1", become=True) == ("none", "config")
    assert supervisor.choose("auto", "hostinit.py", "u", "w1", become=True) == ("none", "PID 1 is not systemd")
    # No silent fallback to a user unit: the config said root, and root cannot be had.
    kind, why = supervisor.choose("auto", "systemd", "u", "w1", become=True, sudo_error="sudo: a password is required")
    assert kind == "fail" and "\n" not in why, why
    for part in ("ssh.become", "w1", "u cannot run sudo without a password", "sudo: a password is required",
                 "NOPASSWD", "ssh.become: false"):
        assert part in why, part
    leaving = supervisor.sudo_refused("u", "w1", "sudo: command not found", leaving=True)
    assert "sudo systemctl disable --now sage-ray.service" in leaving and "/etc/systemd/system/" in leaving


def test_status_describes_the_supervisor_and_flags_a_unit_without_ray():
    unit = {"ActiveState": "active", "SubState": "running", "UnitFileState": "enabled", "NRestarts": "2"}
    sup = supervisor.describe("auto", {"pid1": "systemd", "linger": True, "unit": unit})
    assert sup == {"kind": "systemd", "text": "systemd (user unit, linger on)",
                   "unit": {"name": "sage-ray.service", "scope": "user", "active_state": "active",
                            "sub_state": "running", "enabled": True, "restarts": 2}}
    assert "ray stop" in supervisor.unit_without_ray(sup, {"running": False})
    assert supervisor.unit_without_ray(sup, {"running": True}) is None
    restarting = {"unit": {**sup["unit"], "active_state": "activating", "sub_state": "auto-restart"}}
    assert "starts it again within 5 s (restarts so far: 2)" in supervisor.unit_without_ray(restarting,
                                                                                          {"running": False})
    assert supervisor.describe("none", {"pid1": "systemd", "unit": None})["text"] == "none: config"
    assert supervisor.describe("auto", {"pid1": "hostinit.py", "unit": None}) == {
        "kind": "none", "text": "none: PID 1 is not systemd"}


def test_status_describes_the_unit_that_is_on_a_system_one_too():
    on = {"ActiveState": "active", "SubState": "running", "UnitFileState": "enabled", "NRestarts": "0"}
    off = {"ActiveState": "inactive", "SubState": "dead", "UnitFileState": "disabled", "NRestarts": "0"}
    sup = supervisor.describe("auto", {"pid1": "systemd", "unit": None, "system_unit": on})
    assert sup["kind"] == "systemd" and sup["text"] == "systemd (system unit)", sup
    assert sup["unit"]["scope"] == "system" and sup["unit"]["enabled"], sup
    # A leftover user unit that is off does not hide the system unit that runs Ray, nor the other way round.
    assert supervisor.describe("auto", {"pid1": "systemd", "unit": off, "system_unit": on})["unit"]["scope"] == "system"
    sup = supervisor.describe("auto", {"pid1": "systemd", "linger": True, "unit": on, "system_unit": off})
    assert sup["text"] == "systemd (user unit, linger on)", sup
    running = dict(on, UnitFileState="disabled")
    assert supervisor.describe("auto", {"pid1": "systemd", "system_unit": running})["text"] == (
        "systemd (system unit, not enabled: not started at boot)")


def test_the_status_probe_reads_the_supervisor_in_its_one_command(tmp_path):
    out = subprocess.run(["dash", "-c", ray_node.probe_command("/dev/null", shlex.quote)], capture_output=True,
                         text=True, env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}).stdout
    facts = ray_node.parse_probe(out)[4]
    # No unit file of either kind: no systemctl run (this machine has no /etc/systemd/system/sage-ray.service).
    assert facts["unit"] is None and facts["system_unit"] is None and facts["pid1"]
    assert ray_node.parse_supervisor("pid1=systemd\nlinger=yes\nunit=yes\nActiveState=active\nNRestarts=0\n") == {
        "pid1": "systemd", "linger": True, "unit": {"ActiveState": "active", "NRestarts": "0"}, "system_unit": None}
    # Each unit's properties follow the line naming it.
    facts = ray_node.parse_supervisor("pid1=systemd\nunit=yes\nActiveState=inactive\nsystem_unit=yes\n"
                                      "ActiveState=active\nUnitFileState=enabled\n")
    assert facts["unit"] == {"ActiveState": "inactive"}
    assert facts["system_unit"] == {"ActiveState": "active", "UnitFileState": "enabled"}
    assert "systemctl show -p" in ray_node.SUPERVISOR_PROBE and "/etc/systemd/system/sage-ray.service" in (
        ray_node.SUPERVISOR_PROBE)


def test_a_bad_supervisor_is_one_line_naming_file_and_key():
    with pytest.raises(config.ConfigError) as exc:
        config.parse("remote:\n  supervisor: sometimes\n", Path("c.yaml"))
    assert "c.yaml:2" in str(exc.value) and "remote.supervisor" in str(exc.value) and "\n" not in str(exc.value)
    cfg = config.parse("workers_ssh_hosts:\n  - {host: w1, remote: {supervisor: none}}\n", Path("c.yaml"))
    assert inventory.node_vars(cfg, "w1") == {"ray_node_supervisor": "none"}
    assert inventory.role_vars(cfg)["ray_node_supervisor"] == "auto"


def test_doctor_says_what_a_start_would_give_and_changes_nothing():
    unit = {"ActiveState": "active", "SubState": "running", "UnitFileState": "enabled", "NRestarts": "0"}
    on = {"pid1": "systemd", "linger": True, "unit": unit, "system_unit": None}

    def check(asked, facts, errors=None, become=False):
        return supervisor.doctor_check(asked, facts, errors or {}, "u", "h", become)

    assert check("auto", on) == {"ok": True, "warn": False, "detail": "auto -> systemd (user unit, linger on)",
                                 "fix": ""}
    # Linger off: doctor only reads it; the start turns it on, or says what an admin must run.
    off = check("systemd", {"pid1": "systemd", "linger": False, "unit": None})
    assert off["ok"] and off["warn"] and "linger off" in off["detail"], off
    assert off["detail"].endswith("; now none: no enabled sage-ray unit (`sage cluster start` makes it where "
                                  "systemd allows)"), off
    assert "sudo loginctl enable-linger u" in off["fix"], off
    plain = check("auto", {"pid1": "hostinit.py", "linger": False, "unit": None})
    assert plain == {"ok": True, "warn": False, "detail": "auto -> none: PID 1 is not systemd", "fix": ""}
    refused = check("systemd", {"pid1": "hostinit.py", "linger": False, "unit": None})
    assert not refused["ok"] and refused["detail"] == "remote.supervisor is systemd, but PID 1 is not systemd"
    assert "remote.supervisor" in refused["fix"]
    # A node whose config says none but that still runs the unit: the start moves it.
    moved = check("none", on)
    assert moved["ok"] and moved["detail"] == "none: config; now systemd (user unit, linger on)", moved
    # ssh.become: a system unit; a user unit running now is named; sudo asking a password fails with its fix.
    system = check("auto", on, {"sudo_error": None}, become=True)
    assert system["detail"] == "auto -> systemd (system unit); now systemd (user unit, linger on)", system
    no_sudo = check("auto", on, {"sudo_error": "a password is required"}, become=True)
    assert not no_sudo["ok"] and "cannot run sudo without a password there" in no_sudo["detail"], no_sudo
    assert no_sudo["fix"].startswith("let u run sudo without a password on h"), no_sudo


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
    assert "system unit (ssh.become)" in supervisor.configured("auto", become=True)
    text = CliRunner().invoke(cli, ["cluster", "info", "--config", str(path)]).stdout
    assert f"Supervisor: {supervisor.configured('auto')} (h1, w1)\n" in text
    assert "            none: config (w2)\n" in text


def test_ssh_become_is_a_boolean_settable_per_worker_and_reaches_the_role():
    with pytest.raises(config.ConfigError) as exc:
        config.parse("ssh:\n  become: \"yes\"\n", Path("c.yaml"))
    assert "c.yaml:2" in str(exc.value) and "ssh.become" in str(exc.value) and "true or false" in str(exc.value)
    cfg = config.parse("ssh:\n  become: true\nworkers_ssh_hosts:\n  - {host: w1, ssh: {become: false}}\n  - w2:22\n",
                       Path("c.yaml"))
    assert inventory.role_vars(cfg)["ray_node_become"] is True
    assert inventory.node_vars(cfg, "w1") == {"ray_node_become": False} and inventory.node_vars(cfg, "w2") == {}
    assert inventory.role_vars(config.parse("", Path("c.yaml")))["ray_node_become"] is False
    assert "  become: false  # the SSH user may become root" in config.template_text()
