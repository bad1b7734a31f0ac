"""What each command does: which playbook, which action, which hosts; and what its result means.

The CLI calls one function here per command; every remote step is a playbook run (runner.py).
"""
from __future__ import annotations

import re
import signal
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ansible_collections.sage.cluster.plugins.plugin_utils import config as cfgmod
from ansible_collections.sage.cluster.plugins.plugin_utils.config import Config, ConfigError, Endpoint
from ansible_collections.sage.cluster.plugins.plugin_utils.security import tls_enabled, token_enabled

from ansible_collections.sage.cluster.plugins.module_utils import ray_node, sage_env, supervisor
from sage_cluster import config_edit, report, security, source
from sage_cluster.lock import cluster_lock
from sage_cluster.runner import RunResult, run_playbook

# The scope a command acts on -> the playbook that does it, and the group a shared playbook is limited to.
PLAYBOOKS = {"cluster": "cluster.yml", "head": "head.yml", "worker": "worker.yml"}
GROUPS = {"cluster": None, "head": "sage_head", "worker": "sage_workers"}


@dataclass
class Invocation:
    """What the command line asked of every command: --config, -v, --check, --json."""

    config: str | None = None
    verbose: int = 0
    check: bool = False
    json: bool = False


def load(invocation: Invocation) -> Config:
    cfg = cfgmod.load(invocation.config)
    for line in cfg.warnings:
        report.warn(line)
    for line in cfg.notes:
        report.note(line)
    if cfg.is_builtin:
        report.note("No config file found: using the built-in single-machine default (this machine as the head, "
                    "no workers). `sage config init` writes a config to edit; `sage cluster info` says where sage "
                    "looks.")
    return cfg


def dashboard_warning(cfg: Config) -> str | None:
    host = cfg["head"]["dashboard_host"]
    if cfg["security"]["ray_auth"] == "off" and host not in cfgmod.LOOPBACK_NAMES:
        return (f"the Ray dashboard listens on {host}:{cfg['head']['dashboard_port']}; anyone who reaches it can "
                "submit jobs that run any code on every node (CVE-2023-48022, ShadowRay) because security.ray_auth is "
                "off. Turn token auth on, or bind the dashboard to 127.0.0.1.")
    return None


def run(cfg: Config, invocation: Invocation, playbook: str, action: str, *, limit: str | None = None,
        extra: dict[str, Any] | None = None, passwords: dict[str, str] | None = None) -> RunResult:
    """Run one playbook; Ctrl-C cancels it cleanly and the result says which hosts had finished."""
    cancel = threading.Event()
    previous = signal.getsignal(signal.SIGINT)

    def on_interrupt(signum: int, frame: Any) -> None:
        report.note("\nInterrupted: stopping the Ansible run...")
        cancel.set()

    in_main = threading.current_thread() is threading.main_thread()
    if in_main:
        signal.signal(signal.SIGINT, on_interrupt)
    try:
        return run_playbook(cfg, playbook, {"sage_action": action, **(extra or {})}, limit=limit,
                            check=invocation.check, verbosity=invocation.verbose,
                            on_event=report.Progress(enabled=not invocation.json), cancel=cancel,
                            passwords=passwords)
    finally:
        if in_main:
            signal.signal(signal.SIGINT, previous)


def empty_worker_result(cfg: Config, scope: str) -> RunResult | None:
    """For `sage worker ...` on a config without workers: a note saying so and an empty, successful result, so
    that nothing runs (the run would report only the head). None when there is something to run."""
    if scope != "worker" or cfg.workers:
        return None
    report.note(f"There are no workers: {cfgmod.WORKERS_KEY} in {cfg.path or 'the built-in default'} is empty. "
                "Nothing to do.")
    return RunResult(playbook=PLAYBOOKS[scope], hosts={}, status="successful", seconds=0.0, artifact_dir="")


def node_action(invocation: Invocation, scope: str, action: str) -> tuple[Config, RunResult]:
    cfg = load(invocation)
    if empty := empty_worker_result(cfg, scope):
        return cfg, empty
    if action in ("start", "restart") and scope in ("cluster", "head") and (warning := dashboard_warning(cfg)):
        report.warn(warning)
    if action in ("start", "restart") and (change := security.tls_change(cfg)):
        report.note(change)
    with cluster_lock(cfg.path):
        result = run(cfg, invocation, PLAYBOOKS[scope], action)
    if action in ("start", "restart") and result.ok and not invocation.check:
        security.record_tls_mode(cfg)
    return cfg, result


