"""`sage job`'s pure logic: the entrypoint Ray's shell runs, the options' parsing, where the dashboard is reached;
and the CLI's answers to bad options (exit 2, one line, before any config or cluster is read)."""
from __future__ import annotations

import json
import subprocess
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from click.testing import CliRunner

from ansible_collections.sage.cluster.plugins.plugin_utils import config
from ansible_collections.sage.cluster.plugins.plugin_utils.config import ConfigError

from sage_cluster import jobs, operations
from sage_cluster.cli import cli as sage_group
from tests.unit.helpers import GUIDE_CONFIG, SAGE, run_many, stderr_lines

JOB_COMMANDS = [["job"], ["job", "submit"], ["job", "list"], ["job", "status"], ["job", "logs"], ["job", "stop"]]


def cfg(text: str = GUIDE_CONFIG) -> config.Config:
    return config.parse(text, Path("cluster.yaml"))


# ---------------------------------------------------------------- the entrypoint

def test_every_word_reaches_the_program_as_typed_in_the_project_dir(tmp_path: Path) -> None:
    words = ["$HOME", "a b", "it's", "; touch pwned", "`id`", "*", "", "--flag=x y"]
    where = tmp_path / "my project"
    where.mkdir()
    line = jobs.entrypoint(["python3", "-c", "import os, sys; print(os.getcwd()); print(sys.argv[1:])", *words],
                           str(where))
    out = subprocess.run(["sh", "-c", line], capture_output=True, text=True, check=True, cwd=tmp_path).stdout
    assert out.splitlines() == [str(where), repr(words)]
    assert not (tmp_path / "pwned").exists()


def test_without_a_directory_the_job_runs_where_ray_puts_it() -> None:
    assert jobs.entrypoint(["python", "x.py"], None) == "python x.py"


def test_the_project_is_sage_home_on_a_remote_head_and_the_source_on_this_machine(tmp_path: Path) -> None:
    assert jobs.project_dir(cfg()) == "/home/sage"
    local = cfg(GUIDE_CONFIG.replace('"base-sage"', '"localhost"') + f'deploy:\n  source: "{tmp_path}"\n')
    assert jobs.project_dir(local) == str(tmp_path.resolve())


# ---------------------------------------------------------------- options

@pytest.mark.parametrize("text, want", [
    ('{"accel": 1, "mem_slot": 0.5}', {"accel": 1.0, "mem_slot": 0.5}),
    ("accel=1", {"accel": 1.0}),
    ("accel=1, other=2.5", {"accel": 1.0, "other": 2.5}),
    (None, None),
])
def test_entrypoint_resources(text: str | None, want: dict | None) -> None:
    assert jobs.resources(text) == want


@pytest.mark.parametrize("text, why", [
    ("{nope", "not valid JSON"),
    ("accel", "must be KEY=VALUE"),
    ("=1", "must be KEY=VALUE"),
    ("accel=lots", "is not an amount"),
    ("accel=-1", "is not an amount"),
    ('{"accel": true}', "is not an amount"),
    ('{"accel": [1]}', "is not an amount"),
])
def test_bad_entrypoint_resources(text: str, why: str) -> None:
    with pytest.raises(ConfigError, match=why) as err:
        jobs.resources(text)
    assert "--entrypoint-resources" in str(err.value) and "\n" not in str(err.value)


def test_runtime_env_merges_env_and_working_dir(tmp_path: Path) -> None:
    got = jobs.runtime_env('{"pip": ["requests"], "env_vars": {"A": "1", "B": "2"}}', ("B=3", "C=x=y"),
                           str(tmp_path))
    assert got == {"pip": ["requests"], "env_vars": {"A": "1", "B": "3", "C": "x=y"},
                   "working_dir": str(tmp_path.resolve())}
    assert jobs.runtime_env(None, (), None) is None
    assert jobs.runtime_env(None, ("EMPTY=",), None) == {"env_vars": {"EMPTY": ""}}


