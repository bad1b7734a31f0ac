"""The config file: schema, defaults, load + validate (round-trip edits: config_edit.py).

This module is the one source of truth for every config key: the CLI, the inventory plugin sage.cluster.sage for
ansible-playbook/AWX, the template written by `sage config init` and the README's reference all read SCHEMA.
"""
from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import os
import re
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.constructor import DuplicateKeyError
from ruamel.yaml.error import MarkedYAMLError, YAMLError

# python_path / ray_command AUTO ("auto", or ""): the node finds them itself. The inventory carries the word as
# it is (ray_node_python_path, ray_node_ray_command, sage_deploy_python_path), so every door hands the roles the same.
from ansible_collections.sage.cluster.plugins.module_utils.detect_env import AUTO

# Everything this tool keeps on the controller lives here: the config, runs, locks, known_hosts, the token.
STATE_DIR = Path("~/.sage")
DEFAULT_PATH = STATE_DIR / "config.yaml"
# Names of this machine whatever its host name: a host so named is reached without SSH.
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
WORKERS_KEY = "workers_ssh_hosts"
# SAGE's name for the same list, under ssh: (its Ray-era config/cluster.yaml).
SSH_WORKERS_KEY = "ssh.workers"
# Sections of SAGE's own services in its config/cluster.yaml: theirs, not this tool's.
SAGE_SECTIONS = ("daemon", "jobmanager", "output", "monitor")
# head.fault_tolerance: where the GCS keeps its tables so that a restarted head takes its cluster back (none: in
# its memory, lost with it).
FAULT_TOLERANCE = ("none", "local", "redis")
# remote.supervisor: who keeps a node's Ray running (module_utils/supervisor.py decides `auto` on each node).
SUPERVISORS = ("auto", "systemd", "none")


class ConfigError(Exception):
    """A user mistake in the config or an argument: one line, exit 2."""


@dataclass(frozen=True)
class Key:
    section: str
    name: str
    default: Any
    kind: str  # host | bind_host | port | timeout | abs_path | node_path | env_path | local_path | text | choice | list
    #            | install | redis_address | bool | RAY_KINDS
    help: str
    choices: tuple[str, ...] = ()
    example: str = ""  # shown in the fix of a mistake, where the default is no example
    inherits: str = ""  # a node's own key: null (or absent) takes this section's key of the same name

    @property
    def dotted(self) -> str:
        return f"{self.section}.{self.name}"


@dataclass(frozen=True)
class RayKey:
    """One thing `ray start` offers the scheduler on a node, under every name it goes by. The one table of them:
    the config's keys under head: and worker: (and a worker's mapping), `ray start`'s and `scale add`'s options,
    the ray_node role's variables and the names Ray reports resources under all come from RAY_KEYS."""

    name: str             # the config key, e.g. num_cpus
    kind: str             # count | bytes | resources | labels
    help: str             # with {who}: "the head", "each worker", "this worker"
    ray_name: str = ""    # the resource name Ray reports it under (CPU); "" when it is not one of Ray's own

    @property
    def flag(self) -> str:
        """`ray start`'s option for it, e.g. --num-cpus."""
        return "--" + self.name.replace("_", "-")

    @property
    def var(self) -> str:
        """The ray_node role's variable that carries it."""
        return f"ray_node_{self.name}"


RAY_KEYS = (
    RayKey("num_cpus", "count", "CPUs Ray offers on {who} (null = all it finds; 0 = runs no tasks)", "CPU"),
    RayKey("num_gpus", "count", "GPUs Ray offers on {who} (null = all it finds)", "GPU"),
    RayKey("memory", "bytes", 'memory for tasks on {who}, bytes or e.g. "8GiB" (null = Ray decides)', "memory"),
    RayKey("object_store_memory", "bytes", 'object store size on {who}, bytes or e.g. "2GiB" (null = Ray decides)',
           "object_store_memory"),
    RayKey("resources", "resources", "custom resources of {who}, name: amount, e.g. {{accel: 1}}"),
    RayKey("labels", "labels", "Ray node labels of {who}, e.g. {{zone: a}}"),
)
RAY_KINDS = tuple(dict.fromkeys(k.kind for k in RAY_KEYS))
# Derived views of RAY_KEYS for the code that reads them (kept as names because others import them).
NODE_RAY_KEYS = tuple(k.name for k in RAY_KEYS)
RAY_OWN_RESOURCES = {k.ray_name: k.name for k in RAY_KEYS if k.ray_name}


def _ray_keys(section: str, who: str) -> tuple[Key, ...]:
    """The Ray resource keys of head: or worker: (a worker's defaults)."""
    return tuple(Key(section, k.name, {} if k.kind in ("resources", "labels") else None, k.kind,
                     k.help.format(who=who)) for k in RAY_KEYS)


