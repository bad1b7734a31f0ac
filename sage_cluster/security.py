"""What the controller keeps for a run: the Ray auth token (generated once, 0600 under ~/.sage/, handed to the
roles as a file path) and the known_hosts file ssh learns host keys into.

Rendering an inventory only names these files; prepare_controller() makes them, and only the commands that act
call it (runner.run_playbook, and the inventory source that ansible-playbook and AWX run).
"""
from __future__ import annotations

import os
import secrets
from pathlib import Path

from sage_cluster.config import STATE_DIR, Config, ConfigError

TOKEN_FILE = STATE_DIR / "ray_auth_token"


def token_enabled(cfg: Config) -> bool:
    return cfg["security"]["ray_auth"] == "token"


def token_path() -> Path:
    return TOKEN_FILE.expanduser()


def prepare_controller(cfg: Config) -> None:
    """Make what a playbook run needs on this machine: the token file (when auth is on) and the known_hosts dir."""
    if token_enabled(cfg):
        ensure_token()
    check_redis_password_file(cfg)
    # ssh will not create the file's directory, and then silently learns no key at all.
    Path(cfg["ssh"]["known_hosts"]).expanduser().parent.mkdir(mode=0o700, parents=True, exist_ok=True)


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


def ensure_token() -> Path:
    """The controller's token file, created (0600, in a 0700 dir) the first time it is needed."""
    path = token_path()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path
    with os.fdopen(fd, "w") as fh:
        fh.write(secrets.token_hex(32) + "\n")
    return path


def read_token() -> str:
    return ensure_token().read_text().strip()
