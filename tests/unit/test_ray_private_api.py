"""The private Ray APIs the node module's snippets use (sage_ray_node.py: NODES_SNIPPET, REDIS_CLEANUP_SNIPPET),
checked against the controller's Ray, which is the nodes' Ray (`sage cluster provision` installs the same version).
pyproject.toml bounds Ray to the minor series this test has passed on: raise the bound after it passes on a new one."""
from __future__ import annotations

import ast
import importlib
import inspect
import re
from pathlib import Path

import pytest

MODULE = Path(__file__).resolve().parents[2] / "plugins" / "modules" / "sage_ray_node.py"


def snippet(name: str) -> str:
    for node in ast.parse(MODULE.read_text()).body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == name:
            return ast.literal_eval(node.value)
    raise AssertionError(f"no {name} in {MODULE}")


@pytest.mark.parametrize("name", ["NODES_SNIPPET", "REDIS_CLEANUP_SNIPPET"])
def test_every_name_a_snippet_imports_from_ray_exists(name: str) -> None:
    imports = [node for node in ast.walk(ast.parse(snippet(name)))
               if isinstance(node, ast.ImportFrom) and node.module.split(".")[0] == "ray"]
    assert imports, f"{name} imports nothing from ray: this test checks nothing"
    for node in imports:
        module = importlib.import_module(node.module)
        for alias in node.names:
            assert hasattr(module, alias.name), f"{node.module}.{alias.name} is gone from this Ray"


def test_the_node_table_has_the_fields_the_snippet_reads() -> None:
    from ray._raylet import InnerGcsClient
    from ray.core.generated.gcs_pb2 import GcsNodeInfo

    assert hasattr(InnerGcsClient, "get_all_node_info")  # GcsClient forwards to it (__getattr__)
    read = set(re.findall(r"\bn\.(\w+)", snippet("NODES_SNIPPET")))
    assert read >= {"node_manager_address", "state", "is_head_node", "resources_total", "labels"}
    assert read <= {f.name for f in GcsNodeInfo.DESCRIPTOR.fields}
    assert GcsNodeInfo.GcsNodeState.Value("ALIVE") == 0  # the snippet's `n.state == 0`


def test_the_redis_cleanup_takes_the_arguments_the_snippet_gives() -> None:
    from ray._private.gcs_utils import cleanup_redis_storage
    from ray._private.services import get_address

    params = list(inspect.signature(cleanup_redis_storage).parameters)
    assert params[:5] == ["host", "port", "password", "use_ssl", "storage_namespace"] and "username" in params
    assert get_address("redis://h:6379") == ("h", "6379", False)
    assert get_address("rediss://h:6380") == ("h", "6380", True)
