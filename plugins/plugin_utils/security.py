"""The controller's secret files for a run: the Ray auth token (generated once, 0600 under ~/.sage/, handed to
the roles as a file path) and Redis's password file.

Rendering an inventory only names these files and checks the password file's mode: it writes nothing. The token
is made (ray_token.py) by the run that needs it: `sage` before each run (sage_cluster/security.py), and the
sage_ray_node action plugin on the controller for ansible-playbook and AWX.
"""
from __future__ import annotations

from pathlib import Path

from ansible_collections.sage.cluster.plugins.plugin_utils.config import STATE_DIR, Config, ConfigError

TOKEN_FILE = STATE_DIR / "ray_auth_token"
# The cluster's CA (security.tls: on), and this machine's client cert: plugin_utils/tls.py.
TLS_DIR = STATE_DIR / "tls"


def token_enabled(cfg: Config) -> bool:
    return cfg["security"]["ray_auth"] == "token"


def token_path() -> Path:
    return TOKEN_FILE.expanduser()


def tls_enabled(cfg: Config) -> bool:
    return cfg["security"]["tls"] == "on"


def tls_dir() -> Path:
    return TLS_DIR.expanduser()


def redis_password_path(cfg: Config) -> Path | None:
    """The controller file with Redis's password, when the GCS keeps its tables in a Redis that needs one."""
    head = cfg["head"]
    if head["fault_tolerance"] != "redis" or head["redis_password_file"] is None:
        return None
    return Path(head["redis_password_file"]).expanduser()


def check_redis_password_file(cfg: Config) -> None:
    """Refuse a password file that others can read (as ssh refuses such a key), or that is not there."""
    path = redis_password_path(cfg)
    if path is None:
        return
    where = cfg.where("head.redis_password_file")
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise ConfigError(f"{where} = {str(path)!r}: cannot read it ({exc.strerror}). Fix: write Redis's password "
                          f"into it (chmod 600).") from None
    if mode & 0o077:
        raise ConfigError(f"{where} = {str(path)!r} is readable by others (mode {mode & 0o777:o}). "
                          f"Fix: chmod 600 {path}.")