def supervisors(cfg: Config) -> dict[str, dict[str, str]]:
    """Each node's remote.supervisor and what it means, from the config alone: info asks no node (status and doctor
    say what each node has, and would get)."""
    hosts = [cfg["head"]["host"], *(w.host for w in cfg.workers)]
    return {host: {"asked": (asked := cfg.node(host)["remote"]["supervisor"]),
                   "text": supervisor.configured(asked, cfg.node(host)["ssh"]["become"])} for host in hosts}


def deploy_plan(cfg: Config) -> tuple[str, str | None]:
    """The directory a deploy would send, and why it would be refused (None: it would not)."""
    src = cfg["deploy"]["source"]
    return str(Path(src).expanduser().resolve()), source.problem(src, cfg["ssh"]["key_path"])


def check_source(cfg: Config) -> None:
    """A deploy sends deploy.source to every node: refuse, before any host is touched, one that holds secrets."""
    _, why = deploy_plan(cfg)
    if why:
        raise ConfigError(f"{cfg.where('deploy.source')} = {cfg['deploy']['source']!r}: {why}, and a deploy sends "
                          "it to every node. Fix: set deploy.source to your project's directory, or run sage there.")


def deploy(invocation: Invocation, scope: str) -> tuple[Config, RunResult]:
    cfg = load(invocation)
    check_source(cfg)
    if empty := empty_worker_result(cfg, scope):
        return cfg, empty
    with cluster_lock(cfg.path):
        return cfg, run(cfg, invocation, "deploy.yml", "deploy", limit=GROUPS[scope])


def node_settings(given: dict[str, Any]) -> dict[str, Any]:
    """`scale add`'s resource options ({"num_gpus": "4", "resources": ["accel=1"], ...}) -> the new worker's own
    settings, checked like the same keys in the file; a bad one is a one-line ConfigError naming the option."""
    out: dict[str, Any] = {}
    for key in worker_ray_keys():
        raw = given.get(key.name)
        if raw is None or raw == ():
            continue
        option = resource_option(key)
        if isinstance(raw, tuple):  # k=v options, each may also be k=v,k=v
            pairs = [p.partition("=") for text in raw for p in text.split(",") if p.strip()]
            if any(not sep or not k.strip() for k, sep, _ in pairs):
                raise ConfigError(f"argument {option} {' '.join(raw)!r} must be NAME=VALUE. Fix: e.g. {option} "
                                  f"{'accel=1' if key.kind == 'resources' else 'zone=a'}.")
            value: Any = {k.strip(): _number(v.strip()) if key.kind == "resources" else v.strip()
                          for k, _, v in pairs}
        else:
            value = int(raw) if re.fullmatch(r"-?[0-9]+", raw.strip()) else raw
        out[key.name] = cfgmod.check_ray_value(key, value, f"argument {option}")
    return out


def worker_ray_keys() -> list[cfgmod.Key]:
    """The schema's Ray resource keys of worker: (what a worker's own mapping and `scale add`'s options set)."""
    return [k for k in cfgmod.SCHEMA if k.section == "worker" and k.name in cfgmod.NODE_RAY_KEYS]


def resource_option(key: cfgmod.Key) -> str:
    """`scale add`'s option for a Ray resource key: --num-cpus ... --resources, and --label for labels."""
    return "--label" if key.kind == "labels" else f"--{key.name.replace('_', '-')}"


def _number(text: str) -> Any:
    try:
        return float(text) if "." in text else int(text)
    except ValueError:
        return text  # check_ray_value says what is wrong with it


def tls_config(invocation: Invocation) -> Config:
    """The config, refused in one line when its TLS is off (the `tls` commands have nothing to act on then)."""
    cfg = load(invocation)
    if not tls_enabled(cfg):
        raise ConfigError(f"{cfg.path or 'the built-in default'}: security.tls is off, so the cluster's connections "
                          "take no certificate. Fix: set it to on and run `sage cluster restart`.")
    return cfg