@pytest.mark.parametrize("args, why", [
    (("{", (), None), "not valid JSON"),
    (("[1]", (), None), "must be a JSON object"),
    ((None, ("NOEQUALS",), None), "--env 'NOEQUALS' must be KEY=VALUE"),
    ((None, (), "/no/such/dir"), "no such directory"),
])
def test_bad_runtime_env(args: tuple, why: str) -> None:
    with pytest.raises(ConfigError, match=why):
        jobs.runtime_env(*args)


# ---------------------------------------------------------------- where the dashboard is

def test_a_loopback_dashboard_on_a_remote_head_is_reached_through_the_tunnel() -> None:
    loopback = cfg(GUIDE_CONFIG.replace('"0.0.0.0"', '"127.0.0.1"'))
    assert jobs.needs_tunnel(loopback)
    assert not jobs.needs_tunnel(cfg())
    assert jobs.direct_url(cfg()) == "http://base-sage:8265"
    here = cfg(GUIDE_CONFIG.replace('"0.0.0.0"', '"127.0.0.1"').replace('"base-sage"', '"localhost"'))
    assert not jobs.needs_tunnel(here) and jobs.direct_url(here) == "http://127.0.0.1:8265"


def test_no_stale_check_where_nothing_is_deployed() -> None:
    one_machine = cfg(GUIDE_CONFIG.replace('"base-sage"', '"localhost"').replace('"sage2:22,sage4:22"', '""'))
    assert jobs.stale_check(one_machine, pytest.fail) is None


# ---------------------------------------------------------------- the CLI

@pytest.mark.parametrize("argv", JOB_COMMANDS, ids=lambda a: " ".join(["sage", *a]))
def test_every_job_command_has_help_with_an_example(argv: list[str], tmp_path: Path) -> None:
    result = CliRunner().invoke(sage_group, [*argv, "--help"], env={"HOME": str(tmp_path)})
    assert result.exit_code == 0, result.output
    assert "Example" in result.output and "sage job" in result.output.split("Example", 1)[1]


BAD = {
    "env": ["--env", "NOEQUALS"],
    "resources json": ["--entrypoint-resources", "{nope"],
    "resources amount": ["--entrypoint-resources", "a=x"],
    "runtime env": ["--runtime-env-json", "[1]"],
    "cpus": ["--entrypoint-num-cpus", "-1"],
    "working dir": ["--working-dir", "/no/such/dir"],
}


def test_bad_options_are_one_line_and_exit_2_before_anything_else(tmp_path: Path) -> None:
    # The config named does not exist: a bad option must be refused before the config is even read.
    runs = run_many({name: [*SAGE, "job", "submit", *bad, "--config", str(tmp_path / "none.yaml"), "--", "true"]
                     for name, bad in BAD.items()} | {"no command": [*SAGE, "job", "submit"]}, tmp_path)
    for name, proc in runs.items():
        errors = [ln for ln in stderr_lines(proc) if ln.lower().startswith("error")]
        assert proc.returncode == 2 and len(errors) == 1, (name, proc.stderr)
        assert "Traceback" not in proc.stderr and "none.yaml" not in proc.stderr, (name, proc.stderr)


# ---------------------------------------------------------------- --json, and no status playbook unasked

class FakeRay:
    """Ray's JobSubmissionClient as `sage job` uses it: a job that runs, prints two lines and ends as `ends`."""

    def __init__(self, ends: str = "SUCCEEDED", message: str = "") -> None:
        self.ends, self.message, self.asked = ends, message, 0
        self.log, self.stopped = "line one\nline two\n", False

    def submit_job(self, submission_id: str | None = None, **_: Any) -> str:
        return submission_id or "raysubmit_fake"

    def get_job_info(self, job_id: str) -> SimpleNamespace:
        self.asked += 1
        status = self.ends if self.asked > 1 or self.stopped else "RUNNING"
        return SimpleNamespace(status=status, message=self.message if status == self.ends else "")

    async def tail_job_logs(self, job_id: str):
        yield self.log

    def get_job_logs(self, job_id: str) -> str:
        return self.log

    def stop_job(self, job_id: str) -> bool:
        self.stopped = True
        return True