# The guide's keys and example values first, then this product's additions (deploy, security, ssh policy).
SCHEMA: tuple[Key, ...] = (
    Key("head", "host", "base-sage", "host", "head node host name or IP"),
    Key("head", "head_port", 6379, "port", "Ray cluster (GCS) port"),
    Key("head", "dashboard_port", 8265, "port", "Ray dashboard port"),
    Key("head", "dashboard_host", "0.0.0.0", "host", "dashboard bind address (0.0.0.0 = all interfaces)"),
    Key("head", "temp_dir", "/tmp/ray_head", "abs_path", "Ray temp dir on the head"),
    Key("head", "log_dir", "/tmp/sage_head_logs", "abs_path", "log dir on the head"),
    Key("head", "conda_env", None, "text", 'the head\'s own conda env (null = remote.conda_env; "" = none)',
        inherits="remote"),
    Key("head", "python_path", None, "env_path",
        'the head\'s own Python (null = remote.python_path; "" or auto = detect on the head)', inherits="remote"),
    Key("head", "ray_command", None, "env_path",
        'the head\'s own ray executable (null = remote.ray_command; "" or auto = detect)', inherits="remote"),
    *_ray_keys("head", "the head"),
    Key("head", "fault_tolerance", "none", "choice",
        "GCS fault tolerance: none (a lost head ends the cluster) | local (Ray's store on the head's disk, "
        "gcs_storage_dir) | redis (an external Redis, redis_address); on: `sage cluster start` heals a lost head "
        "and the workers wait for it", FAULT_TOLERANCE),
    Key("head", "gcs_storage_dir", "~/.sage/gcs", "node_path",
        "fault_tolerance local: the GCS store's directory on the head (~ = the SSH user's home there)"),
    Key("head", "redis_address", None, "redis_address",
        "fault_tolerance redis: host:port, redis://host:port or rediss://host:port (TLS), as the head reaches it",
        example="redis.example.com:6379"),
    Key("head", "redis_password_file", None, "local_path",
        "fault_tolerance redis: a file on this machine (mode 0600) holding Redis's password (null = none)"),
    Key("head", "gcs_reconnect_timeout", 600, "timeout",
        "fault tolerance on: how long workers wait for a lost head, seconds (off: Ray's own 60)"),
    Key("worker", "bind_host", "localhost", "bind_host",
        'IP a worker binds to; "localhost" means: use the worker\'s own host name'),
    Key("worker", "temp_dir", "/tmp/ray_worker", "abs_path", "Ray temp dir on workers"),
    Key("worker", "log_dir", "/tmp/sage_worker_logs", "abs_path", "log dir on workers"),
    *_ray_keys("worker", "each worker"),
    Key("ssh", "user", "sage", "text", "SSH login user"),
    Key("ssh", "key_path", "~/.ssh/id_rsa", "local_path", "SSH private key"),
    Key("ssh", "connect_timeout", 10, "timeout", "SSH connect timeout (seconds)"),
    Key("ssh", "strict_host_key_checking", "accept-new", "choice",
        "host key policy: yes | accept-new (learn a new host's key once) | no", ("yes", "accept-new", "no")),
    Key("ssh", "known_hosts", str(STATE_DIR / "known_hosts"), "local_path",
        "known_hosts file the tool checks host keys against"),
    Key("ssh", "become", False, "bool",
        "the SSH user may become root (sudo without a password): a systemd node then runs Ray as a system unit "
        "(/etc/systemd/system/sage-ray.service, User= the SSH user: Ray never runs as root) instead of the user's "
        "own unit; false = no root wanted"),
    Key("remote", "sage_home", "/home/sage", "abs_path", "project directory on remote nodes"),
    Key("remote", "python_path", "/opt/conda/envs/sage/bin/python", "env_path",
        'remote Python interpreter ("" or auto = detect on each node)'),
    Key("remote", "ray_command", "/opt/conda/envs/sage/bin/ray", "env_path",
        'remote ray executable ("" or auto = the ray beside the detected Python)'),
    Key("remote", "conda_env", "sage", "text", 'conda env to activate ("" = none)'),
    Key("remote", "python_version_match", "minor", "choice",
        "how alike the nodes' Pythons must be for Ray: minor (3.11.2 and 3.11.7 form one cluster) | patch (Ray's "
        "own default: the same patch release everywhere)", ("minor", "patch")),
    Key("remote", "supervisor", "auto", "choice",
        "who keeps Ray running on a node: auto (a systemd user unit where the node's PID 1 is systemd and the SSH "
        "user's systemctl --user works, else plain processes) | systemd (the unit, or the start fails saying why) "
        "| none (plain processes, as started by sage only)", SUPERVISORS),
    Key("deploy", "source", ".", "local_path", "local project directory that deploy copies (default: the current one)"),
    Key("deploy", "exclude", [], "list", "extra rsync exclude patterns, added to the built-in ones",
        example='["data/", "*.log"]'),
    Key("deploy", "install", "auto", "install",
        "after the copy: auto (pip install -e when pyproject.toml or setup.py) | none | [command, args...] "
        "in sage_home",
        example='["./install.sh", "--yes"]'),
    Key("deploy", "pip_args", [], "list",
        "extra pip install arguments for auto, e.g. [\"--no-index\", \"--find-links\", \"/srv/wheels\"]",
        example='["--no-index", "--find-links", "/srv/wheels"]'),
    Key("deploy", "install_timeout", 1200, "timeout", "bound on one node's install (seconds, at most 3600)"),
    Key("security", "ray_auth", "token", "choice",
        "Ray token authentication: token (every node and client needs the token) | off", ("token", "off")),
    Key("security", "tls", "off", "choice",
        "mutual TLS for every Ray connection inside the cluster, sage the CA (~/.sage/tls): on (each node gets a "
        "90-day certificate; a driver here needs `sage cluster tls env`) | off; a change restarts every node",
        ("off", "on")),
)
SECTIONS = tuple(dict.fromkeys(k.section for k in SCHEMA))
KEYS = {(k.section, k.name): k for k in SCHEMA}
# The guide's example workers: only the template shows them. A file that names no workers has none.
WORKERS_EXAMPLE = "sage2:22,sage4:22"
WORKERS_HELP = ("EXAMPLE hosts, replace them (\"\" or no line: no workers). Worker SSH hosts, host:port, comma "
                "separated, or a YAML list (an item may be a mapping with a worker's own settings: {host: gpu1, "
                "port: 22, num_gpus: 4}); ssh.workers is the same list under SAGE's name")

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*\.?$")
# What Ray's RAY_REDIS_ADDRESS takes (ray._private.services.get_address): host:port, with redis:// or rediss://.
_REDIS_ADDRESS = re.compile(rf"(?:rediss?://)?(?:{_LABEL}(?:\.{_LABEL})*|\[[0-9A-Fa-f:.]+\]):[0-9]{{1,5}}")


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int = 22

    def __str__(self) -> str:
        # An IPv6 address is written in brackets, so the text parses back to the same endpoint.
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass
class Config:
    """The effective config: every section filled with defaults, workers parsed."""

    values: dict[str, dict[str, Any]]
    workers: list[Endpoint]
    path: Path | None  # None: the built-in single-machine default
    warnings: list[str] = field(default_factory=list)
    lines: dict[str, int] = field(default_factory=dict)  # "section.key" -> its line in the file
    # Each worker's own settings, from its mapping in the worker list: host -> {section: {key: value}}.
    worker_overrides: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    # The keys the file lists its workers under (workers_ssh_hosts, ssh.workers: both when both, none when none).
    workers_keys: tuple[str, ...] = ()
    origin: str = ""  # why this file (or the built-in default) is the one in use
    notes: list[str] = field(default_factory=list)  # information, not a problem (SAGE's own sections)

    def where(self, dotted: str) -> str:
        """'FILE:LINE: 'section.key'' for messages about a value found valid on load but refused in use."""
        if self.path is None:
            return f"the built-in default's '{dotted}'"
        return f"{self.path}:{self.lines.get(dotted, 1)}: '{dotted}'"

    def __getitem__(self, section: str) -> dict[str, Any]:
        return self.values[section]

    @property
    def head_endpoint(self) -> Endpoint:
        """Where Ansible reaches the head: its host, SSH port 22 (cfg["head"] is the config's head section)."""
        return Endpoint(self.values["head"]["host"], 22)

    @property
    def is_builtin(self) -> bool:
        return self.path is None

    @property
    def workers_key(self) -> str:
        """The key the worker list is written under (workers_ssh_hosts when the file names none)."""
        return self.workers_keys[0] if self.workers_keys else WORKERS_KEY

    def overrides(self, host: str) -> dict[str, dict[str, Any]]:
        """A node's own values on top of the config-wide ones: a worker's mapping, or the head's own env keys
        (head.conda_env, head.python_path, head.ray_command over remote.*)."""
        if host_key(host) == host_key(self.values["head"]["host"]):
            own: dict[str, dict[str, Any]] = {}
            for k in SCHEMA:
                if k.section == "head" and k.inherits and self.values["head"][k.name] is not None:
                    own.setdefault(k.inherits, {})[k.name] = self.values["head"][k.name]
            return own
        return self.worker_overrides.get(host, {})

    def node(self, host: str) -> dict[str, dict[str, Any]]:
        """A node's effective ssh, remote and worker values: the config's, with the node's own on top."""
        own = self.overrides(host)
        return {s: {**self.values[s], **own.get(s, {})} for s in NODE_SECTIONS}

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {s: dict(v) for s, v in self.values.items()}
        # A worker with settings of its own is shown as the mapping it is written as.
        out[WORKERS_KEY] = [{"host": w.host, "port": w.port, **self.worker_overrides[w.host]}
                            if w.host in self.worker_overrides else str(w) for w in self.workers]
        return out


