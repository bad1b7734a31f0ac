"""Round-trip edits of the config file: add or remove one worker, keeping every other byte; atomic writes.

Apart from config.py (schema, loading, validation) because this is the riskiest code: a text splicer for the
worker list's value (workers_ssh_hosts, or SAGE's ssh.workers: whichever the file uses, both when it has both),
with a ruamel round trip as its fallback, each result checked by loading it again.
"""
from __future__ import annotations

import json
import os
import re
import tempfile
from io import StringIO
from pathlib import Path
from typing import Any

from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError
from ruamel.yaml.scalarstring import DoubleQuotedScalarString

from ansible_collections.sage.cluster.plugins.plugin_utils.config import (
    WORKERS_KEY, Config, ConfigError, Endpoint, host_key, parse, parse_endpoint, read_exact, round_trip_yaml)


def write_atomic(path: Path, text: str) -> None:
    """Old file or new file, never a mix: temp file in the same dir, fsync, rename. Keeps the file's mode;
    a symlinked config stays a symlink (its target is replaced). Text is written as given (no newline changes)."""
    path = Path(os.path.realpath(path)) if Path(path).is_symlink() else Path(path)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    mode = path.stat().st_mode & 0o7777 if path.exists() else 0o600
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def edit_workers(path: Path, add: Endpoint | None = None, remove: Endpoint | None = None,
                 dry_run: bool = False, settings: dict[str, Any] | None = None) -> Config:
    """Add or remove one worker in the file, keeping comments, key order and the string-or-list form.

    The edit is a splice of the file's text: every byte outside workers_ssh_hosts' value stays as it was.
    dry_run: check and return the edited config, leave the file alone (check mode).
    settings: the added worker's own Ray resource keys (num_gpus, resources, ...), already checked; the worker is
    then written as a mapping, and a string-form workers_ssh_hosts becomes a list.
    """
    path = Path(path)
    text = read_exact(path)
    current = parse(text, path)
    listed = {host_key(w.host): w for w in current.workers}
    if add is not None:
        if host_key(add.host) in listed:
            raise ConfigError(f"{path}: worker {add.host!r} is already listed (as {listed[host_key(add.host)]}). "
                              "Fix: nothing to add; `sage worker config` lists the workers.")
        if host_key(add.host) == host_key(current["head"]["host"]):
            raise ConfigError(f"{path}: {add.host!r} is the head; it cannot also be a worker. "
                              "Fix: add a different host.")
    if remove is not None:
        found = listed.get(host_key(remove.host))
        if found is None or found.port != remove.port:
            names = ", ".join(map(str, current.workers)) or "none"
            raise ConfigError(f"{path}: worker {remove} is not listed (workers: {names}); nothing was changed. "
                              "Fix: name one of the listed workers as host:port.")
    expected = [w for w in current.workers if remove is None or host_key(w.host) != host_key(remove.host)]
    if add is not None:
        expected.append(add)
    expected_nodes = {h: v for h, v in current.worker_overrides.items()
                      if remove is None or host_key(h) != host_key(remove.host)}
    if add is not None and settings:
        expected_nodes[add.host] = {"worker": dict(settings)}
    for make in (_splice_workers, _dump_workers):
        new_text: str | None = text
        try:
            # Both lists present (they are equal): both get the same edit.
            for key in current.workers_keys or (WORKERS_KEY,):
                if new_text is not None:
                    new_text = make(new_text, path, key, expected, add, remove, settings=settings or None)
        except (YAMLError, ValueError, IndexError, AttributeError, TypeError, KeyError):
            new_text = None
        if new_text is None:
            continue
        try:
            updated = parse(new_text, path)
        except ConfigError:
            continue
        if (updated.workers == expected and updated.values == current.values
                and updated.worker_overrides == expected_nodes):
            if not dry_run:
                write_atomic(path, new_text)
            return updated
    raise ConfigError(f"{path}: could not rewrite {current.workers_key} safely; nothing was changed. "
                      f"Fix: edit {current.workers_key} in the file by hand.")


def _render_like(value: str, style: str | None) -> str:
    if style == "'":
        return "'" + value.replace("'", "''") + "'"
    if style == '"' or not value:
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return value


