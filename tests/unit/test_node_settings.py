"""Per-node settings: a worker in workers_ssh_hosts written as a mapping overrides ssh.*, remote.*, worker.* and
the Ray resources for that worker; validated like every key; rendered as host variables; kept by scale edits."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ansible_collections.sage.cluster.plugins.plugin_utils import config, inventory
from ansible_collections.sage.cluster.plugins.plugin_utils.config import ConfigError, Endpoint

from sage_cluster import config_edit

from tests.unit.helpers import PY_SAGE, run_many, stderr_lines

MIXED = """\
# my cluster
head:
  host: sage-head
  num_cpus: 0
worker:
  resources: {slot: 1}      # every worker's default
workers_ssh_hosts:
  - sage-w1:22              # a plain worker
  - {host: gpu1, port: 2222, ssh: {user: ops, key_path: /keys/ops}, num_gpus: 4, resources: {accel: 1}}
  - host: odd1              # its conda lives elsewhere
    remote:
      python_path: /opt/envs/x/bin/python
      ray_command: /opt/envs/x/bin/ray
      conda_env: ""
    worker:
      temp_dir: /data/ray
      bind_host: 10.0.0.9
    labels: {zone: b}
ssh:
  user: sage
"""


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_mapping_items_override_that_worker_only(tmp_path: Path) -> None:
    cfg = config.load(write(tmp_path / "c.yaml", MIXED))
    assert cfg.workers == [Endpoint("sage-w1", 22), Endpoint("gpu1", 2222), Endpoint("odd1", 22)]
    assert cfg.node("sage-w1") == {s: cfg[s] for s in ("ssh", "remote", "worker")}
    gpu1 = cfg.node("gpu1")
    assert gpu1["ssh"]["user"] == "ops" and gpu1["ssh"]["connect_timeout"] == 10
    assert gpu1["worker"]["num_gpus"] == 4 and gpu1["worker"]["resources"] == {"accel": 1}  # replaces the default
    odd1 = cfg.node("odd1")
    assert odd1["remote"]["python_path"] == "/opt/envs/x/bin/python" and odd1["remote"]["conda_env"] == ""
    assert odd1["remote"]["sage_home"] == cfg["remote"]["sage_home"]
    assert odd1["worker"]["labels"] == {"zone": "b"} and odd1["worker"]["resources"] == {"slot": 1}
    # The effective config shows such a worker as the mapping it is written as.
    shown = cfg.as_dict()["workers_ssh_hosts"]
    assert shown[0] == "sage-w1:22" and shown[1]["host"] == "gpu1" and shown[1]["ssh"] == {"user": "ops",
                                                                                           "key_path": "/keys/ops"}


def test_per_node_values_are_host_vars(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    inv = inventory.build(config.load(write(tmp_path / "c.yaml", MIXED)))
    workers = inv["all"]["children"]["sage_cluster"]["children"]["sage_workers"]
    hosts = workers["hosts"]
    assert hosts["sage-w1"] == {"ansible_host": "sage-w1", "ansible_port": 22, "ray_node_node_ip": "sage-w1"}
    assert hosts["gpu1"] == {"ansible_host": "gpu1", "ansible_port": 2222, "ray_node_node_ip": "gpu1",
                             "ansible_user": "ops", "ansible_ssh_private_key_file": "/keys/ops",
                             "ray_node_num_gpus": 4, "ray_node_resources": {"accel": 1}}
    odd1 = hosts["odd1"]
    assert odd1["ray_node_python_path"] == odd1["ansible_python_interpreter"] == "/opt/envs/x/bin/python"
    assert odd1["ray_node_ray_command"] == "/opt/envs/x/bin/ray" and odd1["ray_node_conda_env"] == ""
    assert odd1["ray_node_temp_dir"] == "/data/ray" and odd1["ray_node_node_ip"] == "10.0.0.9"
    assert odd1["ray_node_labels"] == {"zone": "b"}
    assert workers["vars"]["ray_node_resources"] == {"slot": 1}


def test_ansible_inventory_sees_the_same_host_vars(tmp_path: Path) -> None:
    """What ansible-playbook and AWX get: the real ansible-inventory on the repository's inventory file."""
    repo = Path(__file__).resolve().parents[2]
    path = write(tmp_path / "c.yaml", MIXED)
    env = {"HOME": str(tmp_path), "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "SAGE_CONFIG": str(path),
           "ANSIBLE_INVENTORY_UNPARSED_FAILED": "True"}
    proc = subprocess.run([str(Path(sys.executable).parent / "ansible-inventory"), "-i",
                           str(repo / "inventory" / "sage.yml"), "--list"],
                          capture_output=True, text=True, env=env, cwd=repo, timeout=120)
    assert proc.returncode == 0, proc.stderr
    hostvars = json.loads(proc.stdout)["_meta"]["hostvars"]
    assert hostvars["gpu1"]["ansible_user"] == "ops" and hostvars["gpu1"]["ray_node_num_gpus"] == 4
    assert hostvars["odd1"]["ray_node_ray_command"] == "/opt/envs/x/bin/ray"
    assert hostvars["sage-w1"]["ansible_user"] == "sage" and hostvars["sage-w1"]["ray_node_resources"] == {"slot": 1}
    assert hostvars["sage-head"]["ray_node_num_cpus"] == 0