# ---------------------------------------------------------------- finding and loading

# Where a config is looked for when none is named, in order (as SAGE's own CLI did): the project's
# config/cluster.yaml, ./config/cluster.yaml, then the two files in ~/.sage.
PROJECT_CONFIG = Path("config") / "cluster.yaml"
PROJECT_MARKERS = (".git", "pyproject.toml")
SEARCH_HELP = ("Config file (default: $SAGE_CONFIG, else the project's config/cluster.yaml, ./config/cluster.yaml, "
               "~/.sage/cluster.yaml, ~/.sage/config.yaml; `sage cluster info` says which).")


@dataclass(frozen=True)
class Found:
    path: Path | None  # None: no file found, the built-in default
    why: str
    named: bool = False  # named by --config or $SAGE_CONFIG: it must exist


def write_path(explicit: str | os.PathLike | None) -> Path:
    """Where `sage config init` / `import` write: --config (or --output), else $SAGE_CONFIG, else
    ~/.sage/config.yaml."""
    return Path(explicit or os.environ.get("SAGE_CONFIG") or DEFAULT_PATH).expanduser()


def find(explicit: str | os.PathLike | None = None, named_by: str = "--config") -> Found:
    """The config file in use, and why (said by `sage cluster info`); named_by: what named `explicit`."""
    if explicit:
        return Found(Path(explicit).expanduser(), f"named by {named_by}", True)
    if os.environ.get("SAGE_CONFIG"):
        return Found(Path(os.environ["SAGE_CONFIG"]).expanduser(), "named by $SAGE_CONFIG", True)
    looked: list[str] = []
    for path, why, project in _candidates():
        if not path.is_file():
            looked.append(str(path))
        elif project and not _has_head(path):
            # Another tool's config/cluster.yaml: only a file with a head section is a cluster config.
            looked.append(f"{path} (no head section)")
        else:
            skipped = f"; looked first at {', '.join(looked)}" if looked else ""
            return Found(path, f"{why}{skipped}")
    return Found(None, f"no config file found; looked at {', '.join(looked)}")


