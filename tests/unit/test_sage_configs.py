"""The configs SAGE users already have (issue 19): ssh.workers, the head's own env, detected paths, SAGE's own
sections, and where the config is found (the project's config/cluster.yaml first, as SAGE's CLI did)."""
from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from ansible_collections.sage.cluster.plugins.plugin_utils import config, inventory
from ansible_collections.sage.cluster.plugins.plugin_utils.config import ConfigError, Endpoint

from sage_cluster import config_edit

from tests.conftest import user_env
from tests.unit.helpers import PY_SAGE, stderr_lines

REPO = Path(__file__).resolve().parents[2]

# SAGE's config/cluster.yaml of its Ray era (December 2025 - February 2026), as issue 19 quotes it.
SAGE_CLUSTER_YAML = '''\
# SAGE Cluster Configuration
head:
  host: "sage-node-1"
  head_port: 26379
  dashboard_port: 28265
  dashboard_host: "0.0.0.0"
  temp_dir: "/var/tmp/ray"
  log_dir: "/var/tmp/sage_head_logs"
  conda_env: "sage-head"         # the head's env differs from the workers'
  python_path: ""                # SAGE: leave empty to detect
  ray_command: ""
  num_cpus: 8
  num_gpus: 0
worker:
  bind_host: "localhost"
  temp_dir: "/tmp/ray_worker"
  log_dir: "/tmp/sage_worker_logs"
  num_cpus: 8
  num_gpus: 0
ssh:
  user: "sage"
  key_path: "~/.ssh/id_rsa"
  connect_timeout: 10
  workers:
  - host: "sage-node-2"
    port: 22
  - host: "sage-node-3"          # rack 2
    port: 22
  # - host: "sage-node-12"
  #   port: 22
remote:
  sage_home: "/home/sage"
  python_path: ""
  ray_command: ""
  conda_env: "sage"
daemon:
  host: "sage-node-1"
  port: 19001
output:
  format: "table"
  colors: true
monitor:
  refresh_interval: 5
jobmanager:
  host: "0.0.0.0"
  port: 19001
  timeout: 30
  retry_attempts: 3
'''


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def host_vars(cfg: config.Config) -> dict:
    return inventory.as_script_json(inventory.build(cfg))["_meta"]["hostvars"]


# ---------------------------------------------------------------- the file as SAGE wrote it

def test_sage_cluster_yaml_loads_as_written() -> None:
    cfg = config.parse(SAGE_CLUSTER_YAML, Path("cluster.yaml"))
    assert cfg.workers == [Endpoint("sage-node-2", 22), Endpoint("sage-node-3", 22)]
    assert cfg.workers_keys == ("ssh.workers",)
    assert cfg.worker_overrides == {}  # {host, port} alone is nothing of a worker's own
    assert cfg["remote"]["python_path"] == cfg["remote"]["ray_command"] == config.AUTO
    assert cfg["head"]["num_cpus"] == cfg["worker"]["num_cpus"] == 8
    # SAGE's own sections: one note, no warnings.
    assert cfg.warnings == []
    assert len(cfg.notes) == 1
    assert all(name in cfg.notes[0] for name in ("daemon", "jobmanager", "output", "monitor"))
    assert "leaves them alone" in cfg.notes[0]


def test_unknown_keys_still_warn_beside_sages_sections() -> None:
    cfg = config.parse("daemon: {port: 1}\nmonitr: {}\nssh:\n  workrs: []\n", Path("c.yaml"))
    assert len(cfg.notes) == 1 and "daemon" in cfg.notes[0]
    assert len(cfg.warnings) == 2
    assert "c.yaml:2:" in cfg.warnings[0] and "'monitr'" in cfg.warnings[0]
    assert "did you mean 'workers'" in cfg.warnings[1] and "c.yaml:4:" in cfg.warnings[1]


@pytest.mark.parametrize("text", [
    "ssh:\n  workers:\n    - a:22\n    - b:2222\n",
    "ssh:\n  workers:\n    - {host: a}\n    - {host: b, port: 2222}\n",
    "ssh:\n  workers: 'a, b:2222'\n",
    "workers_ssh_hosts:\n  - {host: a, port: 22}\n  - b:2222\n",
    "workers_ssh_hosts: a:22,b:2222\nssh:\n  workers:\n    - host: a\n    - host: b\n      port: 2222\n",
], ids=["ssh-strings", "ssh-mappings", "ssh-string", "top-mappings", "both-equal"])
def test_ssh_workers_is_the_same_list_as_workers_ssh_hosts(text: str) -> None:
    cfg = config.parse(text, Path("c.yaml"))
    assert cfg.workers == [Endpoint("a", 22), Endpoint("b", 2222)]


