"""The project a deploy sends: which files (rsync's exclude rules), their revision, and what must never go.

Standard library only: the package and the sage_deploy role's sage_source plugin import this one module, so
every door (sage, ansible-playbook, AWX) computes the same revision and refuses the same sources.
"""
from __future__ import annotations

import fnmatch
import hashlib
import os
from pathlib import Path

# Never copied: build output, caches, and the controller's secrets should a source contain a home directory.
EXCLUDES = [".git", "__pycache__", "*.pyc", ".venv", "node_modules", "build/", "dist/", "*.egg-info",
            ".ssh/", ".sage/", ".ray/"]
# The files whose change means the project must be installed again (deploy.install: auto).
PACKAGING = ("pyproject.toml", "setup.py", "setup.cfg", "requirements.txt")
# Directories of this machine that a deploy must never send (keys, sage's token, Ray's token).
SECRET_DIRS = ("~/.ssh", "~/.sage", "~/.ray")


def is_packaged(src: str | os.PathLike) -> bool:
    """Whether the source is a pip-installable project (deploy.install auto installs only then)."""
    return any((Path(src).expanduser() / f).is_file() for f in ("pyproject.toml", "setup.py"))


def problem(src: str | os.PathLike, key_path: str | None = None) -> str | None:
    """Why this directory must not be deployed, or None when it may."""
    path = Path(src).expanduser().resolve()
    if not path.is_dir():
        return f"{path} is not a directory"
    secrets = [Path(p).expanduser().resolve() for p in SECRET_DIRS]
    if key_path:
        secrets.append(Path(key_path).expanduser().resolve())
    home = Path.home().resolve()
    if path in (Path("/"), home):
        return f"{path} is {'the root directory' if path == Path('/') else 'your home directory'}"
    for secret in secrets:
        if secret.exists() and (secret == path or path in secret.parents):
            return f"{path} contains {secret}"
    return None


def excluded(rel: str, is_dir: bool, patterns: list[str]) -> bool:
    """rsync's exclude rules for one path relative to the source: a pattern with no '/' matches any path
    component's name, one with a '/' matches the path's end (a leading '/' anchors it at the source), and a
    trailing '/' matches directories only."""
    name = rel.rsplit("/", 1)[-1]
    for pattern in patterns:
        if pattern.endswith("/"):
            if not is_dir:
                continue
            pattern = pattern.rstrip("/")
        if "/" not in pattern:
            hit = fnmatch.fnmatchcase(name, pattern)
        elif pattern.startswith("/"):
            hit = fnmatch.fnmatchcase(rel, pattern[1:])
        else:
            hit = fnmatch.fnmatchcase(rel, pattern) or fnmatch.fnmatchcase(rel, "*/" + pattern)
        if hit:
            return True
    return False


def files(src: str | os.PathLike, patterns: list[str]) -> list[str]:
    """The relative paths of the files and links a deploy sends, sorted."""
    root = str(Path(src).expanduser().resolve())
    found = []
    for top, dirs, names in os.walk(root):
        rel_top = os.path.relpath(top, root)
        prefix = "" if rel_top == "." else rel_top + "/"
        dirs[:] = sorted(d for d in dirs if not excluded(prefix + d, True, patterns))
        found += [prefix + n for n in names if not excluded(prefix + n, False, patterns)]
    return sorted(found)


def revision(src: str | os.PathLike, patterns: list[str], only: tuple[str, ...] | None = None) -> str:
    """A content hash of what a deploy sends (names, contents, executable bits, link targets); with `only`,
    of those top-level files alone. Same tree, same revision, on any machine."""
    root = Path(src).expanduser().resolve()
    digest = hashlib.sha256()
    for rel in (f for f in files(root, patterns) if only is None or f in only):
        path = root / rel
        if path.is_symlink():
            body = b"link:" + os.readlink(path).encode()
        else:
            try:
                body = hashlib.sha256(path.read_bytes()).digest() + bytes([os.access(path, os.X_OK)])
            except OSError:  # unreadable: rsync will say so; the revision still moves when it changes
                body = b"unreadable"
        digest.update(rel.encode() + b"\0" + body + b"\0")
    return digest.hexdigest()[:12]