BAD = [
    ("unknown-per-node-key", "workers_ssh_hosts:\n  - {host: g1, num_gpu: 1}\n", 2, "num_gpus"),
    ("unknown-per-node-ssh-key", "workers_ssh_hosts:\n  - host: g1\n    ssh:\n      usr: ops\n", 4, "ssh.usr"),
    ("head-key-per-node", "workers_ssh_hosts:\n  - {host: g1, head: {host: x}}\n", 2, "head"),
    ("per-node-negative-gpus", "workers_ssh_hosts:\n  - sage-w1\n  - {host: g1, num_gpus: -1}\n", 3,
     "workers_ssh_hosts[g1].worker.num_gpus"),
    ("per-node-ray-resource-name", "workers_ssh_hosts:\n  - {host: g1, resources: {GPU: 1}}\n", 2, "num_gpus"),
    ("per-node-relative-path", "workers_ssh_hosts:\n  - host: g1\n    remote: {ray_command: bin/ray}\n", 3,
     "workers_ssh_hosts[g1].remote.ray_command"),
    ("per-node-section-not-a-mapping", "workers_ssh_hosts:\n  - {host: g1, ssh: ops}\n", 2, "ssh"),
    ("per-node-no-host", "workers_ssh_hosts:\n  - {port: 22, num_gpus: 1}\n", 2, "host"),
    ("per-node-bad-port", "workers_ssh_hosts:\n  - {host: g1, port: '22'}\n", 2, "port"),
    ("per-node-host-with-port", "workers_ssh_hosts:\n  - {host: 'g1:22'}\n", 2, "g1:22"),
    ("per-node-set-twice", "workers_ssh_hosts:\n  - host: g1\n    num_gpus: 1\n    worker: {num_gpus: 2}\n", 4,
     "num_gpus"),
    ("per-node-listed-twice", "workers_ssh_hosts:\n  - g1:22\n  - {host: G1}\n", 3, "twice"),
]


@pytest.mark.parametrize("name,text,line,key", BAD, ids=[b[0] for b in BAD])
def test_bad_per_node_settings_are_one_line(tmp_path: Path, name: str, text: str, line: int, key: str) -> None:
    path = write(tmp_path / "c.yaml", text)
    with pytest.raises(ConfigError) as err:
        config.load(path)
    message = str(err.value)
    assert "\n" not in message and f"{path}:{line}:" in message and key in message and "Fix:" in message, message
    assert path.read_text() == text


# ---------------------------------------------------------------- scale add with options: the file

SETTINGS = {"num_gpus": 4, "resources": {"accel": 1}, "labels": {"zone": "a"}}
ITEM = '{host: "gpu5", port: 22, num_gpus: 4, resources: {"accel": 1}, labels: {"zone": "a"}}'


@pytest.mark.parametrize("before,after", [
    ('workers_ssh_hosts: "a:22,b:22"   # keep me\nssh:\n  user: x\n',
     f'workers_ssh_hosts: ["a:22", "b:22", {ITEM}]   # keep me\nssh:\n  user: x\n'),
    ("workers_ssh_hosts:\n  - a:22   # first\n  # between\n  - b:22\nssh:\n  user: x\n",
     f"workers_ssh_hosts:\n  - a:22   # first\n  # between\n  - b:22\n  - {ITEM}\nssh:\n  user: x\n"),
    ("workers_ssh_hosts: [a:22]  # flow\n", f"workers_ssh_hosts: [a:22, {ITEM}]  # flow\n"),
    ("workers_ssh_hosts:\n  - host: g1   # mine\n    num_gpus: 1\n# after\n",
     f"workers_ssh_hosts:\n  - host: g1   # mine\n    num_gpus: 1\n  - {ITEM}\n# after\n"),
])
def test_add_with_settings_writes_a_mapping_for_that_worker_only(tmp_path: Path, before: str, after: str) -> None:
    path = write(tmp_path / "c.yaml", before)
    updated = config_edit.edit_workers(path, add=Endpoint("gpu5", 22), settings=SETTINGS)
    assert path.read_text() == after
    assert updated.worker_overrides["gpu5"] == {"worker": SETTINGS}
    # Removing it again leaves the rest as it was (the string form stays a list: it holds no mapping now).
    config_edit.edit_workers(path, remove=Endpoint("gpu5", 22))
    if before.startswith('workers_ssh_hosts: "'):
        assert path.read_text() == 'workers_ssh_hosts: ["a:22", "b:22"]   # keep me\nssh:\n  user: x\n'
    else:
        assert path.read_text() == before


