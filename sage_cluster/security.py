"""The Ray auth token: generated once, kept 0600 under ~/.sage/, handed to the roles as a file path."""
from __future__ import annotations

import os
import secrets
from pathlib import Path

from sage_cluster.config import Config

TOKEN_FILE = Path("~/.sage/ray_auth_token")


def token_enabled(cfg: Config) -> bool:
    return cfg["security"]["ray_auth"] == "token"


def ensure_token() -> Path:
    """The controller's token file, created (0600, in a 0700 dir) the first time it is needed."""
    path = TOKEN_FILE.expanduser()
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