def _candidates() -> list[tuple[Path, str, bool]]:
    """(path, why, is a project's config/cluster.yaml) in the order they are tried."""
    out: list[tuple[Path, str, bool]] = []
    try:
        cwd = Path.cwd()
    except OSError:  # the current directory was removed: only the files in ~/.sage
        cwd = None
    if cwd is not None:
        root = project_root(cwd)
        if root is not None:
            out.append((root / PROJECT_CONFIG, f"the project's config (project root {root}: the nearest directory "
                                               f"with {' or '.join(PROJECT_MARKERS)})", True))
        if root != cwd:
            out.append((cwd / PROJECT_CONFIG, "./config/cluster.yaml of the current directory", True))
    home = STATE_DIR.expanduser()
    out += [(home / "cluster.yaml", "~/.sage/cluster.yaml (SAGE's own place)", False),
            (DEFAULT_PATH.expanduser(), "the default file ~/.sage/config.yaml", False)]
    return out


def project_root(start: Path) -> Path | None:
    """The nearest directory from start upwards that holds .git or pyproject.toml."""
    for directory in (start, *start.parents):
        if any((directory / marker).exists() for marker in PROJECT_MARKERS):
            return directory
    return None


def _has_head(path: Path) -> bool:
    """Whether a file has a top-level head: section (read as text: a broken cluster config is still ours)."""
    return re.search(r"^head[ \t]*:", read_exact(path), re.M) is not None


def load(explicit: str | os.PathLike | None = None, named_by: str = "--config") -> Config:
    """Find, load and validate; no file found means the built-in single-machine default."""
    found = find(explicit, named_by)
    if found.path is None:
        cfg = builtin_default()
    elif not found.path.exists():
        raise ConfigError(f"{found.path}: no such config file ({found.why}). "
                          f"Fix: create it with `sage config init --config {found.path}`.")
    else:
        cfg = parse(read_exact(found.path), found.path)
    cfg.origin = found.why
    return cfg


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
    if isinstance(value, dict):
        return dict(value)
    return list(value) if isinstance(value, list) else value


def round_trip_yaml() -> YAML:
    y = YAML(typ="rt")
    y.preserve_quotes = True
    y.allow_duplicate_keys = False
    return y


def read_yaml(text: str, path: Path) -> Any:
    try:
        return round_trip_yaml().load(text)
    except DuplicateKeyError as exc:
        mark = exc.problem_mark
        key = (exc.problem or "").split('"')[1] if '"' in (exc.problem or "") else "?"
        raise ConfigError(f"{path}:{_line_no(text, mark)}: key '{key}' appears twice. "
                          "Fix: keep one of them.") from None
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f":{_line_no(text, mark)}" if mark else ""
        what = _one_line(exc.problem or exc.context or "invalid YAML").rstrip(".")
        if exc.context and what.startswith("but "):
            what = f"{_one_line(exc.context)}, {what}"
        src = _line(text, mark) if mark else ""
        near = f" near {_one_line(src)[:60]!r}" if src.strip() else ""
        hint = " (tabs are not allowed for indentation; use spaces)" if "\t" in src else ""
        raise ConfigError(f"{path}{line}: not valid YAML{near}: {what}{hint}. "
                          "Fix: correct the YAML syntax there.") from None
    except YAMLError as exc:
        position = getattr(exc, "position", None)
        line = f":{text.count(chr(10), 0, position) + 1}" if isinstance(position, int) else ""
        raise ConfigError(f"{path}{line}: not valid YAML: {_one_line(str(exc))}. "
                          "Fix: correct the YAML syntax there.") from None


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _line_no(text: str, mark: Any) -> int:
    """A mark's 1-based line; a mark past the text (stream end) moves back onto the last non-blank line."""
    lines = text.splitlines()
    n = mark.line if mark is not None else 0
    if n >= len(lines):
        n = len(lines) - 1
        while n > 0 and not lines[n].strip():
            n -= 1
    return max(n, 0) + 1


def _line(text: str, mark: Any) -> str:
    if mark is None:
        return text
    lines = text.splitlines()
    n = _line_no(text, mark) - 1
    return lines[n] if 0 <= n < len(lines) else ""


def _mapping(value: Any, what: str, fix: str) -> CommentedMap:
    """A section of the file as a mapping (absent or empty: an empty one), or a one-line ConfigError."""
    if value is None:
        return CommentedMap()
    if not isinstance(value, CommentedMap):
        raise ConfigError(f"{what}, not a {_type_name(value)}. {fix}")
    return value