def test_both_lists_different_is_one_line() -> None:
    with pytest.raises(ConfigError) as err:
        config.parse("workers_ssh_hosts: a:22,b:22\nssh:\n  workers:\n    - host: a\n", Path("c.yaml"))
    message = str(err.value)
    assert "\n" not in message and message.startswith("c.yaml:3: 'ssh.workers' (a:22)")
    assert "'workers_ssh_hosts' (line 1: a:22, b:22)" in message and "Fix: keep one of them" in message


def test_a_workers_own_settings_under_ssh_workers() -> None:
    cfg = config.parse("ssh:\n  workers:\n    - {host: gpu1, num_gpus: 4, remote: {conda_env: gpu}}\n",
                       Path("c.yaml"))
    assert cfg.worker_overrides == {"gpu1": {"worker": {"num_gpus": 4}, "remote": {"conda_env": "gpu"}}}
    assert host_vars(cfg)["gpu1"]["ray_node_num_gpus"] == 4


@pytest.mark.parametrize("text", ["", "head:\n  host: h1\n", "ssh:\n  user: x\n", "workers_ssh_hosts: ''\n",
                                  "ssh:\n  workers: []\n"])
def test_a_file_that_names_no_workers_has_none(text: str) -> None:
    cfg = config.parse(text, Path("c.yaml"))
    assert cfg.workers == []
    inv = inventory.build(cfg)
    assert not inv["all"]["children"]["sage_cluster"]["children"]["sage_workers"].get("hosts")


# ---------------------------------------------------------------- the head's own env, detected paths

def test_the_heads_own_env_becomes_head_host_vars() -> None:
    text = ("head: {host: h1, conda_env: headenv, python_path: /opt/h/bin/python, ray_command: /opt/h/bin/ray}\n"
            "workers_ssh_hosts: w1:22\n"
            "remote: {python_path: /opt/w/bin/python, ray_command: /opt/w/bin/ray, conda_env: w}\n")
    cfg = config.parse(text, Path("c.yaml"))
    assert cfg.node("h1")["remote"] == {**cfg["remote"], "conda_env": "headenv",
                                        "python_path": "/opt/h/bin/python", "ray_command": "/opt/h/bin/ray"}
    hv = host_vars(cfg)
    assert hv["h1"]["ray_node_python_path"] == hv["h1"]["sage_deploy_python_path"] == "/opt/h/bin/python"
    assert hv["h1"]["ansible_python_interpreter"] == "/opt/h/bin/python"
    assert hv["h1"]["ray_node_ray_command"] == "/opt/h/bin/ray"
    assert hv["h1"]["ray_node_conda_env"] == hv["h1"]["sage_deploy_conda_env"] == "headenv"
    # The worker keeps the config-wide env: no host variable of its own, the group's variables.
    assert "ray_node_python_path" not in hv["w1"] and "ray_node_conda_env" not in hv["w1"]
    group = inventory.build(cfg)["all"]["children"]["sage_cluster"]["vars"]
    assert group["ray_node_python_path"] == "/opt/w/bin/python" and group["ray_node_conda_env"] == "w"


def test_head_keys_left_out_or_null_take_remote() -> None:
    for text in ("head: {host: h1}\n", "head:\n  host: h1\n  python_path:\n  conda_env: null\n"):
        cfg = config.parse(text, Path("c.yaml"))
        assert cfg.overrides("h1") == {}
        assert "ray_node_python_path" not in host_vars(cfg)["h1"]  # the group's value applies
    # "" for the head's conda_env means: none, unlike the workers'.
    cfg = config.parse('head: {host: h1, conda_env: ""}\n', Path("c.yaml"))
    assert host_vars(cfg)["h1"]["ray_node_conda_env"] == "" and cfg["remote"]["conda_env"] == "sage"


@pytest.mark.parametrize("value", ['""', "auto", "", "'  '", "null"])
def test_empty_or_auto_paths_mean_detect(value: str) -> None:
    cfg = config.parse(f"remote:\n  python_path: {value}\n  ray_command: {value}\n", Path("c.yaml"))
    assert cfg["remote"]["python_path"] == cfg["remote"]["ray_command"] == "auto"
    group = inventory.build(cfg)["all"]["children"]["sage_cluster"]["vars"]
    # The contract with the roles: the word auto; modules run by the Python Ansible discovers.
    assert group["ray_node_python_path"] == group["ray_node_ray_command"] == group["sage_deploy_python_path"] == "auto"
    assert group["ansible_python_interpreter"] == "auto_silent"


def test_heads_detected_path_beside_explicit_remote() -> None:
    cfg = config.parse('head: {host: h1, python_path: ""}\nremote: {python_path: /opt/w/bin/python}\n',
                       Path("c.yaml"))
    hv = host_vars(cfg)["h1"]
    assert hv["ray_node_python_path"] == "auto" and hv["ansible_python_interpreter"] == "auto_silent"


