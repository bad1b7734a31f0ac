"""`sage config import`: `ray up` cluster files of the local provider become sage configs (issue 19).

The fixtures in data/rayup/ have the shape of Ray's own python/ray/autoscaler/local/example-full.yaml (today's
and an older one with --redis-port) and of a SAGE December 2025 file with ports and CPUs in its start commands.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from ansible_collections.sage.cluster.plugins.plugin_utils import config
from ansible_collections.sage.cluster.plugins.plugin_utils.config import ConfigError, Endpoint

from sage_cluster import rayup_import

from tests.unit.helpers import PY_SAGE, run_many, stderr_lines

DATA = Path(__file__).parent / "data" / "rayup"
# (fixture, head, workers, ssh user, key, values carried from the start commands, keys listed as not carried)
CASES = {
    "example-full": ("10.20.0.1", ["10.20.0.2", "10.20.0.3"], "ubuntu", "~/.ssh/id_rsa", {("head", "head_port"): 6379},
                     ["docker", "min_workers", "max_workers", "upscaling_speed", "idle_timeout_minutes",
                      "rsync_exclude", "rsync_filter", "head_start_ray_commands: ulimit -c unlimited",
                      "head_start_ray_commands: ray start --autoscaling-config=~/ray_bootstrap_config.yaml"]),
    "example-full-2020": ("head.example.org", ["w1.example.org", "w2.example.org"], "alice", "~/.ssh/id_rsa",
                          {("head", "head_port"): 6379},
                          ["min_workers", "initial_workers", "max_workers", "autoscaling_mode",
                           "target_utilization_fraction", "idle_timeout_minutes", "setup_commands",
                           "head_start_ray_commands: ulimit -c unlimited",
                           "head_start_ray_commands: ray start --autoscaling-config=~/ray_bootstrap_config.yaml"]),
    "sage-2025": ("sage-node-1", ["sage-node-2", "sage-node-3"], "sage", "~/.ssh/id_rsa",
                  {("head", "head_port"): 26379, ("head", "dashboard_port"): 28265, ("head", "num_cpus"): 8,
                   ("head", "num_gpus"): 0, ("worker", "num_cpus"): 4, ("worker", "num_gpus"): 1,
                   ("remote", "conda_env"): "sage"},
                  ["min_workers", "max_workers", "file_mounts", "setup_commands",
                   "head_start_ray_commands: ulimit -n 65536",
                   "head_start_ray_commands: ray start --temp-dir=/var/tmp/ray",
                   "head_start_ray_commands: ray start --autoscaling-config=~/ray_bootstrap_config.yaml",
                   "worker_start_ray_commands: ray start --object-manager-port=8076"]),
}


@pytest.mark.parametrize("name", CASES)
def test_import_carries_hosts_user_key_and_ray_start_options(tmp_path: Path, name: str) -> None:
    head, workers, user, key, carried, not_carried = CASES[name]
    imported = rayup_import.convert(DATA / f"{name}.yaml")
    path = tmp_path / "config.yaml"
    cfg = config.parse(imported.text, path)
    assert cfg.warnings == []
    assert cfg["head"]["host"] == head
    assert cfg.workers == [Endpoint(w, 22) for w in workers]
    assert cfg["ssh"]["user"] == user and cfg["ssh"]["key_path"] == key
    for (section, k), value in carried.items():
        assert cfg[section][k] == value, (section, k)
    # ray up ran whatever ray the host has: detected on each node.
    assert cfg["remote"]["python_path"] == cfg["remote"]["ray_command"] == config.AUTO
    listed = [what for what, _ in imported.not_carried]
    assert listed == not_carried
    # Empty keys (setup_commands: [], file_mounts: {}, docker without an image) are not listed.
    assert not any(what.startswith(("initialization_commands", "head_setup_commands", "cluster_synced_files",
                                    "file_mounts_sync_continuously")) for what in listed)
    # Every line not carried is a comment in the file too, and the cluster's name is.
    assert f'the `ray up` cluster "{imported.cluster_name}"' in imported.text.splitlines()[0]
    for line in imported.not_carried_lines():
        assert f"#   {line}\n" in imported.text


def test_the_commands_are_read_never_run(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    source = tmp_path / "cluster.yaml"
    source.write_text(f"provider: {{type: local, head_ip: h1, worker_ips: []}}\n"
                      f"head_start_ray_commands:\n  - touch {marker} && ray start --head --num-cpus=$(touch {marker})\n"
                      f"setup_commands: ['touch {marker}']\n")
    imported = rayup_import.convert(source)
    assert not marker.exists()
    listed = [w for w, _ in imported.not_carried]
    assert listed[:3] == ["setup_commands", f"head_start_ray_commands: touch {marker}",
                          "head_start_ray_commands: ray start --num-cpus=$(touch"]
    cfg = config.parse(imported.text, tmp_path / "c.yaml")
    assert cfg.workers == [] and cfg["head"]["num_cpus"] is None


@pytest.mark.parametrize("text,line,key", [
    ("provider: {type: aws, region: us-west-2}\n", 1, "provider.type is 'aws', not local"),
    ("cluster_name: x\nprovider:\n  type: gcp\n", 3, "provider.type is 'gcp'"),
    ("auth: {ssh_user: x}\n", 1, "provider.type is None"),
    ("- a\n", 1, "not a `ray up` cluster file"),
    ("provider: {type: local}\n", 1, "'provider.head_ip' is missing"),
    ("provider:\n  type: local\n  head_ip: YOUR_HEAD_NODE_HOSTNAME\n", 3, "'provider.head_ip'"),
    ("provider:\n  type: local\n  head_ip: h\n  worker_ips:\n    - w1\n    - 'bad host'\n", 6,
     "'provider.worker_ips'"),
    ("provider: {type: local, head_ip: h}\nauth:\n  ssh_user: 'a b'\n", 3, "'auth.ssh_user'"),
    ("provider: {type: local, head_ip: h}\nhead_start_ray_commands:\n  - ray start --head --port=99999\n", 3,
     "'head_start_ray_commands.ray start --port' = 99999"),
    ("provider: {type: local, head_ip: h}\nworker_start_ray_commands:\n  - ray start --num-cpus=many\n", 3,
     "--num-cpus"),
    ("provider: {type: local, head_ip: h}\nhead_start_ray_commands:\n  - ray start --head 'x\n", 3,
     "cannot read the command"),
    ("provider: {type: local, head_ip: h, worker_ips: [h]}\n", None, "also listed as a worker"),
    ("provider: [1\n", 1, "not valid YAML"),
], ids=["aws", "gcp-line", "no-provider", "not-a-mapping", "no-head-ip", "placeholder-head-ip", "bad-worker",
        "bad-user", "bad-port", "bad-cpus", "bad-quoting", "head-is-worker", "bad-yaml"])
def test_a_file_that_cannot_be_imported_is_one_line(tmp_path: Path, text: str, line: int | None, key: str) -> None:
    source = tmp_path / "cluster.yaml"
    source.write_text(text)
    with pytest.raises(ConfigError) as err:
        imported = rayup_import.convert(source)
        config.parse(imported.text, tmp_path / "out.yaml")  # what the CLI checks before it writes
    message = str(err.value)
    assert "\n" not in message and key in message and "Fix:" in message
    if line is not None:
        assert message.startswith(f"{source}:{line}: "), message


# ---------------------------------------------------------------- through the CLI

@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory) -> dict:
    home = tmp_path_factory.mktemp("import")
    aws = home / "aws.yaml"
    aws.write_text("cluster_name: c\nprovider:\n  type: aws\n  region: us-west-2\n")
    existing = home / "existing.yaml"
    existing.write_text("# mine\n")
    imp = [*PY_SAGE, "config", "import"]
    jobs = {
        "default": [*imp, str(DATA / "example-full.yaml")],
        "output": [*imp, str(DATA / "sage-2025.yaml"), "--output", str(home / "out" / "sage.yaml")],
        "json": [*imp, str(DATA / "example-full-2020.yaml"), "--output", str(home / "j.yaml"), "--json"],
        "exists": [*imp, str(DATA / "example-full.yaml"), "--output", str(existing)],
        "aws": [*imp, str(aws), "--output", str(home / "aws-out.yaml")],
        "missing": [*imp, str(home / "nope.yaml"), "--output", str(home / "nope-out.yaml")],
        "help": [*imp, "--help"],
    }
    results = run_many(jobs, home)
    # Then: the written configs load through the CLI, and --force overwrites.
    results.update(run_many({
        "info-default": [*PY_SAGE, "cluster", "info", "--json"],
        "info-output": [*PY_SAGE, "cluster", "info", "--json", "--config", str(home / "out" / "sage.yaml")],
        "force": [*imp, str(DATA / "example-full.yaml"), "--output", str(existing), "--force"],
    }, home))
    return {"results": results, "home": home, "existing": existing}


def test_import_writes_a_config_that_sage_loads(cli: dict) -> None:
    res, home = cli["results"], cli["home"]
    proc = res["default"]
    assert proc.returncode == 0, proc.stderr
    written = home / ".sage" / "config.yaml"
    assert proc.stdout.startswith(f'Wrote {written} from the `ray up` cluster "default" in '
                                  f'{DATA / "example-full.yaml"}: head 10.20.0.1, workers 10.20.0.2, 10.20.0.3, '
                                  "ssh user ubuntu, key ~/.ssh/id_rsa.\n")
    assert "  - docker: none: Ray runs in the env" in proc.stdout
    assert "  - min_workers, max_workers, upscaling_speed, idle_timeout_minutes: no autoscaler" in proc.stdout
    assert proc.stdout.rstrip().endswith("Next: sage cluster info")
    assert written.stat().st_mode & 0o077 == 0  # private, as every file this tool writes
    info = json.loads(res["info-default"].stdout)
    assert info["config_file"] == str(written) and info["head"]["host"] == "10.20.0.1"
    assert info["workers_ssh_hosts"] == ["10.20.0.2:22", "10.20.0.3:22"] and info["ssh"]["user"] == "ubuntu"
    out = json.loads(res["info-output"].stdout)
    assert out["head"]["head_port"] == 26379 and out["worker"]["num_cpus"] == 4
    assert out["remote"]["conda_env"] == "sage" and out["remote"]["python_path"] == "auto"


def test_import_json(cli: dict) -> None:
    proc = cli["results"]["json"]
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["written"] == str(cli["home"] / "j.yaml") and data["head"] == "head.example.org"
    assert data["workers"] == ["w1.example.org", "w2.example.org"] and data["ssh_user"] == "alice"
    assert {"what": "setup_commands", "instead": rayup_import.NOT_CARRIED["setup_commands"]} in data["not_carried"]


def test_import_refuses_to_overwrite_without_force(cli: dict) -> None:
    proc = cli["results"]["exists"]
    assert proc.returncode == 2 and proc.stdout == ""
    lines = stderr_lines(proc)
    assert len(lines) == 1 and f"{cli['existing']} already exists" in lines[0] and "--force" in lines[0]
    force = cli["results"]["force"]
    assert force.returncode == 0, force.stderr
    assert config.load(cli["existing"])["head"]["host"] == "10.20.0.1"


@pytest.mark.parametrize("name,mention", [("aws", "provider.type is 'aws', not local"), ("missing", "nope.yaml")])
def test_import_of_a_file_it_cannot_take_is_one_line(cli: dict, name: str, mention: str) -> None:
    proc = cli["results"][name]
    assert proc.returncode == 2 and proc.stdout == "" and "Traceback" not in proc.stderr
    errors = [ln for ln in stderr_lines(proc) if not ln.startswith(("Usage: ", "Try '"))]
    assert len(errors) == 1 and mention in errors[0]
    assert not (cli["home"] / f"{name}-out.yaml").exists()


def test_import_help_has_an_example(cli: dict) -> None:
    proc = cli["results"]["help"]
    assert proc.returncode == 0 and "Example:" in proc.stdout and "sage config import" in proc.stdout
