"""`sage config import`: a `ray up` cluster file of the local provider -> a sage config, and what it cannot carry.

The file is only read: its commands are split with shlex to find `ray start`'s options, never run.
"""
from __future__ import annotations

import dataclasses
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ansible_collections.sage.cluster.plugins.plugin_utils import config as cfgmod
from ansible_collections.sage.cluster.plugins.plugin_utils.config import ConfigError, key_line, item_line, yaml_scalar

_SETUP = ("deploy.install: a command list run in remote.sage_home on every node by `sage cluster deploy`, or "
          "prepare the env on the hosts yourself")
_SYNC = "deploy.source (the one project directory `sage cluster deploy` copies to every node) and deploy.exclude"
_SCALING = "no autoscaler: the workers are the hosts listed; `sage cluster scale add|remove HOST:PORT`"
_NODE_TYPES = "head.* and worker.* (a worker that differs: its own mapping in workers_ssh_hosts)"
# What a ray up file may hold that sage-cluster does not carry, and what to use instead.
NOT_CARRIED = {
    "initialization_commands": "prepare the hosts yourself before `sage cluster deploy`; sage runs no commands "
                               "of its own on them",
    "setup_commands": _SETUP, "head_setup_commands": _SETUP, "worker_setup_commands": _SETUP,
    "file_mounts": _SYNC, "cluster_synced_files": _SYNC, "file_mounts_sync_continuously": _SYNC,
    "rsync_exclude": "deploy.exclude", "rsync_filter": "deploy.exclude (patterns; .gitignore files are not read)",
    "docker": "none: Ray runs in the env named by remote.conda_env / remote.python_path on each host",
    "min_workers": _SCALING, "max_workers": _SCALING, "initial_workers": _SCALING, "upscaling_speed": _SCALING,
    "idle_timeout_minutes": _SCALING, "autoscaling_mode": _SCALING, "target_utilization_fraction": _SCALING,
    "available_node_types": _NODE_TYPES, "head_node_type": _NODE_TYPES, "head_node": _NODE_TYPES,
    "worker_nodes": _NODE_TYPES,
    "provider.coordinator_address": "list the hosts in the config (there is no coordinator server)",
    "provider.external_head_ip": "head.host, reachable from this machine",
    "auth.ssh_proxy_command": "a ProxyCommand or ProxyJump for those hosts in ~/.ssh/config",
}
_OTHER = "none in sage-cluster"
_RAY_ITSELF = "sage starts and stops Ray itself, with head.* and worker.* (README, Config reference)"
CARRIED = ("cluster_name", "provider", "auth", "head_start_ray_commands", "worker_start_ray_commands")

# `ray start` options carried over, per role: option -> (section, key). --redis-port is Ray's old --port.
HEAD_OPTIONS = {"--port": "head_port", "--redis-port": "head_port", "--dashboard-port": "dashboard_port",
                "--dashboard-host": "dashboard_host", "--num-cpus": "num_cpus", "--num-gpus": "num_gpus"}
WORKER_OPTIONS = {"--num-cpus": "num_cpus", "--num-gpus": "num_gpus"}
# Options a worker's start needs that sage gives it itself: the head's address.
IMPLIED = ("--address", "--redis-address")
# `ray start` options that take no value (any other option without '=' takes the next word).
_FLAGS = {"--head", "--block", "--disable-usage-stats", "--include-log-monitor"}
_SEPARATORS = {";", "&&", "||", "|", "&"}


@dataclass
class Imported:
    text: str  # the sage config, comments included
    cluster_name: str
    head: str
    workers: list[str]
    user: str
    key_path: str
    not_carried: list[tuple[str, str]] = field(default_factory=list)  # (what, what to use instead)

    def not_carried_lines(self) -> list[str]:
        """One line per alternative: "min_workers, max_workers: no autoscaler: ..."."""
        by_instead: dict[str, list[str]] = {}
        for what, instead in self.not_carried:
            by_instead.setdefault(instead, []).append(what)
        return [f"{', '.join(whats)}: {instead}" for instead, whats in by_instead.items()]


