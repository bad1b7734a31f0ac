"""What `sage` makes on the controller before it acts: the Ray auth token and the known_hosts file's directory.

The files themselves (their paths, the token's making, the password file's check) are the collection's
(plugins/plugin_utils/security.py and ray_token.py), which the inventory and the sage_ray_node action plugin share.
"""
from __future__ import annotations

from pathlib import Path

from ansible_collections.sage.cluster.plugins.plugin_utils import ray_token
from ansible_collections.sage.cluster.plugins.plugin_utils.config import Config
from ansible_collections.sage.cluster.plugins.plugin_utils.security import (check_redis_password_file, token_enabled,
                                                                             token_path)


def prepare_controller(cfg: Config) -> None:
    """Make what a playbook run needs on this machine: the token file (when auth is on) and the known_hosts dir."""
    if token_enabled(cfg):
        ray_token.ensure_token(token_path())
    check_redis_password_file(cfg)
    # ssh will not create the file's directory, and then silently learns no key at all.
    Path(cfg["ssh"]["known_hosts"]).expanduser().parent.mkdir(mode=0o700, parents=True, exist_ok=True)


def read_token() -> str:
    return ray_token.read_token(token_path())