# ---------------------------------------------------------------- scale edits the list the file uses

def test_scale_edits_ssh_workers_keeping_comments(tmp_path: Path) -> None:
    path = write(tmp_path / "cluster.yaml", SAGE_CLUSTER_YAML)
    config_edit.edit_workers(path, add=Endpoint("sage-node-4", 2222))
    added = SAGE_CLUSTER_YAML.replace('  - host: "sage-node-3"          # rack 2\n    port: 22\n',
                                      '  - host: "sage-node-3"          # rack 2\n    port: 22\n'
                                      '  - host: "sage-node-4"\n    port: 2222\n')
    assert path.read_text() == added
    config_edit.edit_workers(path, remove=Endpoint("sage-node-2", 22))
    assert path.read_text() == added.replace('  - host: "sage-node-2"\n    port: 22\n', "")
    assert config.load(path).workers == [Endpoint("sage-node-3", 22), Endpoint("sage-node-4", 2222)]


def test_scale_edits_both_lists_when_the_file_has_both(tmp_path: Path) -> None:
    text = "head: {host: h}\nworkers_ssh_hosts: a:22  # old name\nssh:\n  workers:\n    - a:22\n"
    path = write(tmp_path / "c.yaml", text)
    updated = config_edit.edit_workers(path, add=Endpoint("b", 22))
    assert updated.workers == [Endpoint("a", 22), Endpoint("b", 22)]
    assert path.read_text() == ("head: {host: h}\nworkers_ssh_hosts: a:22,b:22  # old name\nssh:\n  workers:\n"
                                "    - a:22\n    - b:22\n")


# ---------------------------------------------------------------- where the config is found

@pytest.fixture
def project(home: Path) -> Path:
    """A SAGE checkout in HOME: pyproject.toml, config/cluster.yaml, and a subdirectory to run from."""
    root = home / "SAGE"
    write(root / "pyproject.toml", "[project]\nname = 'isage'\n")
    write(root / "config" / "cluster.yaml", SAGE_CLUSTER_YAML)
    (root / "packages" / "sage-kernel").mkdir(parents=True)
    return root


def test_the_projects_config_is_found_from_a_subdirectory(project: Path, monkeypatch: pytest.MonkeyPatch,
                                                          home: Path) -> None:
    write(home / ".sage" / "config.yaml", "head: {host: from-home}\n")
    monkeypatch.chdir(project / "packages" / "sage-kernel")
    cfg = config.load()
    assert cfg.path == project / "config" / "cluster.yaml" and cfg["head"]["host"] == "sage-node-1"
    assert cfg.origin.startswith(f"the project's config (project root {project}")
    # $SAGE_CONFIG and --config come first.
    monkeypatch.setenv("SAGE_CONFIG", str(home / ".sage" / "config.yaml"))
    assert config.load()["head"]["host"] == "from-home"
    assert config.load(project / "config" / "cluster.yaml").origin == "named by --config"


def test_a_project_config_without_head_is_not_taken(project: Path, monkeypatch: pytest.MonkeyPatch,
                                                    home: Path) -> None:
    write(project / "config" / "cluster.yaml", "nodes: 3  # another tool's file\n")
    write(home / ".sage" / "cluster.yaml", "head: {host: sage-home}\n")
    write(home / ".sage" / "config.yaml", "head: {host: from-home}\n")
    monkeypatch.chdir(project / "packages")
    cfg = config.load()
    assert cfg["head"]["host"] == "sage-home"  # ~/.sage/cluster.yaml comes before ~/.sage/config.yaml
    assert f"{project / 'config' / 'cluster.yaml'} (no head section)" in cfg.origin


def test_only_the_nearest_project_counts(project: Path, monkeypatch: pytest.MonkeyPatch, home: Path) -> None:
    inner = project / "packages" / "sage-kernel"
    write(inner / "pyproject.toml", "[project]\nname = 'inner'\n")
    monkeypatch.chdir(inner)
    assert config.load().is_builtin  # inner is the project: its config/cluster.yaml is absent


