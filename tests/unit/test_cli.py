"""The `sage` command as the guide describes it: every command exists and explains itself, `config init`
writes the template safely, and the read-only commands show the config (text and JSON)."""
from __future__ import annotations

import json
import stat
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from ansible_collections.sage.cluster.plugins.plugin_utils import config

from sage_cluster import operations
from sage_cluster.cli import cli as sage_group
from sage_cluster.cli.common import finish
from sage_cluster.operations import Invocation
from sage_cluster.runner import HostResult, RunResult
from tests.unit.helpers import GUIDE_CONFIG, PY_SAGE, SAGE, run_many, stderr_lines

# Every command the guide names (and the few this product adds next to them).
GUIDE_COMMANDS = [
    [],
    ["cluster"], ["cluster", "info"], ["cluster", "deploy"], ["cluster", "start"], ["cluster", "status"],
    ["cluster", "stop"], ["cluster", "restart"], ["cluster", "scale"], ["cluster", "scale", "add"],
    ["cluster", "scale", "remove"],
    ["head"], ["head", "start"], ["head", "stop"], ["head", "status"], ["head", "restart"], ["head", "logs"],
    ["worker"], ["worker", "start"], ["worker", "stop"], ["worker", "status"], ["worker", "restart"],
    ["worker", "config"], ["worker", "deploy"], ["worker", "add"], ["worker", "remove"], ["worker", "logs"],
    ["config"], ["config", "show"], ["config", "init"],
    ["inventory"],
]
# The guide's own help commands, run as a user runs them.
GUIDE_HELP = [[], ["cluster"], ["head"], ["worker"]]
CUSTOM = GUIDE_CONFIG.replace('"sage2:22,sage4:22"', '"sage2:22,sage4:2222"').replace("6379", "6380")


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    home = tmp_path_factory.mktemp("cli")
    guide = home / "guide.yaml"
    guide.write_text(CUSTOM)
    existing = home / "existing.yaml"
    existing.write_text("# mine\nhead:\n  host: mine\n")
    forced = home / "forced.yaml"
    forced.write_text("# mine\nhead:\n  host: mine\n")
    kept = home / "kept.yaml"
    kept.write_text(CUSTOM)
    files = {"guide": guide, "existing": existing, "forced": forced, "new": home / "sub" / "new.yaml",
             "manager-new": home / "mgr" / "config.yaml", "kept": kept}
    g = ["--config", str(guide)]
    jobs: dict = {("help", " ".join(argv)): [*SAGE, *argv, "--help"] for argv in GUIDE_HELP}
    jobs.update({
        "init-new": [*SAGE, "config", "init", "--config", str(files["new"])],
        "init-existing": [*SAGE, "config", "init", "--config", str(existing)],
        "init-force": [*SAGE, "config", "init", "--force", "--config", str(forced)],
        "manager-new": ([sys.executable, "-m", "sage_cluster.config_manager"],
                        {"SAGE_CONFIG": str(files["manager-new"])}),
        "manager-existing": ([sys.executable, "-m", "sage_cluster.config_manager"], {"SAGE_CONFIG": str(kept)}),
        "config": ([*SAGE, "config"], {"SAGE_CONFIG": str(guide)}),
        "config show": ([*SAGE, "config", "show"], {"SAGE_CONFIG": str(guide)}),
        "config --config": [*SAGE, "config", *g],
        "config --config show": [*SAGE, "config", *g, "show"],
        "config show --json": [*PY_SAGE, "config", "show", "--json", *g],
        "cluster info": [*SAGE, "cluster", "info", *g],
        "cluster info --json": [*SAGE, "cluster", "info", "--json", *g],
        "worker config": [*SAGE, "worker", "config", *g],
        "worker config --json": [*SAGE, "worker", "config", "--json", *g],
        "version": [*SAGE, "--version"],
    })
    return {"home": home, "files": files, "results": run_many(jobs, home)}


# ---------------------------------------------------------------- help

@pytest.mark.parametrize("argv", GUIDE_HELP, ids=lambda a: " ".join(["sage", *a, "--help"]))
def test_guide_help_commands(runs: dict, argv: list[str]) -> None:
    proc = runs["results"][("help", " ".join(argv))]
    assert proc.returncode == 0, proc.stderr
    assert "Example" in proc.stdout
    assert proc.stderr == ""


def test_top_level_help_lists_the_groups(runs: dict) -> None:
    out = runs["results"][("help", "")].stdout
    for group in ("cluster", "head", "worker", "config", "inventory"):
        assert f"  {group}" in out


