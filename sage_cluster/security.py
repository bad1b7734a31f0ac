"""What `sage` makes on the controller before it acts: the Ray auth token, the CA (TLS on) and the known_hosts file's
directory.

The files themselves (their paths, the token's making, the password file's check) are the collection's
(plugins/plugin_utils/security.py and ray_token.py), which the inventory and the sage_ray_node action plugin share.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from ansible_collections.sage.cluster.plugins.plugin_utils import ray_token
from ansible_collections.sage.cluster.plugins.plugin_utils.config import STATE_DIR, Config
from ansible_collections.sage.cluster.plugins.plugin_utils.security import (check_redis_password_file, tls_dir,
                                                                             tls_enabled, token_enabled, token_path)


def prepare_controller(cfg: Config) -> None:
    """Make what a playbook run needs on this machine: the token file (when auth is on) and the known_hosts dir."""
    if token_enabled(cfg):
        token_file()
    if tls_enabled(cfg):
        tls_ca()
    check_redis_password_file(cfg)
    # ssh will not create the file's directory, and then silently learns no key at all.
    Path(cfg["ssh"]["known_hosts"]).expanduser().parent.mkdir(mode=0o700, parents=True, exist_ok=True)


def token_file() -> Path:
    """The Ray auth token's file, made first when no run has made it yet."""
    ray_token.ensure_token(token_path())
    return token_path()


def read_token() -> str:
    return ray_token.read_token(token_path())


def tls_ca():
    """The cluster's CA (made once, ~/.sage/tls); `cryptography` is imported only for configs with TLS on."""
    from ansible_collections.sage.cluster.plugins.plugin_utils import tls

    return tls.ensure_ca(tls_dir())


def retire_ca() -> Path:
    """Move the CA's dir aside (the next run makes a new CA); where it went."""
    old = tls_dir().with_name(f"tls.retired-{time.strftime('%Y%m%d-%H%M%S')}")
    if tls_dir().exists():
        tls_dir().rename(old)
    return old


# This machine's record of security.tls at each config's last start: a change is said before the start acts on it.
TLS_MODES = STATE_DIR / "tls_modes.json"


def tls_change(cfg: Config) -> str | None:
    """The line a start says first when security.tls differs from this machine's last start of the config."""
    last, now = _tls_modes().get(str(cfg.path)), cfg["security"]["tls"]
    if last in (None, now):
        return None
    return (f"security.tls is {now} now ({last} at this machine's last start): each running node restarts on it, "
            "as a new cluster (Ray reads its TLS settings only at start; the old cluster's jobs and actors end).")


def record_tls_mode(cfg: Config) -> None:
    from sage_cluster.config_edit import write_atomic  # ruamel, only when there is something to write

    modes = _tls_modes()
    if modes.get(str(cfg.path)) != cfg["security"]["tls"]:
        write_atomic(TLS_MODES.expanduser(), json.dumps({**modes, str(cfg.path): cfg["security"]["tls"]}, indent=1))


def _tls_modes() -> dict[str, str]:
    try:
        modes = json.loads(TLS_MODES.expanduser().read_text())
    except (OSError, ValueError):
        return {}
    return modes if isinstance(modes, dict) else {}
