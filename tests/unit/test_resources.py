"""Ray resources in the config (head:, worker:): validated, rendered as role variables, passed to `ray start` as
arguments, and compared with what Ray reports."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from ansible_collections.sage.cluster.plugins.plugin_utils import config, inventory
from ansible_collections.sage.cluster.plugins.plugin_utils.config import ConfigError

from sage_cluster import ray_node
from sage_cluster.operations import resource_mismatch
from tests.unit.helpers import PY_SAGE, run, stderr_lines

REPO = Path(__file__).resolve().parents[2]

RESOURCES = """\
head:
  host: sage-head
  num_cpus: 0            # the head takes no tasks
worker:
  num_gpus: 2
  memory: "8GiB"
  object_store_memory: 1000000000
  resources: {accel: 1, slot: 0.5}
  labels: {zone: a, rack: 7}
workers_ssh_hosts: "w1:22,w2:22"
"""


def load(tmp_path: Path, text: str) -> config.Config:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return config.load(path)


def test_resources_load_as_ray_takes_them(tmp_path: Path) -> None:
    cfg = load(tmp_path, RESOURCES)
    assert cfg["head"]["num_cpus"] == 0 and cfg["head"]["num_gpus"] is None and cfg["head"]["resources"] == {}
    w = cfg["worker"]
    assert (w["num_gpus"], w["memory"], w["object_store_memory"]) == (2, 8 * 2**30, 10**9)
    assert w["resources"] == {"accel": 1, "slot": 0.5}
    assert w["labels"] == {"zone": "a", "rack": "7"}  # Ray's labels are strings
    assert type(w["resources"]) is dict and cfg.warnings == []


def test_resources_are_group_vars_of_head_and_workers(tmp_path: Path) -> None:
    inv = inventory.build(load(tmp_path, RESOURCES))
    groups = inv["all"]["children"]["sage_cluster"]["children"]
    head, workers = groups["sage_head"]["vars"], groups["sage_workers"]["vars"]
    assert head["ray_node_num_cpus"] == 0 and head["ray_node_num_gpus"] is None
    assert workers["ray_node_num_gpus"] == 2 and workers["ray_node_memory"] == 8 * 2**30
    assert workers["ray_node_resources"] == {"accel": 1, "slot": 0.5}
    assert workers["ray_node_labels"] == {"zone": "a", "rack": "7"}


# (id, file text, line, what the message names)
BAD = [
    ("negative-gpus", "worker:\n  num_gpus: -1\n", 2, "worker.num_gpus"),
    ("cpus-fraction", "head:\n  num_cpus: 1.5\n", 2, "head.num_cpus"),
    ("cpus-bool", "head:\n  num_cpus: true\n", 2, "head.num_cpus"),
    ("memory-not-a-size", 'worker:\n  memory: "lots"\n', 2, "worker.memory"),
    ("resource-cpu", "worker:\n  resources: {CPU: 4}\n", 2, "num_cpus"),
    ("resource-reserved-node", "head:\n  resources: {'node:1.2.3.4': 1}\n", 2, "node:1.2.3.4"),
    ("resource-reserved-bundle", "worker:\n  resources:\n    bundle: 1\n", 2, "bundle"),
    ("resource-bad-name", "worker:\n  resources: {'my accel': 1}\n", 2, "my accel"),
    ("resource-negative", "worker:\n  resources: {accel: -1}\n", 2, "accel"),
    ("resource-too-precise", "worker:\n  resources: {accel: 0.00001}\n", 2, "accel"),
    ("resource-not-a-number", "worker:\n  resources: {accel: many}\n", 2, "accel"),
    ("resources-a-list", "worker:\n  resources: [accel]\n", 2, "worker.resources"),
    ("label-ray-prefix", "worker:\n  labels: {ray.io/node-id: x}\n", 2, "ray.io/"),
    ("label-bad-value", "worker:\n  labels: {zone: 'a,b=c'}\n", 2, "zone"),
    ("label-bad-key", "head:\n  labels: {-zone: a}\n", 2, "-zone"),
]


@pytest.mark.parametrize("name,text,line,key", BAD, ids=[b[0] for b in BAD])
def test_bad_resources_are_one_line_with_file_line_key_fix(tmp_path: Path, name: str, text: str, line: int,
                                                           key: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        config.load(path)
    message = str(err.value)
    assert "\n" not in message and f"{path}:{line}:" in message and key in message and "Fix:" in message, message


def test_bad_resource_through_the_cli_exits_2_and_leaves_the_file(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    path = home / "c.yaml"
    text = "worker:\n  num_gpus: -2   # a typo\n"
    path.write_text(text)
    proc = run([*PY_SAGE, "cluster", "info", "--config", str(path)], home)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert len(stderr_lines(proc)) == 1 and f"{path}:2:" in proc.stderr and "worker.num_gpus" in proc.stderr
    assert path.read_text() == text


def test_resource_mismatch_names_each_difference() -> None:
    declared = {"num_cpus": 0, "resources": {"accel": 2}, "labels": {"zone": "a"}}
    # Ray leaves a zero resource out; memory it sized itself is not compared.
    assert resource_mismatch(declared, {"accel": 2.0, "memory": 5e9}, {"zone": "a"}) == []
    assert resource_mismatch({}, {"CPU": 4.0, "memory": 5e9, "object_store_memory": 1e9,
                                  "accelerator_type:A100": 1.0}, {}) == []
    differ = resource_mismatch(declared, {"CPU": 2.0, "accel": 1.0, "other": 1.0}, {})
    assert differ == ["CPU declared 0, Ray has 2", "accel declared 2, Ray has 1", "other declared none, Ray has 1",
                      "label zone declared a, Ray has none"]


def test_ray_start_gets_the_resources_as_arguments() -> None:
    logic = ray_node
    params = {"num_cpus": 0, "num_gpus": 4, "memory": None, "object_store_memory": 10**9,
              "resources": {"accel": 1, "slot": 0.5}, "labels": {"zone": "a", "b": "c"}}
    argv = logic.start_argv("/env/bin/ray", "worker", "127.0.0.1", "/tmp/r", head_address="127.0.0.1:6379",
                            resources=logic.resource_args(params))
    assert argv[:2] == ["/env/bin/ray", "start"]
    assert "--num-cpus=0" in argv and "--num-gpus=4" in argv and "--object-store-memory=1000000000" in argv
    assert not any(a.startswith("--memory") for a in argv)
    resources = next(a for a in argv if a.startswith("--resources="))
    assert json.loads(resources.partition("=")[2]) == {"accel": 1, "slot": 0.5}
    assert "--labels=b=c,zone=a" in argv
    assert logic.declared(params) == {k: v for k, v in params.items() if v is not None}

    plain = dict(params, num_cpus=None, num_gpus=None, object_store_memory=None, resources={}, labels={})
    assert logic.resource_args(plain) == [] and logic.declared(plain) == {}