def parse(text: str, path: Path) -> Config:
    doc = _mapping(read_yaml(text, path), f"{path}:1: the config must be a mapping of sections (head:, worker:, "
                   "ssh:, ...)", "Fix: start from `sage config init`.")
    warnings: list[str] = []
    values: dict[str, dict[str, Any]] = {}
    lines: dict[str, int] = {}
    theirs = [str(key) for key in doc if key in SAGE_SECTIONS]
    notes = [f"{path}: {', '.join(theirs)}: sections of SAGE's own services; sage-cluster leaves them alone."
             ] if theirs else []
    for key in doc:
        if key != WORKERS_KEY and key not in SECTIONS and key not in SAGE_SECTIONS:
            warnings.append(_unknown(path, key_line(doc, key), str(key), [*SECTIONS, WORKERS_KEY]))
    for section in SECTIONS:
        keys = [k for k in SCHEMA if k.section == section]
        line = key_line(doc, section)
        raw = _mapping(doc.get(section), f"{path}:{line}: '{section}' must be a mapping of keys",
                       f"Fix: indent its keys under '{section}:'.")
        known = [k.name for k in keys] + (["workers"] if section == "ssh" else [])
        for name in raw:
            if name not in known:
                warnings.append(_unknown(path, key_line(raw, name), f"{section}.{name}", known))
        values[section] = {}
        for k in keys:
            lines[k.dotted] = key_line(raw, k.name) if k.name in raw else line
            if k.name in raw:
                values[section][k.name] = check_value(k, raw[k.name], f"{path}:{lines[k.dotted]}")
            else:
                values[section][k.name] = _copy(k.default)
    lists = {}
    if WORKERS_KEY in doc:
        lists[WORKERS_KEY] = _worker_list(doc, WORKERS_KEY, WORKERS_KEY, path)
    if "workers" in (doc.get("ssh") or {}):
        lists[SSH_WORKERS_KEY] = _worker_list(doc["ssh"], "workers", SSH_WORKERS_KEY, path)
    if len(lists) == 2 and lists[WORKERS_KEY][0] != lists[SSH_WORKERS_KEY][0]:
        raise ConfigError(f"{path}:{key_line(doc['ssh'], 'workers')}: '{SSH_WORKERS_KEY}' "
                          f"({_names(lists[SSH_WORKERS_KEY][0][0])}) and '{WORKERS_KEY}' (line "
                          f"{key_line(doc, WORKERS_KEY)}: {_names(lists[WORKERS_KEY][0][0])}) list different "
                          "workers. Fix: keep one of them; sage-cluster reads both as the same list.")
    (workers, overrides), wheres = next(iter(lists.values()), (([], {}), []))
    cfg = Config(values=values, workers=workers, path=path, warnings=warnings, lines=lines,
                 worker_overrides=overrides, workers_keys=tuple(lists), notes=notes)
    _check_cluster(cfg, wheres, f"Fix: remove it from {cfg.workers_key}, or make it a worker and name another head.")
    if values["head"]["fault_tolerance"] == "redis" and values["head"]["redis_address"] is None:
        raise ConfigError(f"{cfg.where('head.fault_tolerance')} = 'redis' needs head.redis_address. Fix: set it, "
                          f"e.g. redis_address: {KEYS[('head', 'redis_address')].example}.")
    return cfg


def _worker_list(container: CommentedMap, name: str, label: str, path: Path
                 ) -> tuple[tuple[list[Endpoint], dict[str, dict[str, dict[str, Any]]]], list[str]]:
    """One worker list (workers_ssh_hosts or ssh.workers): ((endpoints, their own settings), each one's where)."""
    raw = container[name]
    line = key_line(container, name)
    where = f"{path}:{line}: {label}"
    item_wheres = None
    if isinstance(raw, CommentedSeq):
        item_wheres = [f"{path}:{item_line(raw, i, line)}: {label}" for i in range(len(raw))]
    workers = _parse_workers(raw, where, item_wheres)
    own = [(w.host, _node_settings(item, w.host, path, label)) for item, w in zip(raw, workers)
           if isinstance(item, dict)] if isinstance(raw, list) else []
    overrides = {host: settings for host, settings in own if settings}  # {host, port} alone: nothing of its own
    return (workers, overrides), item_wheres or [where] * len(workers)


def _names(workers: list[Endpoint]) -> str:
    return ", ".join(map(str, workers)) or "none"


def item_line(seq: Any, index: int, fallback: int) -> int:
    try:
        return seq.lc.item(index)[0] + 1
    except (AttributeError, KeyError, TypeError, IndexError):
        return fallback


def key_line(mapping: Any, key: Any) -> int:
    """The 1-based line of a key; for a key not in the file, the mapping's own line (1 for an empty file)."""
    try:
        return int(mapping.lc.key(key)[0]) + 1
    except (AttributeError, KeyError, TypeError, IndexError):
        line = getattr(getattr(mapping, "lc", None), "line", None)
        return line + 1 if isinstance(line, int) else 1


def _type_name(value: Any) -> str:
    """What a YAML value is, in the user's words."""
    from collections.abc import Mapping, Set

    for kind, name in ((bool, "boolean"), (int, "integer"), (float, "number"), (str, "string"),
                       (bytes, "binary value"), (Mapping, "mapping"), (list, "list"), (Set, "set")):
        if isinstance(value, kind):
            return name
    return "tagged value"