@pytest.mark.parametrize("argv", GUIDE_COMMANDS, ids=lambda a: " ".join(["sage", *a]) or "sage")
def test_every_command_has_help_with_an_example(argv: list[str], tmp_path: Path) -> None:
    """In-process through click (the same command objects `sage` runs): exit 0 and an Example."""
    result = CliRunner().invoke(sage_group, [*argv, "--help"], env={"HOME": str(tmp_path), "SAGE_CONFIG": None})
    assert result.exit_code == 0, result.output
    assert "Example" in result.output, result.output
    assert "Usage: " in result.output


def test_subcommands_are_exactly_the_guides() -> None:
    names = {name: sorted(cmd.commands) for name, cmd in sage_group.commands.items() if hasattr(cmd, "commands")}
    assert {"cluster", "head", "worker", "config"} <= set(names)
    assert {"info", "deploy", "start", "status", "stop", "restart", "scale"} <= set(names["cluster"])
    assert {"start", "stop", "status", "restart", "logs"} <= set(names["head"])
    assert {"start", "stop", "status", "restart", "config", "deploy", "add", "remove", "logs"} <= set(names["worker"])
    assert {"show", "init"} <= set(names["config"])
    assert sorted(sage_group.commands["cluster"].commands["scale"].commands) == ["add", "remove"]


def test_version(runs: dict) -> None:
    proc = runs["results"]["version"]
    assert proc.returncode == 0 and "sage" in proc.stdout


# ---------------------------------------------------------------- config init and config_manager

def test_config_init_writes_the_commented_template(runs: dict) -> None:
    proc, path = runs["results"]["init-new"], runs["files"]["new"]
    assert proc.returncode == 0, proc.stderr
    assert str(path) in proc.stdout
    text = path.read_text()
    assert text == config.template_text()
    assert sum(1 for line in text.splitlines() if "#" in line) >= len(config.SCHEMA)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert config.load(path).values == config.parse(config.template_text(), path).values
    assert sorted(p.name for p in path.parent.iterdir()) == ["new.yaml"]


def test_config_init_refuses_to_overwrite(runs: dict) -> None:
    proc, path = runs["results"]["init-existing"], runs["files"]["existing"]
    assert proc.returncode == 2
    assert len(stderr_lines(proc)) == 1 and "--force" in proc.stderr and str(path) in proc.stderr
    assert "Traceback" not in proc.stderr
    assert path.read_text() == "# mine\nhead:\n  host: mine\n"


def test_config_init_force_overwrites(runs: dict) -> None:
    proc, path = runs["results"]["init-force"], runs["files"]["forced"]
    assert proc.returncode == 0, proc.stderr
    assert path.read_text() == config.template_text()


def test_config_manager_writes_a_missing_config_and_shows_it(runs: dict) -> None:
    proc, path = runs["results"]["manager-new"], runs["files"]["manager-new"]
    assert proc.returncode == 0, proc.stderr
    assert path.read_text() == config.template_text()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert str(path) in proc.stderr
    assert "base-sage" in proc.stdout and "head_port: 6379" in proc.stdout and "sage2:22" in proc.stdout


def test_config_manager_leaves_an_existing_config(runs: dict) -> None:
    proc, path = runs["results"]["manager-existing"], runs["files"]["kept"]
    assert proc.returncode == 0, proc.stderr
    assert path.read_text() == CUSTOM
    assert "head_port: 6380" in proc.stdout and "sage4:2222" in proc.stdout


# ---------------------------------------------------------------- showing the config

def test_sage_config_equals_config_show(runs: dict) -> None:
    bare, show = runs["results"]["config"], runs["results"]["config show"]
    assert bare.returncode == show.returncode == 0, bare.stderr + show.stderr
    assert bare.stdout == show.stdout
    assert "head_port: 6380" in show.stdout and "sage4:2222" in show.stdout
    assert str(runs["files"]["guide"]) in show.stdout


@pytest.mark.parametrize("name", ["config --config", "config --config show"])
def test_sage_config_takes_config_option(runs: dict, name: str) -> None:
    proc = runs["results"][name]
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == runs["results"]["config show"].stdout


@pytest.mark.parametrize("name", ["config show --json", "cluster info --json"])
def test_json_output_has_the_values(runs: dict, name: str) -> None:
    proc = runs["results"][name]
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["config_file"] == str(runs["files"]["guide"])
    assert data["head"]["host"] == "base-sage"
    assert data["head"]["head_port"] == 6380
    assert data["head"]["dashboard_port"] == 8265
    assert data["ssh"]["user"] == "sage" and data["ssh"]["connect_timeout"] == 10
    assert data["remote"]["python_path"] == "/opt/conda/envs/sage/bin/python"
    assert data["workers_ssh_hosts"] == ["sage2:22", "sage4:2222"]


