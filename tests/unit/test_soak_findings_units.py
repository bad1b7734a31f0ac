"""Pure logic behind issue 32's findings 3 and 4 (the rig's tests/e2e/test_soak_findings_ops.py runs them for real)."""
from __future__ import annotations

import os
import shlex
from types import SimpleNamespace

from ansible_collections.sage.cluster.plugins.module_utils import ray_node
from ansible_collections.sage.cluster.plugins.plugin_utils import inventory

from sage_cluster.runner import EventHandler


def unreachable(host: str, msg: str) -> dict:
    return {"event": "runner_on_unreachable", "event_data": {"host": host, "res": {"msg": msg}}}


def test_a_silent_host_is_named_in_plain_words_and_other_reasons_stay_sshs() -> None:
    handler = EventHandler(connect_timeout=lambda host: 5)
    handler(unreachable("w2", "Failed to connect to the host via ssh: mux_client_request_session: read from master "
                              "failed: Broken pipe"))
    handler(unreachable("w3", "Failed to connect to the host via ssh: ssh: Could not resolve hostname w3"))
    assert handler.hosts["w2"].error == "w2 did not answer within 5 s (ssh)"
    assert "Could not resolve hostname w3" in handler.hosts["w3"].error


def statvfs(free_blocks: int, total_blocks: int = 10**6):
    return lambda path: SimpleNamespace(f_bavail=free_blocks, f_bfree=free_blocks, f_blocks=total_blocks, f_frsize=4096)


def test_free_space_fails_below_256_mib_and_warns_below_1_gib() -> None:
    full = ray_node.free_space("/tmp/ray", statvfs(0))
    assert not full["ok"] and "0 B free" in full["detail"] and "fail below 256 MiB" in full["detail"]
    low = ray_node.free_space("/tmp/ray", statvfs(512 * 256))  # 512 MiB
    assert low["ok"] and low["warn"]
    assert not ray_node.free_space("/tmp/ray", statvfs(900_000))["warn"]
    why = ray_node.no_space("worker", {"temp_dir": "/tmp/ray", "log_dir": "/tmp/logs"}, statvfs(0))
    assert why.startswith("no space left: /tmp/ray:") and "worker.temp_dir" in why


def test_the_keepalive_follows_connect_timeout_for_the_group_and_a_host_of_its_own() -> None:
    assert inventory.keepalive_options(5) == ["-o", "ServerAliveInterval=2", "-o", "ServerAliveCountMax=3"]
    ssh = {"strict_host_key_checking": "yes", "known_hosts": "~/.ssh/known_hosts", "connect_timeout": 30}
    assert "ServerAliveInterval=10" in shlex.split(inventory.ssh_common_args(ssh))
    assert os.path.exists(ray_node.nearest_existing("/no/such/dir/below"))