def _unknown(path: Path, line: int, key: str, known: list[str]) -> str:
    leaf = key.rsplit(".", 1)[-1]
    close = difflib.get_close_matches(leaf, known, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else f" (known: {', '.join(known)})"
    return f"{path}:{line}: unknown key '{key}' is ignored{hint}"


# ---------------------------------------------------------------- values

def check_value(key: Key, value: Any, where: str) -> Any:
    """Return the value as the program uses it, or raise a one-line ConfigError."""
    label = f"{where}: '{key.dotted}'"
    if key.kind in RAY_KINDS:
        return check_ray_value(key, value, label)
    if value is None and key.inherits:
        return None  # a node's own key left out: the node takes the config-wide value
    if key.kind == "env_path" and (value is None or (isinstance(value, str) and value.strip() in ("", AUTO))):
        return AUTO  # SAGE's "leave empty to detect": found on each node
    if value is None and key.name == "conda_env":
        return ""  # `conda_env:` with no value: no conda env, like ""
    if value is None and key.default is None:
        return None  # an optional value left unset
    if value is None or (isinstance(value, str) and not value.strip() and key.name != "conda_env"):
        raise ConfigError(f"{label} is empty. Fix: set it, or delete the line to use the default "
                          f"({_show(key.default)}).")
    if key.kind == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"{label} must be true or false, not {_type_name(value)} {_show(value)}. "
                              "Fix: write true or false, without quotes.")
        return value
    if key.kind in ("port", "timeout"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{label} must be a whole number, not {_type_name(value)} {_show(value)}. "
                              f"Fix: write it without quotes, e.g. {key.default}.")
        top = 65535 if key.kind == "port" else 3600
        if not 1 <= value <= top:
            raise ConfigError(f"{label} = {value} is out of range. Fix: use 1-{top}.")
        return int(value)
    if key.kind == "install" and isinstance(value, list):
        if not value:
            raise ConfigError(f"{label} is an empty command. Fix: write auto, none, or a command such as "
                              f"{key.example}.")
        return check_value(Key(key.section, key.name, [], "list", key.help, example=key.example), value, where)
    if key.kind == "list":
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise ConfigError(f"{label} must be a list of non-empty strings. Fix: e.g. {key.example}.")
        if any(mark in v for v in value for mark in ("{{", "{%", "{#")):
            raise ConfigError(f"{label} has an item with a template marker ({{{{, {{% or {{#) that Ansible would "
                              "evaluate. Fix: write plain patterns.")
        return [str(v) for v in value]
    if not isinstance(value, str):
        raise ConfigError(f"{label} must be a string, not {_type_name(value)} {_show(value)}. Fix: quote it.")
    value = str(value)
    if any(ch in value for ch in "\n\r\0"):
        raise ConfigError(f"{label} contains a line break or NUL. Fix: put it on one line.")
    if any(mark in value for mark in ("{{", "{%", "{#")):
        # Ansible would evaluate it as a Jinja template (run code on the controller), not use it as text.
        raise ConfigError(f"{label} = {value!r} contains a template marker ({{{{, {{% or {{#) that Ansible would "
                          "evaluate. Fix: write the plain value.")
    if key.kind == "host" or (key.kind == "bind_host" and value != "localhost"):
        _check_host(value, label)
    elif key.dotted == "ssh.known_hosts" and re.search(r"[\s\"']", value):
        # ssh reads UserKnownHostsFile as a whitespace-separated list of files.
        raise ConfigError(f"{label} = {value!r} has a space or quote, which ssh would split into several files. "
                          "Fix: use a path without spaces or quotes.")
    elif key.kind == "abs_path" and not value.startswith("/"):
        raise ConfigError(f"{label} = {value!r} must be an absolute path. Fix: start it with /.")
    elif key.kind == "node_path" and not value.startswith(("/", "~/")):
        raise ConfigError(f"{label} = {value!r} must be an absolute path or one in the SSH user's home there. "
                          f"Fix: start it with / or ~/, e.g. {key.default}.")
    elif key.kind == "redis_address" and not _REDIS_ADDRESS.fullmatch(value):
        raise ConfigError(f"{label} = {value!r} is not a Redis address. Fix: write host:port, redis://host:port "
                          f"or rediss://host:port, e.g. {key.example}.")
    elif key.kind == "env_path" and not value.startswith("/"):
        raise ConfigError(f"{label} = {value!r} must be an absolute path or auto. Fix: start it with /, or write "
                          "auto (or \"\") to detect it on each node.")
    elif key.kind == "install" and value not in ("auto", "none"):
        raise ConfigError(f"{label} = {value!r} is neither auto, none nor a command list. Fix: write auto, none, "
                          f"or the command as a YAML list of arguments, e.g. {key.example}.")
    elif key.kind == "choice" and value not in key.choices:
        raise ConfigError(f"{label} = {value!r} is not one of {', '.join(key.choices)}. "
                          f"Fix: use one of them, e.g. {key.default}.")
    elif key.kind == "text" and value and not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", value):
        raise ConfigError(f"{label} = {value!r} may hold only letters, digits, '_', '.', '-'. "
                          f"Fix: e.g. {key.default}.")
    return value


# ---------------------------------------------------------------- Ray resources and labels

_RESOURCE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,99}")
_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9,
          "t": 10**12, "tb": 10**12, "ki": 2**10, "kib": 2**10, "mi": 2**20, "mib": 2**20,
          "gi": 2**30, "gib": 2**30, "ti": 2**40, "tib": 2**40}
# Ray's node label syntax (Kubernetes' rules; ray/_private/label_utils.py): checked here so that a bad label
# is a config error with a line number, not a failed `ray start` on one node.
_LABEL_NAME = r"[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?"
_LABEL_KEY = re.compile(rf"(?:(?:{_LABEL_NAME})(?:\.{_LABEL_NAME})*/)?{_LABEL_NAME}")


def check_ray_value(key: Key, value: Any, label: str) -> Any:
    """A Ray resource key's value as `ray start` takes it, or a one-line ConfigError."""
    if key.kind in ("count", "bytes"):
        if value is None:
            return None  # null: Ray decides (detects CPUs and GPUs, sizes memory)
        number = parse_bytes(value) if key.kind == "bytes" and isinstance(value, str) else value
        if isinstance(number, bool) or not isinstance(number, int) or number < 0:
            example = '"8GiB"' if key.kind == "bytes" else "4"
            raise ConfigError(f"{label} = {_show(value)} must be a whole number 0 or more. "
                              f"Fix: e.g. {example}, or null to let Ray decide.")
        return number
    if value is None:
        return {}
    from collections.abc import Mapping
    if not isinstance(value, Mapping):
        example = "{accel: 1}" if key.kind == "resources" else "{zone: a}"
        raise ConfigError(f"{label} must be a mapping, not {_type_name(value)} {_show(value)}. Fix: e.g. {example}.")
    check = _check_resource if key.kind == "resources" else _check_label
    return dict(check(str(name), amount, label) for name, amount in value.items())