def test_cluster_info_text(runs: dict) -> None:
    proc = runs["results"]["cluster info"]
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "base-sage" in out and "6380" in out and "sage2:22, sage4:2222" in out
    assert "http://base-sage:8265" in out
    # The guide's dashboard binds 0.0.0.0, but token auth (on by default) guards its job API: no warning.
    assert "warning" not in proc.stderr


def test_open_dashboard_without_auth_is_warned(tmp_path: Path) -> None:
    cfg = tmp_path / "open.yaml"
    cfg.write_text(CUSTOM + "security:\n  ray_auth: off\n")
    proc = run_many({"info": [*SAGE, "cluster", "info", "--config", str(cfg)]}, home=tmp_path)["info"]
    assert proc.returncode == 0, proc.stderr
    assert "0.0.0.0" in proc.stderr and "CVE-2023-48022" in proc.stderr


def test_worker_config_lists_the_workers(runs: dict) -> None:
    proc = runs["results"]["worker config"]
    assert proc.returncode == 0, proc.stderr
    assert "- sage2:22" in proc.stdout and "- sage4:2222" in proc.stdout
    assert "bind_host: localhost" in proc.stdout and "/tmp/ray_worker" in proc.stdout
    data = json.loads(runs["results"]["worker config --json"].stdout)
    assert data["workers_ssh_hosts"] == ["sage2:22", "sage4:2222"]
    assert data["worker"]["log_dir"] == "/tmp/sage_worker_logs"


# ---------------------------------------------------------------- commands that show things write nothing

def test_showing_the_inventory_writes_nothing(tmp_path: Path) -> None:
    """No token file, no known_hosts dir: only the commands that act prepare the controller."""
    procs = run_many({fmt: [*SAGE, "inventory", "--format", fmt] for fmt in ("yaml", "json", "ini")}, tmp_path)
    for proc in procs.values():
        assert proc.returncode == 0, proc.stderr
        assert "ray_node_auth_token_file" in proc.stdout  # the token is on (the default), and named
    assert [p.name for p in tmp_path.iterdir()] == []


# ---------------------------------------------------------------- worker commands without workers

@pytest.mark.parametrize("action", ["status", "start", "logs", "stop"])
def test_worker_commands_without_workers_say_so(tmp_path: Path, action: str) -> None:
    cfg = tmp_path / "alone.yaml"
    cfg.write_text('head:\n  host: localhost\nworkers_ssh_hosts: ""\n')
    proc = run_many({action: [*SAGE, "worker", action, "--config", str(cfg)]}, tmp_path)[action]
    assert proc.returncode == 0, proc.stderr
    assert f"There are no workers: workers_ssh_hosts in {cfg} is empty" in proc.stderr
    assert "localhost" not in proc.stdout and "?" not in proc.stdout  # the head is not shown as a worker
    assert not (tmp_path / ".sage" / "runs").exists()  # no playbook ran


# ---------------------------------------------------------------- exit codes and where to look next

def _result(**kw) -> RunResult:
    hosts = {"sage2": HostResult("sage2", failed=True, error="ray start failed")}
    return RunResult(playbook="cluster.yml", hosts=hosts, status="failed", seconds=1.0,
                     artifact_dir="/home/u/.sage/runs/20261126-x/artifacts/abc", **kw)


def test_a_failed_run_names_its_artifacts(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        finish(_result(), "cluster start", Invocation())
    assert exit_info.value.code == 1
    assert "/home/u/.sage/runs/20261126-x/artifacts/abc" in capsys.readouterr().err


def test_doctor_interrupted_exits_130(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    result = _result(interrupted=True)
    monkeypatch.setattr(operations, "doctor", lambda invocation: (None, result, []))
    outcome = CliRunner().invoke(sage_group, ["cluster", "doctor"],
                                 env={"HOME": str(tmp_path), "SAGE_CONFIG": None})
    assert outcome.exit_code == 130, outcome.output


def test_host_port_is_checked_by_click() -> None:
    outcome = CliRunner().invoke(sage_group, ["worker", "add", "sage5:99999"])
    assert outcome.exit_code == 2
    assert "Error: Invalid value for 'HOST:PORT': worker 'sage5:99999' has a bad port '99999'" in outcome.output
