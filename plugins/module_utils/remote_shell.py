"""Words for the fixed shell commands the roles' action plugins run on a node (the values never leave quotes)."""
from __future__ import annotations

import shlex


def shell_path(path, quote=shlex.quote):
    """path as one word of a POSIX shell command on the node: a leading ~/ becomes "$HOME"/, the rest is quoted
    (a quoted ~ would not expand)."""
    return '"$HOME"/' + quote(path[2:]) if path.startswith("~/") else quote(path)