def parse_bytes(text: str) -> int | None:
    """ "8GiB", "512 MiB", "1000000" -> bytes; None when it is not a size."""
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*", text)
    if not match or match.group(2).lower() not in _UNITS:
        return None
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def _check_resource(name: str, amount: Any, label: str) -> tuple[str, int | float]:
    if name in RAY_OWN_RESOURCES:
        raise ConfigError(f"{label}: '{name}' is Ray's own resource, not a custom one. "
                          f"Fix: set {RAY_OWN_RESOURCES[name]} instead.")
    if name == "bundle" or name.startswith(("node:", "accelerator_type:")) or "_group_" in name:
        raise ConfigError(f"{label}: Ray reserves the resource name {name!r} for itself. Fix: choose another name.")
    if not _RESOURCE_NAME.fullmatch(name):
        raise ConfigError(f"{label}: resource name {name!r} may hold only letters, digits, '_', '.', '-' "
                          "(starting with a letter or '_'). Fix: e.g. accel.")
    if isinstance(amount, bool) or not isinstance(amount, (int, float)) or amount < 0:
        raise ConfigError(f"{label}: resource {name!r} = {_show(amount)} must be a number 0 or more. Fix: e.g. 1.")
    if round(amount * 10000) != amount * 10000:
        raise ConfigError(f"{label}: resource {name!r} = {amount} has more decimals than Ray keeps (4). "
                          f"Fix: e.g. {round(amount, 4)}.")
    return name, int(amount) if float(amount).is_integer() else float(amount)


def _check_label(name: str, value: Any, label: str) -> tuple[str, str]:
    if name.startswith("ray.io/"):
        raise ConfigError(f"{label}: label {name!r}: Ray reserves the prefix ray.io/ for its own labels. "
                          "Fix: choose another key.")
    if len(name.rpartition("/")[2]) > 63 or len(name) > 317 or not _LABEL_KEY.fullmatch(name):
        raise ConfigError(f"{label}: label key {name!r} is not a valid Ray label key. Fix: letters, digits, '-', "
                          "'_', '.' (up to 63, starting and ending with a letter or digit), e.g. zone.")
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ConfigError(f"{label}: label {name!r} = {_show(value)} must be a string. Fix: e.g. {name}: a.")
    value = str(value)
    if value and (len(value) > 63 or not re.fullmatch(_LABEL_NAME, value)):
        raise ConfigError(f"{label}: label {name!r} = {value!r} is not a valid Ray label value. Fix: letters, "
                          "digits, '-', '_', '.' (up to 63, starting and ending with a letter or digit).")
    return name, value


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
    """'host' or 'host:port' -> Endpoint; anything else is a one-line ConfigError (prefixed with `where`, if any)."""
    at = f"{where}: " if where else ""
    if isinstance(text, bool) or not isinstance(text, (str, int)):
        raise ConfigError(f"{at}worker {_show(text)} must be a 'host:port' string. Fix: e.g. sage5:22.")
    text = str(text).strip()
    bracketed = re.fullmatch(r"\[([^\]]*)\](?::(.*))?", text)
    if bracketed:  # [IPv6]:port
        host, port_text = bracketed.group(1), bracketed.group(2)
        sep = ":" if port_text is not None else ""
        port_text = port_text or ""
        if ":" not in host or not is_valid_host(host):
            raise ConfigError(f"{at}worker {text!r}: brackets are for IPv6 addresses. "
                              "Fix: write host:port, or [IPv6 address]:port.")
    elif text.count(":") > 1 and is_valid_host(text):
        raise ConfigError(f"{at}worker {text!r} looks like an IPv6 address. Fix: write it as [{text}]:22.")
    else:
        host, sep, port_text = text.partition(":")
    if not host:
        raise ConfigError(f"{at}worker {text!r} has no host. Fix: write it as host:port, e.g. sage5:22.")
    if ":" in port_text and not bracketed:
        raise ConfigError(f"{at}worker {text!r} has more than one ':'. Fix: write it as host:port, e.g. sage5:22.")
    _check_host(host, f"{at}worker")
    port = 22
    if sep:
        if not re.fullmatch(r"[0-9]{1,5}", port_text) or not 1 <= int(port_text) <= 65535:
            raise ConfigError(f"{at}worker {text!r} has a bad port {port_text!r}. Fix: use a port 1-65535.")
        port = int(port_text)
    return Endpoint(host, port)


def _parse_workers(raw: Any, where: str, item_wheres: list[str] | None) -> list[Endpoint]:
    """A worker list's value ("h:p,h:p" string, a list, or empty) -> endpoints, each host once."""
    if raw is None:
        return []
    if isinstance(raw, str):
        items = [part for part in (p.strip() for p in raw.split(",")) if part]
        wheres = [where] * len(items)
    elif isinstance(raw, list):
        items = list(raw)
        wheres = item_wheres if item_wheres and len(item_wheres) == len(items) else [where] * len(items)
    else:
        raise ConfigError(f"{where}: it must be a \"host:port,host:port\" string or a list, "
                          f"not {_type_name(raw)} {_show(raw)}. Fix: e.g. \"sage2:22,sage4:22\".")
    workers = [_node_endpoint(item, w) if isinstance(item, dict) else parse_endpoint(item, w)
               for item, w in zip(items, wheres)]
    seen: dict[str, Endpoint] = {}
    for w, at in zip(workers, wheres):
        name = host_key(w.host)
        if name in seen:
            raise ConfigError(f"{at}: worker host {w.host!r} is listed twice ({seen[name]} and {w}). "
                              "Fix: list each host once.")
        seen[name] = w
    return workers


