"""bench/peers.py without a rig: what it reads from `ray status` and the configs it gives the peers."""
import yaml

from bench.peers import OriginalSage, RayUp, parse_alive
from tests.rig import Rig

AUTOSCALED = """\
======== Autoscaler status: 2026-11-26 14:05:58.293709 ========
Node status
---------------------------------------------------------------
Active:
 (no active nodes)
Idle:
 2 local.cluster.node
Pending:
 1e62abe2-6a70-4215-b873-54261b72814a: local.cluster.node,
Recent failures:
 (no failures)

Resources
---------------------------------------------------------------
Total Usage:
 0.0/4.0 CPU
"""

PLAIN = """\
Node status
---------------------------------------------------------------
Active:
 1 node_5f3c
 1 node_77aa
 1 node_9b01
Pending:
 (no pending nodes)
Recent failures:
 1 node_c0de
"""


def test_parse_alive_counts_active_and_idle_not_pending_or_failed():
    assert parse_alive(AUTOSCALED) == 2
    assert parse_alive(PLAIN) == 3
    assert parse_alive("") == 0


def _rig(tmp_path):
    return Rig(["b-head", "b-w1", "b-w2", "b-w3"], root=tmp_path, first_ip=120)  # not started: addresses only


def test_original_config_names_hosts_by_ip_and_the_rig_env(tmp_path):
    cfg = yaml.safe_load(OriginalSage(_rig(tmp_path), tmp_path / "w").config())
    assert cfg["head"]["host"] == "127.0.0.120"
    assert cfg["head"]["head_port"] == 6395 and cfg["head"]["dashboard_port"] == 8295
    assert cfg["workers_ssh_hosts"] == "127.0.0.121:22,127.0.0.122:22,127.0.0.123:22"
    assert cfg["remote"]["ray_command"] == cfg["head"]["ray_command"] == "/opt/conda/envs/sage/bin/ray"
    assert cfg["remote"]["conda_env"] == "sage"


def test_ray_up_config_uses_the_local_provider_and_own_node_ips(tmp_path):
    cfg = yaml.safe_load(RayUp(_rig(tmp_path), tmp_path / "w").config())
    assert cfg["provider"] == {"type": "local", "head_ip": "127.0.0.120",
                               "worker_ips": ["127.0.0.121", "127.0.0.122", "127.0.0.123"]}
    assert cfg["auth"]["ssh_user"] == "sage"
    head_start = cfg["head_start_ray_commands"][-1]
    assert "--node-ip-address=127.0.0.120" in head_start and "--port=6395" in head_start
    assert "--autoscaling-config=~/ray_bootstrap_config.yaml" in head_start
    assert "--node-ip-address=$(hostname -i)" in cfg["worker_start_ray_commands"][-1]