def _mapping_item(add: Endpoint, settings: dict[str, Any]) -> str:
    """A worker with settings of its own as a one-line flow mapping: {host: "gpu5", port: 22, num_gpus: 4}."""
    def flow(value: Any) -> str:
        if isinstance(value, dict):  # names and values in JSON's quoting: valid YAML, never a YAML keyword
            return "{" + ", ".join(f"{json.dumps(str(k))}: {flow(v)}" for k, v in value.items()) + "}"
        return json.dumps(value)
    parts = [f"host: {json.dumps(add.host)}", f"port: {add.port}"]
    return "{" + ", ".join(parts + [f"{k}: {flow(v)}" for k, v in settings.items()]) + "}"


def _item_host(node: Any, path: Path) -> str:
    """The host of a workers_ssh_hosts item node: a "host:port" scalar or a mapping with host."""
    from ruamel.yaml.nodes import MappingNode

    if isinstance(node, MappingNode):
        return next(v.value for k, v in node.value if k.value == "host")
    return parse_endpoint(node.value, str(path)).host


def _item_end(node: Any) -> int:
    """Where an item's own text ends: a block mapping's end mark lies on the next line, its last value's does not."""
    from ruamel.yaml.nodes import MappingNode, SequenceNode

    if isinstance(node, (MappingNode, SequenceNode)) and not node.flow_style and node.value:
        last = node.value[-1]
        return _item_end(last[1] if isinstance(node, MappingNode) else last)
    return node.end_mark.index


def _value_pair(root: Any, key: str) -> Any:
    """The (key node, value node) of a worker list key ("workers_ssh_hosts", "ssh.workers"); None when absent.
    A layout the splicer does not handle (a flow-style mapping on the way) is a ValueError."""
    from ruamel.yaml.nodes import MappingNode, ScalarNode

    node, pair = root, None
    for name in key.split("."):
        if node is None:
            return None
        if not isinstance(node, MappingNode) or node.flow_style:
            raise ValueError(key)
        pair = next(((k, v) for k, v in node.value if isinstance(k, ScalarNode) and k.value == name), None)
        if pair is None:
            return None
        node = pair[1]
    return pair


def _block_mapping_item(add: Endpoint, prefix: str, nl: str) -> str:
    """A new worker in the form of the list's other items, block mappings: host: "x" / port: 22 beneath it."""
    return f"host: {json.dumps(add.host)}{nl}{' ' * len(prefix)}port: {add.port}"