# ---------------------------------------------------------------- per-node settings

# What a worker's own mapping in workers_ssh_hosts may hold besides host and port: any key of these sections,
# and the Ray resource keys of worker: directly (`{host: gpu1, num_gpus: 4}`).
NODE_SECTIONS = ("ssh", "remote", "worker")
NODE_EXAMPLE = "{host: gpu1, port: 22, num_gpus: 4, remote: {python_path: /opt/envs/x/bin/python}}"


def _node_endpoint(item: dict, where: str) -> Endpoint:
    """The host and port of a worker written as a mapping."""
    if "host" not in item:
        raise ConfigError(f"{where}: a worker written as a mapping needs 'host'. Fix: e.g. {NODE_EXAMPLE}.")
    host, port = item["host"], item.get("port", 22)
    if not isinstance(host, str) or not host:
        raise ConfigError(f"{where}: worker host {_show(host)} must be a host name or IP. Fix: e.g. host: gpu1.")
    _check_host(host, f"{where}: worker")
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ConfigError(f"{where}: worker {host!r} has a bad port {_show(port)}. Fix: use a port 1-65535.")
    return Endpoint(host, port)


def _node_settings(item: dict, host: str, path: Path, label: str) -> dict[str, dict[str, Any]]:
    """A worker's own values, each checked like the config-wide key it overrides: {section: {key: value}}."""
    out: dict[str, dict[str, Any]] = {}
    known = ["host", "port", *NODE_SECTIONS, *NODE_RAY_KEYS]
    for name, value in item.items():
        where = f"{path}:{key_line(item, name)}"
        if name in ("host", "port"):
            continue
        if name in NODE_RAY_KEYS:
            _node_value(out, "worker", name, value, where, host, label)
        elif name in NODE_SECTIONS:
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: '{label}[{host}].{name}' must be a mapping of {name}.* keys, not "
                                  f"{_type_name(value)} {_show(value)}. Fix: e.g. {name}: {{...}}.")
            for sub, sub_value in value.items():
                _node_value(out, name, str(sub), sub_value, f"{path}:{key_line(value, sub)}", host, label)
        else:
            close = difflib.get_close_matches(str(name), known, n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"known: {', '.join(known)}"
            raise ConfigError(f"{where}: unknown key '{name}' for worker {host} ({hint}). "
                              f"Fix: use one of {', '.join(known)}.")
    return out


def _node_value(out: dict, section: str, name: str, value: Any, where: str, host: str, listed_in: str) -> None:
    key = KEYS.get((section, name))
    label = f"{listed_in}[{host}].{section}"
    if key is None:
        names = [k.name for k in SCHEMA if k.section == section]
        close = difflib.get_close_matches(name, names, n=1)
        hint = f"did you mean '{close[0]}'?" if close else f"known: {', '.join(names)}"
        raise ConfigError(f"{where}: unknown key '{label}.{name}' ({hint}). Fix: use a {section}.* key.")
    if name in out.get(section, {}):
        raise ConfigError(f"{where}: '{label}.{name}' is set twice for worker {host} (directly and under {section}:)."
                          " Fix: keep one of them.")
    # The label names the worker, so the message says whose value is wrong.
    out.setdefault(section, {})[name] = check_value(dataclasses.replace(key, section=label), value, where)


def describe_env(remote: dict[str, Any]) -> str:
    """A remote section's env in words, for `sage cluster info`."""
    def path(key: str) -> str:
        return "detected on each node" if remote[key] == AUTO else remote[key]
    return (f"python {path('python_path')}, ray {path('ray_command')}, "
            f"conda env {remote['conda_env'] or '(none)'}")


def host_key(host: str) -> str:
    """Host names compare without case and without a trailing dot (RFC 1123)."""
    return host.lower().rstrip(".")


def _check_cluster(cfg: Config, wheres: list[str], fix: str) -> None:
    head = cfg["head"]["host"]
    for w, where in zip(cfg.workers, wheres):
        if host_key(w.host) == host_key(head):
            raise ConfigError(f"{where}: the head {head!r} is also listed as a worker ({w}); the head already "
                              f"runs a Ray node. {fix}")


def is_this_machine(host: str) -> bool:
    """Whether a host name names the controller itself (then Ansible uses a local connection)."""
    if host in LOOPBACK_NAMES:
        return True
    return host in {socket.gethostname(), socket.getfqdn()}


# ---------------------------------------------------------------- the template

def template_text() -> str:
    """The guide's config file, with every key and a comment on each."""
    out = ["# sage-cluster config. Every key is optional; a missing key takes the value shown here, except",
           f"# {WORKERS_KEY}: without a worker list the cluster is the head alone.", ""]
    for section in SECTIONS:
        keys = [k for k in SCHEMA if k.section == section]
        out.append(f"{section}:")
        for k in keys:
            out.append(f"  {k.name}: {yaml_scalar(k.default)}  # {k.help}")
        if section == "worker":
            out.append(f'{WORKERS_KEY}: "{WORKERS_EXAMPLE}"  # {WORKERS_HELP}')
    return "\n".join(out) + "\n"


def yaml_scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {yaml_scalar(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[]" if not value else "[" + ", ".join(f'"{v}"' for v in value) + "]"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return str(value)


def read_exact(path: Path) -> str:
    """The file's text with its own line endings (CRLF stays CRLF), so an edit changes only the edited value."""
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            return fh.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the config ({_one_line(str(exc))}). "
                          "Fix: check that it exists and is readable UTF-8 text.") from None
