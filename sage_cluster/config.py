"""The config file: schema, defaults, load + validate, and round-trip edits.

This module is the one source of truth for every config key: the CLI, the inventory source for
ansible-playbook/AWX, the template written by `sage config init` and the README's reference all read SCHEMA.
"""
from __future__ import annotations

import difflib
import ipaddress
import os
import re
import socket
import sys
import tempfile
from dataclasses import dataclass, field
from io import StringIO
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.constructor import DuplicateKeyError
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.scalarstring import DoubleQuotedScalarString

DEFAULT_PATH = Path("~/.sage/config.yaml")
WORKERS_KEY = "workers_ssh_hosts"


class ConfigError(Exception):
    """A user mistake in the config or an argument: one line, exit 2."""


@dataclass(frozen=True)
class Key:
    section: str
    name: str
    default: Any
    kind: str  # host | bind_host | port | timeout | abs_path | local_path | text | choice | list
    help: str
    choices: tuple[str, ...] = ()

    @property
    def dotted(self) -> str:
        return f"{self.section}.{self.name}"


# The guide's keys and example values first, then this product's additions (deploy, security, ssh policy).
SCHEMA: tuple[Key, ...] = (
    Key("head", "host", "base-sage", "host", "head node host name or IP"),
    Key("head", "head_port", 6379, "port", "Ray cluster (GCS) port"),
    Key("head", "dashboard_port", 8265, "port", "Ray dashboard port"),
    Key("head", "dashboard_host", "0.0.0.0", "host", "dashboard bind address (0.0.0.0 = all interfaces)"),
    Key("head", "temp_dir", "/tmp/ray_head", "abs_path", "Ray temp dir on the head"),
    Key("head", "log_dir", "/tmp/sage_head_logs", "abs_path", "log dir on the head"),
    Key("worker", "bind_host", "localhost", "bind_host",
        'IP a worker binds to; "localhost" means: use the worker\'s own host name'),
    Key("worker", "temp_dir", "/tmp/ray_worker", "abs_path", "Ray temp dir on workers"),
    Key("worker", "log_dir", "/tmp/sage_worker_logs", "abs_path", "log dir on workers"),
    Key("ssh", "user", "sage", "text", "SSH login user"),
    Key("ssh", "key_path", "~/.ssh/id_rsa", "local_path", "SSH private key"),
    Key("ssh", "connect_timeout", 10, "timeout", "SSH connect timeout (seconds)"),
    Key("ssh", "strict_host_key_checking", "accept-new", "choice",
        "host key policy: yes | accept-new (learn a new host's key once) | no", ("yes", "accept-new", "no")),
    Key("ssh", "known_hosts", "~/.sage/known_hosts", "local_path", "known_hosts file the tool checks host keys against"),
    Key("remote", "sage_home", "/home/sage", "abs_path", "project directory on remote nodes"),
    Key("remote", "python_path", "/opt/conda/envs/sage/bin/python", "abs_path", "remote Python interpreter"),
    Key("remote", "ray_command", "/opt/conda/envs/sage/bin/ray", "abs_path", "remote ray executable"),
    Key("remote", "conda_env", "sage", "text", 'conda env to activate ("" = none)'),
    Key("deploy", "source", ".", "local_path", "local project directory that deploy copies (default: the current one)"),
    Key("deploy", "exclude", [], "list", "extra rsync exclude patterns, added to the built-in ones"),
)
SECTIONS = tuple(dict.fromkeys(k.section for k in SCHEMA))
WORKERS_DEFAULT = "sage2:22,sage4:22"
WORKERS_HELP = "worker SSH hosts, host:port, comma separated (or a YAML list)"

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*\.?$")


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int = 22

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass
class Config:
    """The effective config: every section filled with defaults, workers parsed."""

    values: dict[str, dict[str, Any]]
    workers: list[Endpoint]
    path: Path | None  # None: the built-in single-machine default
    warnings: list[str] = field(default_factory=list)

    def __getitem__(self, section: str) -> dict[str, Any]:
        return self.values[section]

    @property
    def head(self) -> Endpoint:
        return Endpoint(self.values["head"]["host"], 22)

    @property
    def is_builtin(self) -> bool:
        return self.path is None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {s: dict(v) for s, v in self.values.items()}
        out[WORKERS_KEY] = [str(w) for w in self.workers]
        return out


