"""The controller's Ray auth token file, made the first time a run needs it.

A module of its own: the sage_ray_node action plugin imports it in every forked worker, and must not pay there for
the config loader (security.py, which names the file, imports it).
"""
from __future__ import annotations

import os
import secrets
from pathlib import Path


def ensure_token(path: Path) -> Path:
    """The token file at `path`, created (a new random token, 0600, in a 0700 dir) when it does not exist."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path
    with os.fdopen(fd, "w") as fh:
        fh.write(secrets.token_hex(32) + "\n")
    return path


def read_token(path: Path) -> str:
    """The token in the file at `path`, made first when there is none."""
    return ensure_token(path).read_text().strip()
