"""config.RAY_KEYS is the one table of the Ray resource keys (issue 18). The tables elsewhere that do not yet
derive from it must say the same; this test fails the day one of them drifts (and goes once they all derive)."""
from __future__ import annotations

from sage_cluster import config, inventory, node_logic, operations
from sage_cluster.cli import nodes


def test_the_config_keys_are_the_table() -> None:
    for section in ("head", "worker"):
        keys = [k for k in config.SCHEMA if k.section == section and k.kind in config.RAY_KINDS]
        assert [(k.name, k.kind) for k in keys] == [(r.name, r.kind) for r in config.RAY_KEYS]
    assert config.NODE_RAY_KEYS == tuple(r.name for r in config.RAY_KEYS)
    assert config.RAY_OWN_RESOURCES == {"CPU": "num_cpus", "GPU": "num_gpus", "memory": "memory",
                                        "object_store_memory": "object_store_memory"}
    assert [r.flag for r in config.RAY_KEYS] == ["--num-cpus", "--num-gpus", "--memory", "--object-store-memory",
                                                 "--resources", "--labels"]


def test_the_other_tables_say_the_same() -> None:
    assert inventory.RAY_VARS == {r.name: r.var for r in config.RAY_KEYS}
    assert operations.RAY_RESOURCE_NAMES == {r.name: r.ray_name for r in config.RAY_KEYS if r.ray_name}
    assert [name for name, _ in nodes.RESOURCE_OPTIONS] == list(config.NODE_RAY_KEYS)
    assert tuple(node_logic().RESOURCE_OPTIONS) == config.NODE_RAY_KEYS