# ---------------------------------------------------------------- finding and loading

def resolve_path(explicit: str | os.PathLike | None) -> tuple[Path, bool]:
    """The config path and whether the user named it (--config or $SAGE_CONFIG)."""
    if explicit:
        return Path(explicit).expanduser(), True
    if os.environ.get("SAGE_CONFIG"):
        return Path(os.environ["SAGE_CONFIG"]).expanduser(), True
    return DEFAULT_PATH.expanduser(), False


def load(explicit: str | os.PathLike | None = None) -> Config:
    """Load and validate; a missing default file means the built-in single-machine default."""
    path, named = resolve_path(explicit)
    if not path.exists():
        if named:
            raise ConfigError(f"{path}: no such config file. Fix: create it with `sage config init --config {path}`.")
        return builtin_default()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the config ({exc}).") from None
    return parse(text, path)


def builtin_default() -> Config:
    """This machine as a one-node cluster: head over a local connection, no workers, dashboard on loopback."""
    values = {s: {k.name: _copy(k.default) for k in SCHEMA if k.section == s} for s in SECTIONS}
    ray = Path(sys.executable).with_name("ray")
    values["head"].update(host="localhost", dashboard_host="127.0.0.1")
    values["ssh"]["user"] = _current_user()
    values["remote"].update(python_path=sys.executable, ray_command=str(ray), conda_env="",
                            sage_home=str(Path.home()))
    return Config(values=values, workers=[], path=None)


def _current_user() -> str:
    import getpass
    return getpass.getuser()


def _copy(value: Any) -> Any:
    return list(value) if isinstance(value, list) else value


def _yaml() -> YAML:
    y = YAML(typ="rt")
    y.preserve_quotes = True
    y.allow_duplicate_keys = False
    return y


def _read_doc(text: str, path: Path) -> Any:
    try:
        return _yaml().load(text)
    except DuplicateKeyError as exc:
        mark = exc.problem_mark
        key = (exc.problem or "").split('"')[1] if '"' in (exc.problem or "") else "?"
        raise ConfigError(f"{path}:{mark.line + 1}: key '{key}' appears twice. Fix: keep one of them.") from None
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f":{mark.line + 1}" if mark else ""
        what = (exc.problem or exc.context or "invalid YAML").strip()
        hint = " (tabs are not allowed for indentation; use spaces)" if "\t" in _line(text, mark) else ""
        raise ConfigError(f"{path}{line}: not valid YAML: {what}{hint}. Fix: correct the YAML syntax there.") from None
    except YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}".replace("\n", " ")) from None


def _line(text: str, mark: Any) -> str:
    if mark is None:
        return text
    lines = text.splitlines()
    return lines[mark.line] if 0 <= mark.line < len(lines) else ""


def parse(text: str, path: Path) -> Config:
    doc = _read_doc(text, path)
    if doc is None:
        doc = CommentedMap()
    if not isinstance(doc, CommentedMap):
        raise ConfigError(f"{path}:1: the config must be a mapping of sections (head:, worker:, ssh:, ...), "
                          f"not a {_kind(doc)}. Fix: start from `sage config init`.")
    warnings: list[str] = []
    values: dict[str, dict[str, Any]] = {}
    for key in doc:
        if key != WORKERS_KEY and key not in SECTIONS:
            warnings.append(_unknown(path, _key_line(doc, key), str(key), [*SECTIONS, WORKERS_KEY]))
    for section in SECTIONS:
        keys = [k for k in SCHEMA if k.section == section]
        raw = doc.get(section)
        line = _key_line(doc, section)
        if raw is None:
            raw = CommentedMap()
        if not isinstance(raw, CommentedMap):
            raise ConfigError(f"{path}:{line}: '{section}' must be a mapping of keys, not a {_kind(raw)}. "
                              f"Fix: indent its keys under '{section}:'.")
        for name in raw:
            if name not in {k.name for k in keys}:
                warnings.append(_unknown(path, _key_line(raw, name), f"{section}.{name}", [k.name for k in keys]))
        values[section] = {}
        for k in keys:
            if k.name in raw:
                values[section][k.name] = check_value(k, raw[k.name], f"{path}:{_key_line(raw, k.name)}")
            else:
                values[section][k.name] = _copy(k.default)
    if WORKERS_KEY in doc:
        workers = parse_workers(doc[WORKERS_KEY], f"{path}:{_key_line(doc, WORKERS_KEY)}")
    else:
        workers = parse_workers(WORKERS_DEFAULT, str(path))
    cfg = Config(values=values, workers=workers, path=path, warnings=warnings)
    _check_cluster(cfg, f"{path}:{_key_line(doc, WORKERS_KEY) if WORKERS_KEY in doc else 1}")
    return cfg


