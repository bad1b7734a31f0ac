"""Config -> Ansible inventory, rendered from the collection's inventory_templates/inventory.yml.j2.

The CLI and the inventory plugin sage.cluster.sage (plugins/inventory/sage.py, for ansible-playbook and AWX) both
come through render(), so there is one renderer.
"""
from __future__ import annotations

import json
import math
import shlex
from pathlib import Path
from typing import Any

import jinja2
import yaml

from ansible_collections.sage.cluster.plugins.module_utils import source
from ansible_collections.sage.cluster.plugins.plugin_utils.config import (
    AUTO, RAY_KEYS, Config, Endpoint, is_this_machine)
from ansible_collections.sage.cluster.plugins.plugin_utils.security import (
    redis_password_path, tls_dir, tls_enabled, token_enabled, token_path)

# The collection's root (plugins/plugin_utils/ is two levels down), wherever the collection is installed.
TEMPLATES = Path(__file__).resolve().parents[2] / "inventory_templates"


def role_vars(cfg: Config) -> dict[str, Any]:
    """The config's values as the roles' variables (each prefixed with its role's name)."""
    head, remote, deploy = cfg["head"], cfg["remote"], cfg["deploy"]
    return {
        "ray_node_head_host": head["host"],
        "ray_node_head_port": head["head_port"],
        "ray_node_dashboard_host": head["dashboard_host"],
        "ray_node_dashboard_port": head["dashboard_port"],
        "ray_node_python_path": remote["python_path"],
        "ray_node_ray_command": remote["ray_command"],
        "ray_node_conda_env": remote["conda_env"],
        "ray_node_python_version_match": remote["python_version_match"],
        "ray_node_supervisor": remote["supervisor"],
        "ray_node_become": cfg["ssh"]["become"],
        "sage_deploy_source": str(Path(deploy["source"]).expanduser().resolve()) + "/",
        "sage_deploy_dest": remote["sage_home"],
        "sage_deploy_exclude": source.EXCLUDES + deploy["exclude"],
        "sage_deploy_install": deploy["install"],
        "sage_deploy_pip_args": deploy["pip_args"],
        "sage_deploy_install_timeout": deploy["install_timeout"],
        "sage_deploy_python_path": remote["python_path"],
        "sage_deploy_conda_env": remote["conda_env"],
        # Named, not made: the run makes it (sage before it, else the sage_ray_node action plugin): security.py.
        "ray_node_auth_token_file": str(token_path()) if token_enabled(cfg) else "",
        # The CA's dir, named too: the run makes the CA there (plugin_utils/tls.py), and each node's certificate.
        "ray_node_tls_ca_dir": str(tls_dir()) if tls_enabled(cfg) else "",
        # Every node's: the head keeps the GCS's tables, the workers wait for a lost head.
        "ray_node_fault_tolerance": head["fault_tolerance"],
        "ray_node_gcs_storage_dir": head["gcs_storage_dir"],
        "ray_node_redis_address": head["redis_address"] or "",
        "ray_node_redis_password_file": str(redis_password_path(cfg) or ""),
        "ray_node_gcs_reconnect_timeout": head["gcs_reconnect_timeout"],
    }


# The keys that head: and worker: both have -> the ray_node role's variable of each (group vars of sage_head and
# sage_workers): the temp and log dirs, and the Ray resource keys (config.py's RAY_KEYS).
NODE_TYPE_VARS = {"temp_dir": "ray_node_temp_dir", "log_dir": "ray_node_log_dir", **{k.name: k.var for k in RAY_KEYS}}


def node_type_vars(section: dict[str, Any]) -> dict[str, Any]:
    return {var: section[key] for key, var in NODE_TYPE_VARS.items()}


def _host(ep: Endpoint, node_ip: str, own: dict[str, Any] | None = None) -> dict[str, Any]:
    hostvars: dict[str, Any] = {"ansible_host": ep.host, "ansible_port": ep.port, "ray_node_node_ip": node_ip,
                                **(own or {})}
    if is_this_machine(ep.host):
        # The controller itself: no SSH, and the controller's own Python runs the modules.
        hostvars = {**{k: v for k, v in hostvars.items() if not k.startswith("ansible_")},
                    "ansible_connection": "local", "ansible_python_interpreter": "{{ ansible_playbook_python }}"}
    return {"name": ep.host, "vars": hostvars}


def _bind(cfg: Config, ep: Endpoint) -> str:
    bind = cfg.node(ep.host)["worker"]["bind_host"]
    return ep.host if bind == "localhost" else bind


def ssh_options(ssh: dict[str, Any]) -> list[str]:
    """ssh's -o options for the host key policy of an ssh section (Ansible's and `sage cluster dashboard`'s)."""
    known_hosts = Path(ssh["known_hosts"]).expanduser()
    return ["-o", f"StrictHostKeyChecking={ssh['strict_host_key_checking']}",
            "-o", f"UserKnownHostsFile={known_hosts}", "-o", "IdentitiesOnly=yes"]


def keepalive_options(connect_timeout: int) -> list[str]:
    """ssh's keepalive from ssh.connect_timeout. Ansible's ssh masters persist (ControlPersist, ansible.cfg): a new
    session through a master whose host hangs waits for the master's keepalive, not for ConnectTimeout, so the
    keepalive gives up after about connect_timeout too (3 unanswered, one every third of it). Not in ansible.cfg:
    ssh takes an option's first value, and ansible.cfg's ssh_args come before these."""
    return ["-o", f"ServerAliveInterval={max(1, math.ceil(connect_timeout / 3))}", "-o", "ServerAliveCountMax=3"]