@pytest.fixture
def fake_cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A config with a remote head and workers (so a deploy check would have nodes to ask), Ray's client faked,
    and every playbook run recorded: the answer says a worker's deploy is stale."""
    (tmp_path / "cluster.yaml").write_text(GUIDE_CONFIG)
    playbooks: list[str] = []

    def run(cfg: Any, invocation: Any, playbook: str, *args: Any, **kwargs: Any) -> SimpleNamespace:
        playbooks.append(playbook)
        return SimpleNamespace(hosts={"sage2": SimpleNamespace(data={"deploy": {"stale": True}})})

    ray = FakeRay()

    @contextmanager
    def connect(cfg: Any):
        yield ray

    monkeypatch.setattr(operations, "run", run)
    monkeypatch.setattr(jobs, "connect", connect)
    return SimpleNamespace(ray=ray, playbooks=playbooks, config=str(tmp_path / "cluster.yaml"), home=tmp_path)


def sage(fake: SimpleNamespace, *argv: str) -> Any:
    return CliRunner().invoke(sage_group, ["--config", fake.config, *argv], env={"HOME": str(fake.home)})


def test_submit_runs_no_playbook_unless_asked_to_check_the_deploy(fake_cluster) -> None:
    plain = sage(fake_cluster, "job", "submit", "--", "python", "x.py")
    assert plain.exit_code == 0, plain.output
    assert "line one\nline two\n" in plain.stdout and fake_cluster.playbooks == [] and "stale" not in plain.stderr
    checked = sage(fake_cluster, "job", "submit", "--check-deploy", "--", "python", "x.py")
    assert checked.exit_code == 0, checked.output
    assert fake_cluster.playbooks == ["status.yml"]
    assert "sage2 runs an older deploy than this machine's source (stale)" in checked.stderr


@pytest.mark.parametrize("ends, message, code", [("SUCCEEDED", "", 0), ("FAILED", "exit code 3", 1),
                                                 ("STOPPED", "stopped by a user", 1)])
def test_submit_json_is_one_object_on_stdout_and_the_output_on_stderr(fake_cluster, ends, message, code) -> None:
    fake_cluster.ray.ends, fake_cluster.ray.message = ends, message
    result = sage(fake_cluster, "job", "submit", "--json", "--submission-id", "j1", "--", "python", "x.py")
    assert result.exit_code == code, result.output
    assert json.loads(result.stdout) == {"job_id": "j1", "status": ends, "message": message or None,
                                         "exit_code": code, "exit_meaning": f"the job {ends.lower()}"}
    assert "line one" in result.stderr


def test_submit_json_without_waiting_says_it_was_submitted(fake_cluster) -> None:
    result = sage(fake_cluster, "job", "submit", "--json", "--no-wait", "--", "python", "x.py")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["job_id"] == "raysubmit_fake" and data["status"] == "RUNNING" and data["exit_code"] == 0
    assert data["exit_meaning"] == "submitted; the job runs on"


def test_stop_json_gives_the_status_it_ended_with(fake_cluster) -> None:
    result = sage(fake_cluster, "job", "stop", "j1", "--json")
    assert result.exit_code == 0, result.output
    assert fake_cluster.ray.stopped
    assert json.loads(result.stdout) == {"job_id": "j1", "status": "SUCCEEDED", "message": None, "exit_code": 0,
                                         "exit_meaning": "the job has ended"}
    plain = sage(fake_cluster, "job", "stop", "j1")
    assert plain.stdout == "Job j1: SUCCEEDED.\n"


# ---------------------------------------------------------------- --config and -v on the root group

def test_the_root_groups_config_and_verbose_reach_the_command(tmp_path: Path, monkeypatch) -> None:
    seen: list[operations.Invocation] = []

    def load(invocation: operations.Invocation) -> None:
        seen.append(invocation)
        raise SystemExit(0)  # what the command was given is all this test asks

    monkeypatch.setattr(operations, "load", load)
    other = tmp_path / "other.yaml"
    for argv in (["--config", "x.yaml", "-v", "job", "list", "-v"], ["job", "list", "--config", "x.yaml", "-vv"],
                 ["--config", str(other), "job", "list", "--config", "x.yaml", "-vv"]):
        CliRunner().invoke(sage_group, argv, env={"HOME": str(tmp_path)})
    assert [(i.config, i.verbose) for i in seen] == [("x.yaml", 2)] * 3  # the command's own --config wins
