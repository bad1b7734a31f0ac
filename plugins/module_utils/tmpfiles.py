"""Whether systemd-tmpfiles' age cleanup deletes files under a node's Ray dirs (tmpfiles.d(5)).

Debian 13 makes /tmp a tmpfs that `systemd-tmpfiles --clean` (a daily timer) empties of files unused for 10 days
(tmp.conf: `D /tmp 1777 root root 10d`, upstream `q`), and the guide's temp and log dirs are under /tmp: a node
that runs for weeks loses Ray's session files (sockets, ports, logs) under it. Doctor warns with the fix.

parse() and cleaner() are pure (tests/unit/test_tmpfiles.py); config_text() reads the node's configuration.
"""
from __future__ import annotations

import fnmatch
import os
import shlex
import subprocess

# Line types whose age field makes `systemd-tmpfiles --clean` delete what is older than it (tmpfiles.d(5), "Age").
AGED_TYPES = "dDevqQC"
# x excludes a path and what is under it from every cleanup; X only the directory itself, not its content.
EXCLUDE, EXCLUDE_DIR_ONLY = "x", "X"
# The system's configuration directories, first wins for files of the same name (tmpfiles.d(5)).
CONFIG_DIRS = ("/etc/tmpfiles.d", "/run/tmpfiles.d", "/usr/local/lib/tmpfiles.d", "/usr/lib/tmpfiles.d")
# Where an admin keeps a node's Ray dirs out of the cleanup (doctor's fix).
EXCLUSION_FILE = "/etc/tmpfiles.d/sage-ray.conf"


def parse(text):
    """`systemd-tmpfiles --cat-config` output -> its lines, in order: {type, path, age, boot_only, line, file}
    (file: the `# /path.conf` header above it, or None)."""
    rules, source = [], None
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("# /") and line.endswith(".conf"):
            source = line[2:]
            continue
        if not line or line.startswith("#"):
            continue
        try:
            fields = shlex.split(line)
        except ValueError:
            continue  # tmpfiles refuses a line it cannot split too
        if len(fields) < 2:
            continue
        rules.append({"type": fields[0][0], "path": fields[1], "age": fields[5] if len(fields) > 5 else "-",
                      # "!": only run at boot (--boot), never by the cleanup timer's --clean.
                      "boot_only": "!" in fields[0], "line": line, "file": source})
    return rules


def matches(pattern, path):
    """Whether a line's path (a shell glob for x and X) names path; a glob's * never crosses a / (FNM_PATHNAME)."""
    want, have = os.path.normpath(pattern).split("/"), path.split("/")
    return len(want) == len(have) and all(fnmatch.fnmatchcase(h, w) for h, w in zip(have, want))


def cleans(rule):
    return rule["type"] in AGED_TYPES and not rule["boot_only"] and rule["age"] not in ("-", "")


def cleaner(path, rules):
    """The line whose age cleanup deletes old files under directory path, or None.

    A cleanup skips every entry that has a line of its own (and, for x, what is under it), so the nearest of path
    and its parents that has lines decides: an x line keeps it; else its first line (the one tmpfiles applies when
    several name one path) cleans when it has an age, and keeps it from the cleanups above when it has none. An X
    line excludes only the directory itself: the parents' cleanup still reaches its content."""
    path = os.path.normpath(path)
    while True:
        here = [r for r in rules if matches(r["path"], path)]
        if any(r["type"] == EXCLUDE for r in here):
            return None
        first = next((r for r in here if r["type"] != EXCLUDE_DIR_ONLY), None)
        if first is not None:
            return first if cleans(first) else None
        if path == "/":
            return None
        path = os.path.dirname(path)


def config_text(run=subprocess.run, listdir=os.listdir):
    """The node's tmpfiles.d configuration as `systemd-tmpfiles --cat-config` prints it; where that cannot (a
    systemd older than 239), the files read in its order: by name, a name in an earlier directory of CONFIG_DIRS
    hiding the same name in later ones."""
    try:
        proc = run(["systemd-tmpfiles", "--cat-config", "--no-pager"], capture_output=True, text=True, timeout=30,
                   stdin=subprocess.DEVNULL, check=False)
        if proc.returncode == 0:
            return proc.stdout
    except (OSError, subprocess.SubprocessError):
        pass
    found = {}
    for directory in reversed(CONFIG_DIRS):
        try:
            names = listdir(directory)
        except OSError:
            continue
        found.update({name: os.path.join(directory, name) for name in names if name.endswith(".conf")})
    parts = []
    for name in sorted(found):
        try:
            with open(found[name]) as fh:
                parts.append(f"# {found[name]}\n{fh.read()}")
        except OSError:
            continue
    return "\n".join(parts)


def check(path, rules, pid1, config_key):
    """Doctor's row for one of a node's dirs (config_key: the config's key for it): {ok, warn, detail, fix}; a
    warning, never a failure (Ray runs today; the files go after days unused)."""
    if pid1 != "systemd":
        return {"ok": True, "warn": False, "detail": f"{path}: PID 1 is not systemd, no systemd-tmpfiles cleanup",
                "fix": ""}
    rule = cleaner(path, rules)
    if rule is None:
        return {"ok": True, "warn": False, "detail": f"{path}: no systemd-tmpfiles age cleanup reaches it", "fix": ""}
    where = f"{rule['file']}: " if rule["file"] else ""
    return {"ok": True, "warn": True,
            "detail": (f"{path}: systemd-tmpfiles deletes its files unused for {rule['age']} ({where}"
                       f"`{rule['line']}`), so a node that runs for weeks loses Ray's files there"),
            "fix": (f"an admin adds the line `x {path}` to {EXCLUSION_FILE} on the node, or set {config_key} in the "
                    f"config to a directory outside {rule['path']}")}