def _splice_workers(text: str, path: Path, list_key: str, expected: list[Endpoint],
                    add: Endpoint | None, remove: Endpoint | None, settings: dict[str, Any] | None = None
                    ) -> str | None:
    """Replace only the text of the worker list's value; None when the layout is one this does not handle."""
    from ruamel.yaml.nodes import MappingNode, ScalarNode, SequenceNode

    nl = "\r\n" if "\r\n" in text else "\n"
    root = round_trip_yaml().compose(text)
    joined = ",".join(map(str, expected))

    def scalar_value(style: str | None) -> str:
        """The new text of a string-form value. It cannot hold a mapping: with settings (which come with the added
        worker, the list's last) it becomes a flow list."""
        if not settings:
            return _render_like(joined, style)
        items = [*(json.dumps(str(w)) for w in expected[:-1]), _mapping_item(expected[-1], settings)]
        return "[" + ", ".join(items) + "]"
    if add is not None and remove is not None:
        return None
    if root is not None and (not isinstance(root, MappingNode) or root.flow_style):
        return None
    pair = _value_pair(root, list_key)
    if pair is None:
        # No worker list: write one, as a new last line.
        if list_key != WORKERS_KEY or re.search(r"^\.\.\.[ \t]*\r?$", text, re.M):
            return None
        sep = "" if not text or text.endswith(("\n", "\r")) else nl
        return text + sep + f"{WORKERS_KEY}: " + scalar_value('"') + nl
    key, node = pair
    if text[key.start_mark.index:key.end_mark.index] != list_key.rsplit(".", 1)[-1]:
        return None
    start, end = node.start_mark.index, node.end_mark.index
    span = text[start:end]
    if isinstance(node, ScalarNode):
        if node.style not in (None, '"', "'") or "\n" in span or "\r" in span:
            return None
        if span == "":  # `workers_ssh_hosts:` with no value
            colon = text.index(":", key.end_mark.index)
            return text[:colon + 1] + " " + scalar_value('"') + text[colon + 1:]
        if node.style is None and span in ("~", "null", "Null", "NULL"):
            return text[:start] + scalar_value('"') + text[end:]
        if not isinstance(round_trip_yaml().load(span), str) and node.style is None:
            return None
        return text[:start] + scalar_value(node.style) + text[end:]
    if not isinstance(node, SequenceNode):
        return None
    items = list(node.value)
    if not all(isinstance(i, (ScalarNode, MappingNode)) for i in items):
        return None
    kept = [i for i in items if remove is None or host_key(_item_host(i, path)) != host_key(remove.host)]
    like = next((i.style for i in reversed(items) if isinstance(i, ScalarNode)), None)
    new_item = _mapping_item(add, settings) if add is not None and settings else _render_like(str(add), like)
    if node.flow_style:
        if "#" in span:
            return None
        parts = [text[i.start_mark.index:i.end_mark.index] for i in kept]
        if add is not None:
            parts.append(new_item)
        return text[:start] + "[" + ", ".join(parts) + "]" + text[end:]
    out = text
    if remove is not None:
        gone = [i for i in items if i not in kept]
        if len(gone) != 1:
            return None
        item = gone[0]
        line_start = out.rfind("\n", 0, item.start_mark.index) + 1
        if not re.fullmatch(r"[ \t]*-[ \t]+", out[line_start:item.start_mark.index]):
            return None
        line_end = out.find("\n", _item_end(item))
        line_end = len(out) if line_end < 0 else line_end + 1
        if not re.fullmatch(r"[ \t]*(#[^\n]*)?\r?\n?", out[_item_end(item):line_end]):
            return None
        out = out[:line_start] + out[line_end:]
    if add is not None:
        last = items[-1]
        line_start = text.rfind("\n", 0, last.start_mark.index) + 1
        prefix = text[line_start:last.start_mark.index]
        if not re.fullmatch(r"[ \t]*-[ \t]+", prefix):
            return None
        if isinstance(last, MappingNode) and not last.flow_style and not settings:
            new_item = _block_mapping_item(add, prefix, nl)
        line_end = text.find("\n", _item_end(last))
        new_line = prefix + new_item + nl
        if line_end < 0:
            out = text + nl + new_line
        else:
            out = text[:line_end + 1] + new_line + text[line_end + 1:]
    return out


def _dump_workers(text: str, path: Path, list_key: str, expected: list[Endpoint],
                  add: Endpoint | None, remove: Endpoint | None, settings: dict[str, Any] | None = None
                  ) -> str | None:
    """The fallback: a ruamel round trip (keeps comments and order, may re-indent)."""
    doc = round_trip_yaml().load(text)
    if doc is None:
        doc = CommentedMap()
    *outer, name = list_key.split(".")
    container = doc[outer[0]] if outer else doc
    raw = container.get(name)
    if settings and not isinstance(raw, list):
        raw = container[name] = CommentedSeq(str(w) for w in expected[:-1])
        raw.fa.set_flow_style()
    if isinstance(raw, list):
        for i, item in enumerate(list(raw)):
            host = item["host"] if isinstance(item, dict) else parse_endpoint(item, str(path)).host
            if remove is not None and host_key(host) == host_key(remove.host):
                del raw[i]
                break
        if add is not None and settings:
            item = CommentedMap([("host", add.host), ("port", add.port), *settings.items()])
            item.fa.set_flow_style()
            raw.append(item)
        elif add is not None:
            raw.append(str(add))
    else:
        new = ",".join(map(str, expected))
        container[name] = type(raw)(new) if isinstance(raw, str) else DoubleQuotedScalarString(new)
    buf = StringIO()
    round_trip_yaml().dump(doc, buf)
    return buf.getvalue()