def tls_client_env(invocation: Invocation) -> dict[str, str]:
    """The variables a Ray driver or client on this machine needs: TLS's, with a client certificate of this machine
    (made once, signed by the cluster's CA), and the token's."""
    cfg = tls_config(invocation)
    ca = security.tls_ca()
    key, cert = ca.client()
    variables = ray_node.tls_env(str(ca.cert_path), str(cert), str(key))
    # Ray turns token auth on by itself when it finds a token file: say which (made now if no start made it yet,
    # so the path named is a file the next start uses too), or that it is off.
    if token_enabled(cfg):
        variables.update({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(security.token_file())})
    else:
        variables["RAY_AUTH_MODE"] = "disabled"
    return variables


def tls_rotate(invocation: Invocation, new_ca: bool) -> tuple[Config, list[tuple[str, RunResult]]]:
    """New certificates for every node, each a restart of its Ray (Ray reads certificates at start only), as
    (what ran, its result) steps. With the head's fault tolerance on and the same CA: the head first (it comes back on
    its store, the workers wait for it), then each worker alone, so it stays the same cluster. A new CA (the old
    one kept beside it) or fault tolerance off: one restart of the whole cluster, a new cluster."""
    cfg = tls_config(invocation)
    renew = {"ray_node_tls_renew": True}
    whole = new_ca or cfg["head"]["fault_tolerance"] == "none"
    report.note("Rotating the certificates: " + (
        f"the whole cluster restarts at once, a new cluster ({'a new CA' if new_ca else 'fault tolerance off'})."
        if whole else "the head restarts on its store, then each worker, one at a time."))
    with cluster_lock(cfg.path):
        if whole:
            if new_ca and not invocation.check:
                report.note(f"The old CA is kept in {security.retire_ca()}.")
            return cfg, [("cluster restart", run(cfg, invocation, "cluster.yml", "restart", extra=renew))]
        steps = [(f"head {cfg['head']['host']}", run(cfg, invocation, "head.yml", "start", extra=renew))]
        for worker in cfg.workers:
            if not steps[-1][1].ok:
                break
            steps.append((f"worker {worker.host}", run(cfg, invocation, "worker.yml", "start", limit=worker.host,
                                                       extra=renew)))
        return cfg, steps


def scale(invocation: Invocation, op: str, endpoint: Endpoint, settings: dict[str, Any] | None = None,
          provision: bool = False) -> tuple[Config, RunResult]:
    """Edit workers_ssh_hosts in the file (comments kept), then deploy + start, or stop, on that host.

    settings: the new worker's own resources (from node_settings()): written as its mapping in the file.
    provision: first give the new worker this machine's Ray (playbooks/provision.yml), for a bare machine.
    In check mode the file is left alone and the playbook runs in check mode against the edited config.
    """
    cfg = load(invocation)
    if cfg.path is None:  # the built-in default
        raise ConfigError(f"there is no config file to add workers to. Fix: `sage config init` writes "
                          f"{cfgmod.DEFAULT_PATH}; set head.host there, then scale.")
    with cluster_lock(cfg.path):  # the edit reads the file anew under the lock: concurrent scales all count
        if op == "add":
            updated = config_edit.edit_workers(cfg.path, add=endpoint, dry_run=True, settings=settings)
            check_source(updated)  # the new worker gets a deploy: refuse a bad source before the file changes
            if not invocation.check:
                updated = config_edit.edit_workers(cfg.path, add=endpoint, settings=settings)
            if provision and not (provisioned := run(updated, invocation, "provision.yml", "provision",
                                                     limit=endpoint.host)).ok:
                return updated, provisioned
            return updated, run(updated, invocation, "scale.yml", "add", extra={"sage_scale_host": endpoint.host})
        before = cfgmod.load(cfg.path)
        config_edit.edit_workers(cfg.path, remove=endpoint, dry_run=invocation.check)
        # The old config still lists the host, so its inventory can reach it to stop Ray there. Ansible's host
        # patterns are case-sensitive: name the host as the config spells it.
        listed = next(w.host for w in before.workers if w.host.lower() == endpoint.host.lower())
        return before, run(before, invocation, "scale.yml", "remove", extra={"sage_scale_host": listed})


def status(invocation: Invocation, scope: str) -> tuple[Config, RunResult, dict[str, Any]]:
    cfg = load(invocation)
    # Status is one play on every node of the scope at once (status.yml), for the cluster not head then workers.
    result = empty_worker_result(cfg, scope) or run(cfg, invocation, "status.yml", "status", limit=GROUPS[scope])
    view = report.cluster_view(result) or {}
    add_ray_resources(result, view)
    counted = note_alive_per_host(result, view)
    healthy = result.ok and all(h.data.get("running") for h in result.hosts.values()) and counted
    return cfg, result, {"healthy": healthy, "cluster": view}