def convert(source: Path) -> Imported:
    """Read a ray up file and write the sage config it becomes (as text); a one-line ConfigError if it cannot."""
    text = cfgmod.read_exact(source)
    doc = cfgmod.read_yaml(text, source)
    if not isinstance(doc, Mapping):
        raise ConfigError(f"{source}:1: not a `ray up` cluster file (a mapping with provider:, auth:, ...). "
                          "Fix: name the cluster YAML you pass to `ray up`.")
    provider = _section(doc, "provider", source)
    kind = provider.get("type")
    if kind != "local":
        raise ConfigError(f"{source}:{key_line(provider, 'type') if 'type' in provider else key_line(doc, 'provider')}"
                          f": provider.type is {kind!r}, not local; only a `ray up` file of machines you list "
                          "(provider type local) can become a sage config. Fix: write one for your hosts with "
                          "`sage config init`.")
    auth = _section(doc, "auth", source)
    values: dict[str, dict[str, Any]] = {"head": {}, "worker": {}, "ssh": {}, "remote": {}}
    values["head"]["host"] = _checked(provider, "head_ip", "head", "host", source, "provider", required=True)
    workers = _worker_ips(provider, source)
    if "ssh_user" in auth:
        values["ssh"]["user"] = _checked(auth, "ssh_user", "ssh", "user", source, "auth")
    if "ssh_private_key" in auth:
        values["ssh"]["key_path"] = _checked(auth, "ssh_private_key", "ssh", "key_path", source, "auth")
    not_carried = [(name, NOT_CARRIED.get(name, _OTHER)) for name, value in doc.items()
                   if name not in CARRIED and _matters(name, value)]
    not_carried += [(f"{section}.{name}", NOT_CARRIED.get(f"{section}.{name}", _OTHER))
                    for section, keys in (("provider", provider), ("auth", auth)) for name, value in keys.items()
                    if name not in ("type", "head_ip", "worker_ips", "ssh_user", "ssh_private_key")
                    and _matters(name, value)]
    for role, options in (("head", HEAD_OPTIONS), ("worker", WORKER_OPTIONS)):
        not_carried += _start_commands(doc, f"{role}_start_ray_commands", options, values, source)
    imported = Imported(text="", cluster_name=str(doc.get("cluster_name") or ""), head=values["head"]["host"],
                        workers=workers, user=values["ssh"].get("user", cfgmod.KEYS["ssh", "user"].default),
                        key_path=values["ssh"].get("key_path", cfgmod.KEYS["ssh", "key_path"].default),
                        not_carried=not_carried)
    imported.text = _render(source, imported, values)
    return imported


def _section(doc: Mapping, name: str, source: Path) -> Mapping:
    value = doc.get(name)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{source}:{key_line(doc, name)}: '{name}' must be a mapping. "
                          f"Fix: indent its keys under '{name}:'.")
    return value


def _checked(mapping: Mapping, name: str, section: str, key_name: str, source: Path, label: str,
             required: bool = False) -> Any:
    """A ray up value checked by the sage key it becomes, the message naming the ray up key."""
    key = cfgmod.KEYS[section, key_name]
    if name not in mapping:
        if required:
            raise ConfigError(f"{source}:{key_line(mapping, name)}: '{label}.{name}' is missing. "
                              f"Fix: set it to the machine's host name or IP.")
        return key.default
    where = f"{source}:{key_line(mapping, name)}"
    return cfgmod.check_value(dataclasses.replace(key, section=label, name=name, inherits=""), mapping[name], where)


def _worker_ips(provider: Mapping, source: Path) -> list[str]:
    ips = provider.get("worker_ips") or []
    where = f"{source}:{key_line(provider, 'worker_ips')}"
    if not isinstance(ips, list):
        raise ConfigError(f"{where}: 'provider.worker_ips' must be a list of hosts. Fix: e.g. [10.0.0.2, 10.0.0.3].")
    hosts = []
    for i, ip in enumerate(ips):
        at = f"{source}:{item_line(ips, i, key_line(provider, 'worker_ips'))}: 'provider.worker_ips'"
        if isinstance(ip, bool) or not isinstance(ip, (str, int)) or not cfgmod.is_valid_host(str(ip)):
            raise ConfigError(f"{at} item {ip!r} is not a host name or IP address. "
                              "Fix: use letters, digits, '-' and '.' only (RFC 1123), or an IP.")
        hosts.append(str(ip))
    return hosts


def _matters(name: str, value: Any) -> bool:
    """Whether a key not carried holds anything: empty lists and maps, and docker without an image, do not."""
    if name == "docker" and isinstance(value, Mapping):
        return bool(value.get("image"))
    return value is not False and value not in (None, "", [], {})