def test_remove_a_block_mapping_worker_keeps_the_rest(tmp_path: Path) -> None:
    path = write(tmp_path / "c.yaml", MIXED)
    config_edit.edit_workers(path, remove=Endpoint("odd1", 22))
    text = path.read_text()
    assert text == MIXED[:MIXED.index("  - host: odd1")] + "ssh:\n  user: sage\n"
    config_edit.edit_workers(path, remove=Endpoint("gpu1", 2222))
    assert "gpu1" not in path.read_text() and "  - sage-w1:22              # a plain worker\n" in path.read_text()
    config_edit.edit_workers(path, add=Endpoint("sage-w9", 22))
    assert config.load(path).workers == [Endpoint("sage-w1", 22), Endpoint("sage-w9", 22)]


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory) -> dict:
    home = tmp_path_factory.mktemp("cli")
    text = "head:\n  host: sage-head\nworkers_ssh_hosts: \"sage-w1:22\"  # keep\n"
    cases = {"negative-gpus": ["--num-gpus", "-1"], "ray-resource": ["--resources", "CPU=2"],
             "not-k-v": ["--resources", "accel"], "bad-label": ["--label", "ray.io/x=1"],
             "bad-memory": ["--memory", "lots"]}
    files, jobs, texts = {}, {}, {}
    for name, args in cases.items():
        files[name] = write(home / f"{name}.yaml", text)
        jobs[name] = [*PY_SAGE, "cluster", "scale", "add", "gpu5:22", "--config", str(files[name]), *args]
    # The three bad values in the file itself, through the CLI a user runs.
    for name, bad in (("file-negative-gpus", "workers_ssh_hosts:\n  - {host: g1, num_gpus: -1}  # mine\n"),
                      ("file-ray-resource", "worker:\n  resources: {GPU: 1}  # mine\n"),
                      ("file-unknown-key", "workers_ssh_hosts:\n  - {host: g1, gpus: 1}  # mine\n")):
        files[name] = write(home / f"{name}.yaml", bad)
        texts[name] = bad
        jobs[name] = [*PY_SAGE, "cluster", "start", "--config", str(files[name])]
    files["worker-add"] = write(home / "worker-add.yaml", text)
    jobs["worker-add"] = [*PY_SAGE, "worker", "add", "gpu5:22", "--config", str(files["worker-add"]),
                          "--num-gpus", "-3"]
    return {"results": run_many(jobs, home), "files": files, "text": text, "texts": texts}


@pytest.mark.parametrize("name", ["negative-gpus", "ray-resource", "not-k-v", "bad-label", "bad-memory", "worker-add"])
def test_bad_scale_options_are_refused_before_anything(cli: dict, name: str) -> None:
    proc = cli["results"][name]
    lines = stderr_lines(proc)
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: argument --"), proc.stderr
    assert "Fix:" in lines[0] and "Traceback" not in proc.stderr
    assert cli["files"][name].read_text() == cli["text"]


@pytest.mark.parametrize("name,key", [("file-negative-gpus", "workers_ssh_hosts[g1].worker.num_gpus"),
                                      ("file-ray-resource", "worker.resources"), ("file-unknown-key", "gpus")])
def test_bad_values_in_the_file_stop_the_cli(cli: dict, name: str, key: str) -> None:
    proc, path = cli["results"][name], cli["files"][name]
    lines = stderr_lines(proc)
    assert proc.returncode == 2 and len(lines) == 1 and f"{path}:2:" in lines[0] and key in lines[0], proc.stderr
    assert "Fix:" in lines[0] and "Traceback" not in proc.stderr and proc.stdout == ""
    assert path.read_text() == cli["texts"][name]


def test_add_with_settings_through_the_round_trip_fallback(tmp_path: Path) -> None:
    """A layout the splice leaves alone (a folded string) goes through ruamel; the result is checked the same way."""
    path = write(tmp_path / "c.yaml", "head:\n  host: h   # kept\nworkers_ssh_hosts: >-\n  a:22,b:22\n")
    updated = config_edit.edit_workers(path, add=Endpoint("gpu5", 22), settings=SETTINGS)
    assert updated.workers == [Endpoint("a", 22), Endpoint("b", 22), Endpoint("gpu5", 22)]
    assert config.load(path).worker_overrides == {"gpu5": {"worker": SETTINGS}}
    assert "host: h   # kept\n" in path.read_text()