def note_alive_per_host(result: RunResult, view: dict[str, Any]) -> bool:
    """Give each host whose Ray runs but that Ray's table lists other than once alive its count and why (issue 32:
    a node Ray dropped, an old node not dropped yet, its new raylet not counted yet), so that its own row says it.
    Whether Ray counts the running raylet of each of those hosts (True when there is no table to ask)."""
    if view.get("nodes") is None:
        return True
    running = {h.data.get("node_ip"): h for h in result.hosts.values()
               if h.data.get("running") and not (h.failed or h.unreachable)}
    counts = ray_node.alive_per_host(view["nodes"], running)
    every = True
    for ip, h in running.items():
        mine = ray_node.counted(view["nodes"], ip, h.data.get("node_id"))
        every = every and mine
        if ip in counts:
            h.data.update(ray_alive=counts[ip], ray_note=ray_node.alive_count_note(counts[ip]))
        elif not mine:
            h.data.update(ray_joined=False, ray_note=ray_node.NOT_JOINED_NOTE)
    return every


# A node's declared resources (ray start options) -> the names Ray reports them under.
RAY_RESOURCE_NAMES = {k.name: k.ray_name for k in cfgmod.RAY_KEYS if k.ray_name}


def add_ray_resources(result: RunResult, view: dict[str, Any]) -> None:
    """Give each host what Ray reports for its node (resources, labels) and how that differs from the config."""
    by_ip = {n["node_ip"]: n for n in view.get("nodes") or [] if n.get("alive")}
    for h in result.hosts.values():
        node = by_ip.get(h.data.get("node_ip"))
        if node is None or not h.data.get("running"):
            continue
        h.data["ray_resources"] = node.get("resources", {})
        h.data["ray_labels"] = node.get("labels", {})
        h.data["resource_mismatch"] = resource_mismatch(h.data.get("declared") or {}, h.data["ray_resources"],
                                                        h.data["ray_labels"])


def resource_mismatch(declared: dict[str, Any], resources: dict[str, float], labels: dict[str, str]) -> list[str]:
    """Where Ray's view of a node differs from its config, one phrase each (empty: they agree).

    Undeclared CPU, GPU and memory are Ray's to choose; custom resources and labels must match both ways.
    """
    import math

    out = []
    for key, name in RAY_RESOURCE_NAMES.items():
        want, have = declared.get(key), resources.get(name, 0)  # Ray leaves out a resource it has 0 of
        if want is not None and not math.isclose(want, have, rel_tol=1e-3, abs_tol=1e-4):
            out.append(f"{name} declared {want:g}, Ray has {have:g}")
    custom = {k: v for k, v in resources.items()
              if k not in RAY_RESOURCE_NAMES.values() and not k.startswith(("node:", "accelerator_type:"))}
    want_custom = declared.get("resources") or {}
    for name in sorted(set(custom) | set(want_custom)):
        wanted, had = want_custom.get(name), custom.get(name)
        if wanted is None or had is None or not math.isclose(wanted, had, abs_tol=1e-4):
            out.append(f"{name} declared {'none' if wanted is None else f'{wanted:g}'}, "
                       f"Ray has {'none' if had is None else f'{had:g}'}")
    want_labels = declared.get("labels") or {}
    for key in sorted(set(labels) | set(want_labels)):
        if want_labels.get(key) != labels.get(key):
            out.append(f"label {key} declared {want_labels.get(key, 'none')!s}, Ray has {labels.get(key, 'none')!s}")
    return out


def logs(invocation: Invocation, scope: str, lines: int) -> tuple[Config, RunResult]:
    cfg = load(invocation)
    return cfg, empty_worker_result(cfg, scope) or run(cfg, invocation, PLAYBOOKS[scope], "logs",
                                              extra={"ray_node_log_lines": lines})


CLOCK_SKEW_LIMIT = 5.0


def _minor(version: str | None) -> str | None:
    return ".".join(version.split(".")[:2]) if version else None


def controller_versions() -> dict[str, str | None]:
    import platform

    from ansible_collections.sage.cluster.plugins.plugin_utils import controller
    return {"python": platform.python_version(), "ray": controller.ray_version() or None}