def ssh_common_args(ssh: dict[str, Any]) -> str:
    """An ssh section's options for Ansible's connection: the host key policy and the keepalive."""
    return shlex.join([*ssh_options(ssh), *keepalive_options(ssh["connect_timeout"])])


def python_interpreter(cfg: Config) -> str:
    return _interpreter(cfg["remote"]["python_path"])


def _interpreter(path: str) -> str:
    """The configured Python runs the modules: no interpreter discovery, one SSH round trip less per host.

    Ansible puts the interpreter into a shell command unquoted, so a path that needs quoting is discovered instead;
    so is a Python the node detects itself (python_path auto).
    """
    return path if shlex.quote(path) == path and path != AUTO else "auto_silent"


# A worker's own setting (its mapping in workers_ssh_hosts) -> the host variable that carries it. The group
# variables carry the config-wide values; a host variable beats them, for sage, ansible-playbook and AWX alike.
# The env Ray runs in is the one the project is installed into: python_path and conda_env carry both roles' variables.
NODE_VARS = {("ssh", "user"): ("ansible_user",), ("ssh", "connect_timeout"): ("ansible_ssh_timeout",),
             ("remote", "python_path"): ("ray_node_python_path", "sage_deploy_python_path"),
             ("remote", "ray_command"): ("ray_node_ray_command",),
             ("remote", "conda_env"): ("ray_node_conda_env", "sage_deploy_conda_env"),
             ("remote", "python_version_match"): ("ray_node_python_version_match",),
             ("remote", "supervisor"): ("ray_node_supervisor",), ("ssh", "become"): ("ray_node_become",),
             ("remote", "sage_home"): ("sage_deploy_dest",),
             **{("worker", key): (var,) for key, var in NODE_TYPE_VARS.items()}}


def node_vars(cfg: Config, host: str) -> dict[str, Any]:
    """The host variables of one node's own settings: a worker's mapping, the head's own env (none without)."""
    own, node = cfg.overrides(host), cfg.node(host)
    out = {var: node[section][key] for (section, key), names in NODE_VARS.items() if key in own.get(section, {})
           for var in names}
    ssh = own.get("ssh", {})
    if "key_path" in ssh:
        out["ansible_ssh_private_key_file"] = str(Path(ssh["key_path"]).expanduser())
    if {"strict_host_key_checking", "known_hosts", "connect_timeout"} & set(ssh):
        out["ansible_ssh_common_args"] = ssh_common_args(node["ssh"])
    if "python_path" in own.get("remote", {}):
        out["ansible_python_interpreter"] = _interpreter(node["remote"]["python_path"])
    return out


def render(cfg: Config) -> str:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES),
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                             keep_trailing_newline=True)
    ssh = dict(cfg["ssh"], key_path=str(Path(cfg["ssh"]["key_path"]).expanduser()))
    return env.get_template("inventory.yml.j2").render(
        source=cfg.path or "the built-in single-machine default",
        ssh=ssh,
        ssh_common_args=ssh_common_args(cfg["ssh"]),
        python_interpreter=python_interpreter(cfg),
        role_vars=role_vars(cfg),
        head_vars=node_type_vars(cfg["head"]),
        worker_vars=node_type_vars(cfg["worker"]),
        head_host=_host(cfg.head_endpoint, cfg["head"]["host"], node_vars(cfg, cfg["head"]["host"])),
        worker_hosts=[_host(w, _bind(cfg, w), node_vars(cfg, w.host)) for w in cfg.workers],
    )


def build(cfg: Config) -> dict[str, Any]:
    return yaml.safe_load(render(cfg))


def _walk(name: str, group: dict[str, Any], out: dict[str, Any]) -> None:
    group = group or {}
    entry = out.setdefault(name, {})
    if group.get("vars"):
        entry["vars"] = group["vars"]
    if group.get("hosts"):
        entry["hosts"] = list(group["hosts"])
        for host, hostvars in group["hosts"].items():
            out["_meta"]["hostvars"].setdefault(host, {}).update(hostvars or {})
    if group.get("children"):
        entry["children"] = list(group["children"])
        for child, sub in group["children"].items():
            _walk(child, sub, out)


def as_script_json(inv: dict[str, Any]) -> dict[str, Any]:
    """The inventory in the JSON shape an executable inventory script returns for --list."""
    out: dict[str, Any] = {"_meta": {"hostvars": {}}}
    _walk("all", inv["all"], out)
    return out


def as_ini(inv: dict[str, Any]) -> str:
    flat = as_script_json(inv)
    lines: list[str] = []
    for group, entry in flat.items():
        if group in ("_meta", "all"):
            continue
        if entry.get("hosts"):
            lines.append(f"[{group}]")
            for host in entry["hosts"]:
                hv = flat["_meta"]["hostvars"][host]
                lines.append(" ".join([host] + [f"{k}={shlex.quote(_ini_value(v))}" for k, v in hv.items()]))
            lines.append("")
        if entry.get("children"):
            lines += [f"[{group}:children]", *entry["children"], ""]
        if entry.get("vars"):
            lines.append(f"[{group}:vars]")
            lines += [f"{k}={_ini_value(v)}" for k, v in entry["vars"].items()]
            lines.append("")
    return "\n".join(lines)


def _ini_value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def dumps(cfg: Config, fmt: str) -> str:
    if fmt == "yaml":
        return render(cfg)
    if fmt == "json":
        return json.dumps(as_script_json(build(cfg)), indent=2) + "\n"
    return as_ini(build(cfg))
