"""The sage config for a cluster of rig hosts, written once for the bench and the e2e tests that need no
hand-written file (test_rig_cluster keeps its own text: its comments are what the scale tests check survive)."""
from __future__ import annotations

from typing import Any

import yaml

from .rig import DEFAULT_ENV, Rig


def sage_config(rig: Rig, head_host: str, worker_hosts: list[str], *, head_port: int, dashboard_port: int, comment: str,
                **sections: dict[str, Any]) -> str:
    """The rig's user and key, Ray from the rig's env, the dashboard on loopback (the rig's hosts share this
    machine's network); each keyword adds keys to, or overrides keys of, that config section."""
    values: dict[str, Any] = {
        "head": {"host": head_host, "head_port": head_port, "dashboard_port": dashboard_port,
                 "dashboard_host": "127.0.0.1"},
        "worker": {"bind_host": "localhost"},
        "workers_ssh_hosts": ",".join(f"{w}:22" for w in worker_hosts),
        "ssh": {"user": rig.user, "key_path": str(rig.key_path), "connect_timeout": 5},
        "remote": {"sage_home": rig.user_home, "python_path": f"{DEFAULT_ENV}/bin/python",
                   "ray_command": f"{DEFAULT_ENV}/bin/ray", "conda_env": "sage"},
    }
    for section, keys in sections.items():
        values.setdefault(section, {}).update(keys)
    return f"# {comment}\n" + yaml.safe_dump(values, sort_keys=False)