def doctor(invocation: Invocation) -> tuple[Config, RunResult, list[dict[str, Any]]]:
    """One row per host and check, each with ok, detail and a fix hint."""
    cfg = load(invocation)
    result = run(cfg, invocation, "doctor.yml", "doctor")
    mine = controller_versions()
    rows: list[dict[str, Any]] = []

    def row(host: str, check: str, ok: bool, detail: str, fix: str = "", warn: bool = False) -> None:
        rows.append({"host": host, "check": check, "ok": ok, "warn": warn, "detail": detail,
                     "fix": fix if warn or not ok else ""})

    user = cfg["ssh"]["user"]
    install = cfg["deploy"]["install"]
    installs = isinstance(install, list) or (install == "auto" and source.is_packaged(cfg["deploy"]["source"]))
    for host, h in sorted(result.hosts.items()):
        d = h.data.get("doctor")
        row(host, "ssh", not h.unreachable, h.error if h.unreachable else "reachable",
            f"check that `ssh -i {cfg['ssh']['key_path']} {user}@{host}` logs in without a password")
        if d is None:
            if not h.unreachable:
                row(host, "checks", False, h.error or "no result", "run with -vvv to see why the checks failed")
            continue
        for key in ("python_path", "ray_command"):
            row(host, key, d[key]["ok"], d[key]["detail"],
                f"install the env there, or set remote.{key} to where it is")
        versions = d.get("versions") or {}
        # Ray insists on the same Ray version and the same Python major.minor on every node and client.
        same = (_minor(versions.get("python")) == _minor(mine["python"]) and versions.get("ray") == mine["ray"])
        detail = versions.get("error") or f"python {versions.get('python')}, ray {versions.get('ray')}"
        row(host, "versions", same, detail,
            f"every node and this machine need python {_minor(mine['python'])}.x and ray {mine['ray']}")
        if "env_writable" in d:  # a shared env the user cannot write is fine until a deploy must install into it
            writable, detail = d["env_writable"]["ok"], d["env_writable"]["detail"]
            row(host, "env", writable or not installs,
                detail if writable or installs else f"{detail}: fine, deploy.install installs nothing there",
                sage_env.UNWRITABLE_FIX.format(user=user))
        sup = d["supervisor"]
        row(host, "supervisor", sup["ok"], sup["detail"], sup["fix"], warn=sup["warn"])
        for key in ("temp_dir", "log_dir"):
            row(host, key, d[key]["ok"], d[key]["detail"], f"make it writable for {user}, or change the config")
            if space := d.get(f"{key}_space"):
                row(host, f"{key} space", space["ok"], space["detail"],
                    f"free space there, or set {key} in the config to a disk with room", warn=space["warn"])
            cleanup = d[f"{key}_cleanup"]
            row(host, f"{key} cleanup", cleanup["ok"], cleanup["detail"], cleanup["fix"], warn=cleanup["warn"])
        if cert := d.get("tls"):
            row(host, "tls cert", cert["ok"], cert["detail"], cert["fix"], warn=cert["warn"])
        if store := d.get("gcs_store"):
            row(host, "gcs store", store["ok"], store["detail"],
                "make head.gcs_storage_dir writable for the SSH user" if cfg["head"]["fault_tolerance"] == "local"
                else "check head.redis_address and head.redis_password_file, and that the head reaches Redis")
        for port, state in (d.get("ports") or {}).items():
            row(host, f"port {port}", state["ok"], state["detail"],
                f"see what holds it (`ss -ltnp | grep :{port}`) or choose another port in head.*")
        skew = d["time"] - h.reported_at
        row(host, "clock", abs(skew) <= CLOCK_SKEW_LIMIT, f"{skew:+.1f}s from this machine",
            "synchronise the clocks (chrony or systemd-timesyncd)")
        if (deployed := h.data.get("deploy")) is not None:
            row(host, "deploy", not deployed["stale"] and deployed["install_ok"] is not False,
                report.deployed_text(deployed), "run `sage cluster deploy`; its summary gives each node's reason")
    if cfg["head"]["fault_tolerance"] != "none":
        report.warn("fault tolerance keeps the workers' tasks and actors through a lost head, not the head's own: "
                    "job drivers run on the head by default and die with it (Ray's rule); a job that asks for an "
                    "entrypoint resource only workers have (worker.resources, `sage job submit "
                    "--entrypoint-resources K=V`) runs its driver on a worker.")
    return cfg, result, rows
