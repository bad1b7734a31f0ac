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


def test_the_soak_of_supervised_hosts_writes_a_block_of_its_own(tmp_path):
    from bench import soak
    from bench.report import write_doc
    doc = tmp_path / "reliability.md"
    doc.write_text("# Reliability\n")
    for supervised, table in ((False, "plain table"), (True, "supervised table")):
        begin, end = soak.markers(supervised)
        write_doc(doc, f"{begin}\n{table}\n{end}", begin, end)
    begin, end = soak.markers(False)
    write_doc(doc, f"{begin}\nplain again\n{end}", begin, end)  # a repeated plain run keeps the supervised block
    text = doc.read_text()
    assert "plain again" in text and "supervised table" in text and "plain table" not in text


def test_the_soak_plan_has_every_fault_once_the_cycles_allow_and_repeats_with_its_seed():
    from bench import soak
    twenty = soak.plan(20, seed=1)
    assert len(twenty) == 20 and set(twenty) == set(soak.FAULTS)
    assert soak.plan(20, seed=1) == twenty and soak.plan(20, seed=2) != twenty
    assert len(set(soak.plan(3, seed=1))) == 3  # fewer cycles than faults: no fault twice
    assert soak.plan(4, seed=1, faults=["raylet hung"]) == ["raylet hung"] * 4


def test_status_names_a_host_whose_restarted_raylet_ray_does_not_count_yet():
    """Issue 32, finding 2 on a supervised node: systemd restarted the raylet before Ray dropped its old node, so Ray
    lists one alive node at the host's IP, but not the running raylet's: the row says so and status is unhealthy."""
    from sage_cluster import operations, report
    from sage_cluster.runner import HostResult, RunResult
    hosts = {"h": HostResult("h", data={"node_type": "head", "running": True, "node_ip": "10.0.0.1", "node_id": "h1"}),
             "w": HostResult("w", data={"node_type": "worker", "running": True, "node_ip": "10.0.0.2",
                                        "node_id": "new"})}
    result = RunResult("status.yml", hosts, "successful", 1.0, "")
    view = {"nodes": [{"node_ip": "10.0.0.1", "node_id": "h1", "alive": True},
                      {"node_ip": "10.0.0.2", "node_id": "old", "alive": True}]}
    operations.note_alive_per_host(result, view)
    assert "does not count this host's running raylet" in hosts["w"].data["ray_note"]
    assert "ray_note" not in hosts["h"].data
    rows = {row[0]: row for row in report.node_rows(result)}
    assert rows["w"][2] == "not joined yet" and rows["h"][2] == "running"