def _key_line(mapping: Any, key: Any) -> int:
    try:
        return mapping.lc.key(key)[0] + 1
    except (AttributeError, KeyError, TypeError):
        return getattr(getattr(mapping, "lc", None), "line", 0) + 1


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    return {dict: "mapping", CommentedMap: "mapping", list: "list", CommentedSeq: "list", str: "string",
            int: "integer", float: "number"}.get(type(value), "string" if isinstance(value, str) else
                                                  type(value).__name__)


def _unknown(path: Path, line: int, key: str, known: list[str]) -> str:
    leaf = key.rsplit(".", 1)[-1]
    close = difflib.get_close_matches(leaf, known, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else f" (known: {', '.join(known)})"
    return f"{path}:{line}: unknown key '{key}' is ignored{hint}"


# ---------------------------------------------------------------- values

def check_value(key: Key, value: Any, where: str) -> Any:
    """Return the value as the program uses it, or raise a one-line ConfigError."""
    label = f"{where}: '{key.dotted}'"
    if value is None or (isinstance(value, str) and not value.strip() and key.name != "conda_env"):
        raise ConfigError(f"{label} is empty. Fix: set it, or delete the line to use the default "
                          f"({_show(key.default)}).")
    if key.kind in ("port", "timeout"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{label} must be a whole number, not {_kind(value)} {_show(value)}. "
                              f"Fix: write it without quotes, e.g. {key.default}.")
        top = 65535 if key.kind == "port" else 3600
        if not 1 <= value <= top:
            raise ConfigError(f"{label} = {value} is out of range. Fix: use 1-{top}.")
        return int(value)
    if key.kind == "list":
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise ConfigError(f"{label} must be a list of strings. Fix: e.g. [\"data/\", \"*.log\"].")
        return [str(v) for v in value]
    if not isinstance(value, str):
        raise ConfigError(f"{label} must be a string, not {_kind(value)} {_show(value)}. Fix: quote it.")
    value = str(value)
    if "\n" in value or "\0" in value:
        raise ConfigError(f"{label} contains a line break. Fix: put it on one line.")
    if key.kind == "host" or (key.kind == "bind_host" and value != "localhost"):
        _check_host(value, label)
    elif key.kind == "abs_path" and not value.startswith("/"):
        raise ConfigError(f"{label} = {value!r} must be an absolute path. Fix: start it with /.")
    elif key.kind == "choice" and value not in key.choices:
        raise ConfigError(f"{label} = {value!r} is not one of {', '.join(key.choices)}.")
    elif key.kind == "text" and value and not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", value):
        raise ConfigError(f"{label} = {value!r} may hold only letters, digits, '_', '.', '-'.")
    return value


def _show(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def is_valid_host(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
        return True
    except ValueError:
        return len(value) <= 253 and bool(_HOSTNAME.match(value)) and not value.replace(".", "").isdigit()


def _check_host(value: str, label: str) -> None:
    if not is_valid_host(value):
        raise ConfigError(f"{label} = {value!r} is not a host name or IP address. "
                          "Fix: use letters, digits, '-' and '.' only (RFC 1123), or an IP.")


def parse_endpoint(text: Any, where: str) -> Endpoint:
    """'host' or 'host:port' -> Endpoint; anything else is a one-line ConfigError."""
    if isinstance(text, bool) or not isinstance(text, (str, int)):
        raise ConfigError(f"{where}: worker {_show(text)} must be a 'host:port' string.")
    text = str(text).strip()
    host, sep, port_text = text.partition(":")
    if not host:
        raise ConfigError(f"{where}: worker {text!r} has no host. Fix: write it as host:port, e.g. sage5:22.")
    if ":" in port_text:
        raise ConfigError(f"{where}: worker {text!r} has more than one ':'. Fix: write it as host:port.")
    _check_host(host, f"{where}: worker")
    port = 22
    if sep:
        if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
            raise ConfigError(f"{where}: worker {text!r} has a bad port {port_text!r}. Fix: use a port 1-65535.")
        port = int(port_text)
    return Endpoint(host, port)


def parse_workers(raw: Any, where: str) -> list[Endpoint]:
    if raw is None:
        return []
    if isinstance(raw, str):
        items = [part for part in (p.strip() for p in raw.split(",")) if part]
    elif isinstance(raw, list):
        items = list(raw)
    else:
        raise ConfigError(f"{where}: '{WORKERS_KEY}' must be a \"host:port,host:port\" string or a list, "
                          f"not {_kind(raw)} {_show(raw)}. Fix: e.g. \"sage2:22,sage4:22\".")
    workers = [parse_endpoint(item, where) for item in items]
    seen: set[str] = set()
    for w in workers:
        if w.host in seen:
            raise ConfigError(f"{where}: worker host {w.host!r} is listed twice. Fix: list each host once.")
        seen.add(w.host)
    return workers


def _check_cluster(cfg: Config, where: str) -> None:
    if any(w.host == cfg["head"]["host"] for w in cfg.workers):
        raise ConfigError(f"{where}: the head {cfg['head']['host']!r} is also listed as a worker; the head already "
                          "runs a Ray node. Fix: remove it from workers_ssh_hosts.")


def is_this_machine(host: str) -> bool:
    """Whether a host name names the controller itself (then Ansible uses a local connection)."""
    if host in ("localhost", "127.0.0.1", "::1"):
        return True
    return host in {socket.gethostname(), socket.getfqdn()}


# ---------------------------------------------------------------- writing

def template_text() -> str:
    """The guide's config file, with every key and a comment on each."""
    out = ["# sage-cluster config. Every key is optional; a missing key takes the value shown here.", ""]
    for section in SECTIONS:
        keys = [k for k in SCHEMA if k.section == section]
        out.append(f"{section}:")
        for k in keys:
            out.append(f"  {k.name}: {_yaml_scalar(k.default)}  # {k.help}")
        if section == "worker":
            out.append(f'{WORKERS_KEY}: "{WORKERS_DEFAULT}"  # {WORKERS_HELP}')
    return "\n".join(out) + "\n"


def _yaml_scalar(value: Any) -> str:
    if isinstance(value, list):
        return "[]" if not value else "[" + ", ".join(f'"{v}"' for v in value) + "]"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return str(value)


def write_atomic(path: Path, text: str) -> None:
    """Old file or new file, never a mix: temp file in the same dir, fsync, rename."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o600
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
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


def edit_workers(path: Path, add: Endpoint | None = None, remove: Endpoint | None = None) -> Config:
    """Add or remove one worker in the file, keeping comments, key order and the string-or-list form."""
    text = path.read_text(encoding="utf-8")
    current = parse(text, path)
    listed = {w.host: w for w in current.workers}
    if add is not None:
        if add.host in listed:
            raise ConfigError(f"{path}: worker {add.host!r} is already listed (as {listed[add.host]}).")
        if add.host == current["head"]["host"]:
            raise ConfigError(f"{path}: {add.host!r} is the head; it cannot also be a worker.")
    if remove is not None and (remove.host not in listed or listed[remove.host].port != remove.port):
        names = ", ".join(map(str, current.workers)) or "none"
        raise ConfigError(f"{path}: worker {remove} is not listed (workers: {names}). Nothing was changed.")
    doc = _read_doc(text, path)
    if doc is None:
        doc = CommentedMap()
    raw = doc.get(WORKERS_KEY)
    if raw is None:
        raw = WORKERS_DEFAULT if WORKERS_KEY not in doc else ""
    if isinstance(raw, list):
        if remove is not None:
            for i, item in enumerate(list(raw)):
                if parse_endpoint(item, str(path)).host == remove.host:
                    del raw[i]
                    break
        if add is not None:
            raw.append(str(add))
    else:
        items = [w for w in current.workers if remove is None or w.host != remove.host]
        if add is not None:
            items.append(add)
        new = ",".join(map(str, items))
        # Keep the user's quoting style; a key that was absent is written quoted, as in the guide.
        doc[WORKERS_KEY] = type(raw)(new) if WORKERS_KEY in doc else DoubleQuotedScalarString(new)
    buf = StringIO()
    _yaml().dump(doc, buf)
    new_text = buf.getvalue()
    updated = parse(new_text, path)
    write_atomic(path, new_text)
    return updated