def test_dot_config_outside_a_project(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(home / "work" / "config" / "cluster.yaml", "head: {host: dot-config}\n")
    monkeypatch.chdir(home / "work")
    cfg = config.load()
    assert cfg["head"]["host"] == "dot-config" and cfg.origin.startswith("./config/cluster.yaml")


def test_a_broken_project_config_is_reported_not_skipped(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(project / "config" / "cluster.yaml", "head:\n  head_port: 0\n")
    monkeypatch.chdir(project)
    with pytest.raises(ConfigError) as err:
        config.load()
    assert str(err.value).startswith(f"{path}:2: 'head.head_port'")


# ---------------------------------------------------------------- through the CLI and the ops door

@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    home = tmp_path_factory.mktemp("sagecfg")
    root = home / "SAGE"
    write(root / ".git" / "HEAD", "ref: refs/heads/main\n")
    write(root / "config" / "cluster.yaml", SAGE_CLUSTER_YAML)
    sub = root / "packages"
    sub.mkdir()
    differ = write(home / "differ.yaml", "workers_ssh_hosts: a:22\nssh:\n  workers: [b:22]\n")
    jobs = {"info": [*PY_SAGE, "cluster", "info"], "info-json": [*PY_SAGE, "cluster", "info", "--json"],
            "differ": [*PY_SAGE, "cluster", "info", "--config", str(differ)],
            "door": [str(Path(sys.executable).with_name("ansible-inventory")), "-i",
                     str(REPO / "inventory" / "sage.yml"), "--list"]}

    def in_sub(argv: list[str]) -> subprocess.CompletedProcess:
        # The door run from the project, not from the checkout: the checkout's ansible.cfg, named.
        return subprocess.run(argv, env=user_env(home, ANSIBLE_CONFIG=str(REPO / "ansible.cfg")), cwd=sub,
                              capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60)
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:  # each run is a fresh Python: start them at once
        futures = {name: pool.submit(in_sub, argv) for name, argv in jobs.items()}
        out = {name: f.result() for name, f in futures.items()}
    return {"results": out, "root": root, "differ": differ}


def test_cluster_info_says_which_file_and_why(runs: dict) -> None:
    proc = runs["results"]["info"]
    assert proc.returncode == 0, proc.stderr
    path = runs["root"] / "config" / "cluster.yaml"
    assert f"Config:     {path} (the project's config (project root {runs['root']}" in proc.stdout
    assert "Workers:    sage-node-2:22, sage-node-3:22" in proc.stdout
    assert "python detected on each node, ray detected on each node, conda env sage" in proc.stdout
    assert "Head env:   python detected on each node, ray detected on each node, conda env sage-head" in proc.stdout
    # SAGE's sections: one note line, no warning.
    assert [ln for ln in stderr_lines(proc)] == [
        f"{path}: daemon, output, monitor, jobmanager: sections of SAGE's own services; "
        "sage-cluster leaves them alone."]
    data = json.loads(runs["results"]["info-json"].stdout)
    assert data["config_file"] == str(path) and data["config_origin"].startswith("the project's config")
    assert data["workers_key"] == "ssh.workers"
    assert data["workers_ssh_hosts"] == ["sage-node-2:22", "sage-node-3:22"]


def test_cluster_info_refuses_two_different_lists(runs: dict) -> None:
    proc = runs["results"]["differ"]
    assert proc.returncode == 2 and proc.stdout == ""
    lines = stderr_lines(proc)
    assert len(lines) == 1 and lines[0].startswith(f"error: {runs['differ']}:3: 'ssh.workers' (b:22)")


def test_the_ops_door_finds_the_same_file(runs: dict) -> None:
    proc = runs["results"]["door"]
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["sage_head"]["hosts"] == ["sage-node-1"]
    assert data["sage_workers"]["hosts"] == ["sage-node-2", "sage-node-3"]
    head = data["_meta"]["hostvars"]["sage-node-1"]
    assert head["ray_node_conda_env"] == "sage-head" and head["ray_node_python_path"] == "auto"


# ---------------------------------------------------------------- the second script name

def test_sage_cluster_is_a_second_name_for_the_same_cli(tmp_path: Path) -> None:
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["sage-cluster"] == scripts["sage"] == "sage_cluster.cli:main"
    module, _, func = scripts["sage-cluster"].partition(":")
    # What pip's console script for it does: import the entry point and call it, argv[0] being the script.
    stub = f"import sys; sys.argv[0] = 'sage-cluster'; from {module} import {func}; sys.exit({func}())"
    proc = subprocess.run([sys.executable, "-c", stub, "--help"], capture_output=True, text=True,
                          env=user_env(tmp_path), cwd=tmp_path, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("Usage: sage-cluster [OPTIONS] COMMAND")
    assert "cluster" in proc.stdout and "config" in proc.stdout


def test_the_sage_fixture_looks_only_inside_its_own_home(sage) -> None:
    """The suite's `sage` runs from its own HOME: the search never reaches this checkout's or a tester's files."""
    code, data = sage.json("cluster", "info")
    assert code == 0 and data["config_file"] is None
    looked = data["config_origin"].removeprefix("no config file found; looked at ").split(", ")
    assert looked and all(Path(p).is_relative_to(sage.home) for p in looked), data["config_origin"]
