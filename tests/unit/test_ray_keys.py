"""config.RAY_KEYS is the one table of the Ray resource keys (issue 18). The controller's views derive from it; the
node's own list (the collection's ray_node.RESOURCE_OPTIONS, standard library only, so it cannot import the
package) must say the same: this test fails the day it drifts."""
from __future__ import annotations

from ansible_collections.sage.cluster.plugins.plugin_utils import config, inventory

from sage_cluster import operations, ray_node



def test_the_config_keys_are_the_table() -> None:
    for section in ("head", "worker"):
        keys = [k for k in config.SCHEMA if k.section == section and k.kind in config.RAY_KINDS]
        assert [(k.name, k.kind) for k in keys] == [(r.name, r.kind) for r in config.RAY_KEYS]
    assert config.NODE_RAY_KEYS == tuple(r.name for r in config.RAY_KEYS)
    assert config.RAY_OWN_RESOURCES == {"CPU": "num_cpus", "GPU": "num_gpus", "memory": "memory",
                                        "object_store_memory": "object_store_memory"}
    assert [r.flag for r in config.RAY_KEYS] == ["--num-cpus", "--num-gpus", "--memory", "--object-store-memory",
                                                 "--resources", "--labels"]


def test_the_controllers_views_and_the_nodes_list_say_the_same() -> None:
    assert {k: v for k, v in inventory.NODE_TYPE_VARS.items() if k in config.NODE_RAY_KEYS} == {
        r.name: r.var for r in config.RAY_KEYS}
    assert operations.RAY_RESOURCE_NAMES == {r.name: r.ray_name for r in config.RAY_KEYS if r.ray_name}
    assert [k.name for k in operations.worker_ray_keys()] == list(config.NODE_RAY_KEYS)
    assert tuple(ray_node.RESOURCE_OPTIONS) == config.NODE_RAY_KEYS