def _start_commands(doc: Mapping, name: str, options: dict[str, str], values: dict, source: Path
                    ) -> list[tuple[str, str]]:
    """Carry the options of `ray start` in one role's start commands into values; return what was not carried."""
    commands = doc.get(name) or []
    if not isinstance(commands, list):
        raise ConfigError(f"{source}:{key_line(doc, name)}: '{name}' must be a list of commands. "
                          "Fix: e.g. [ray stop, ray start --head --port=6379].")
    section = name.split("_", 1)[0]
    left: list[tuple[str, str]] = []
    for i, command in enumerate(commands):
        where = f"{source}:{item_line(commands, i, key_line(doc, name))}"
        for words in _segments(str(command), where):
            if words[:1] == ["conda"] and words[1:2] == ["activate"] and len(words) == 3:
                values["remote"]["conda_env"] = cfgmod.check_value(
                    dataclasses.replace(cfgmod.KEYS["remote", "conda_env"], section=name, name="conda activate"),
                    words[2], where)
            elif Path(words[0]).name != "ray" or words[1:2] not in (["start"], ["stop"]):
                left.append((f"{name}: {shlex.join(words)}", "run it on the hosts yourself; " + _RAY_ITSELF))
            elif words[1] == "start":
                left += _start_options(words[2:], name, section, options, values, where)
    return left


def _segments(command: str, where: str) -> list[list[str]]:
    """A shell command line as its simple commands' words (split at ; && || | &), without running anything."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    try:
        tokens = list(lexer)
    except ValueError as exc:
        raise ConfigError(f"{where}: cannot read the command {command!r} ({exc}). Fix: correct its quoting.") from None
    out: list[list[str]] = [[]]
    for token in tokens:
        if token in _SEPARATORS:
            out.append([])
        else:
            out[-1].append(token)
    return [words for words in out if words]


def _start_options(args: list[str], name: str, section: str, options: dict[str, str], values: dict,
                   where: str) -> list[tuple[str, str]]:
    left = []
    i = 0
    while i < len(args):
        option, sep, value = args[i].partition("=")
        i += 1
        if not sep and option not in _FLAGS and option.startswith("--") and i < len(args) \
                and not args[i].startswith("--"):
            value, i = args[i], i + 1
        if option in ("--head", *IMPLIED):
            continue
        shown = f"{name}: ray start {option}{'=' + value if value else ''}"
        if option not in options:
            left.append((shown, _RAY_ITSELF))
        elif "$" in value:
            left.append((shown, f"{section}.{options[option]} (a value from the environment cannot be carried)"))
        else:
            key = cfgmod.KEYS[section, options[option]]
            number = int(value) if value.isdigit() else value
            values[section][key.name] = cfgmod.check_value(
                dataclasses.replace(key, section=name, name=f"ray start {option}"), number, where)
    return left


def _render(source: Path, imported: Imported, values: dict[str, dict[str, Any]]) -> str:
    name = f' "{imported.cluster_name}"' if imported.cluster_name else ""
    out = [f"# Imported by `sage config import` from {source}: the `ray up` cluster{name}.",
           "# Keys and defaults: README.md, Config reference. `sage cluster info` shows the effective config."]
    if imported.not_carried:
        out.append("# Not carried over from the ray up file (and what to use instead):")
        out += [f"#   {line}" for line in imported.not_carried_lines()]
    remote = values["remote"]
    remote.setdefault("python_path", cfgmod.AUTO)
    remote.setdefault("ray_command", cfgmod.AUTO)
    remote.setdefault("conda_env", "")
    user = values["ssh"].get("user", cfgmod.KEYS["ssh", "user"].default)
    remote["sage_home"] = "/root" if user == "root" else f"/home/{user}"
    comments = {("remote", "python_path"): "ray up ran the ray on each host's PATH (or in its conda env): "
                                           "detected on each node",
                ("remote", "sage_home"): "where `sage cluster deploy` copies your project (ray up had none)"}
    for section in cfgmod.SECTIONS:
        if values.get(section):
            out.append(f"{section}:")
            out += [f"  {k}: {yaml_scalar(v)}" + (f"  # {comments[section, k]}" if (section, k) in comments else "")
                    for k, v in values[section].items()]
        if section == "worker":
            out.append(f"{cfgmod.WORKERS_KEY}:" + ("" if imported.workers else " []  # ray up listed no worker_ips"))
            out += [f"  - {yaml_scalar(str(cfgmod.Endpoint(host)))}" for host in imported.workers]
    return "\n".join(out) + "\n"
