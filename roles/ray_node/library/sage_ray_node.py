#!/usr/bin/python
"""Ansible module: one Ray node (head or worker) brought to a state in one remote call."""
from __future__ import annotations

DOCUMENTATION = r"""
module: sage_ray_node
short_description: Start, stop, restart, inspect or read the log of one Ray node
description:
  - Idempotent. C(started) leaves a node alone when its Ray already runs and is joined to the configured head.
  - Finds the node's Ray by reading /proc for this user's raylet and gcs_server processes.
  - Every command is an argument list; nothing is passed through a shell.
options:
  state: {type: str, required: true, choices: [started, stopped, restarted, status, logs, wait, doctor]}
  node_type: {type: str, required: true, choices: [head, worker]}
  ray_command: {type: path, required: true}
  python_path: {type: path, required: true}
  conda_env: {type: str, default: ""}
  node_ip: {type: str, required: true, description: IP or host name, resolved on the node}
  head_host: {type: str, required: true}
  head_port: {type: int, required: true}
  dashboard_host: {type: str, default: 127.0.0.1}
  dashboard_port: {type: int, default: 8265}
  temp_dir: {type: path, required: true}
  log_dir: {type: path, required: true}
  log_lines: {type: int, default: 50}
  cluster_view: {type: bool, default: false, description: head only, list Ray's nodes}
  wait_for: {type: list, elements: str, default: [], description: node IPs that must be alive (state=wait)}
  timeout: {type: int, default: 60}
  auth_token: {type: str, no_log: true, description: Ray auth token; set = RAY_AUTH_MODE=token, unset = disabled}
  auth_token_path: {type: path, default: ~/.ray/auth_token, description: where the node keeps the token (0600)}
  num_cpus: {type: int, description: ray start --num-cpus; unset = Ray counts them}
  num_gpus: {type: int, description: ray start --num-gpus; unset = Ray counts them}
  memory: {type: int, description: ray start --memory (bytes); unset = Ray decides}
  object_store_memory: {type: int, description: ray start --object-store-memory (bytes); unset = Ray decides}
  resources: {type: dict, default: {}, description: custom resources (name -> amount), ray start --resources}
  labels: {type: dict, default: {}, description: Ray node labels (key -> value), ray start --labels}
"""

import json
import os
import signal
import socket
import subprocess
import tempfile
import time

from ansible.module_utils.basic import AnsibleModule

# The `ray start` options a node's resources are set with, in its flag order.
RESOURCE_OPTIONS = ("num_cpus", "num_gpus", "memory", "object_store_memory", "resources", "labels")

# Ask Ray's GCS for its node table: no driver, no job, about 1 s.
NODES_SNIPPET = r"""
import json, sys
from ray._raylet import GcsClient
nodes = GcsClient(address=sys.argv[1]).get_all_node_info(timeout=10).values()
print(json.dumps([{"node_ip": n.node_manager_address, "hostname": n.node_manager_hostname,
                   "alive": n.state == 0, "is_head": n.is_head_node,
                   "resources": {k: v for k, v in n.resources_total.items() if not k.startswith("node:")},
                   "labels": {k: v for k, v in n.labels.items() if not k.startswith("ray.io/")}}
                  for n in nodes]))
"""


def is_ray(argv):
    name = os.path.basename(argv[0])
    # `python -m ray.util.client.server` (the head's client server) has neither a ray path nor a ray:: name.
    return (name in ("raylet", "gcs_server") or argv[0].startswith("ray::")
            or any("/site-packages/ray/" in a or a.startswith("ray.") for a in argv))


# The node's Python and Ray versions, without importing Ray (about 1 s saved per node).
VERSIONS_SNIPPET = r"""
import json, sys, importlib.metadata as md
try:
    ray = md.version("ray")
except md.PackageNotFoundError:
    ray = None
print(json.dumps({"python": sys.version.split()[0], "ray": ray}))
"""


def ray_processes():
    """This user's Ray processes, read from /proc: {pid: argv}.

    `ray stop` kills every Ray process it can see, other users' too when run as root; this module only ever
    looks at, and stops, the processes of the user it runs as.
    """
    found = {}
    uid = os.getuid()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.stat(f"/proc/{pid}").st_uid != uid:
                continue
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                argv = fh.read().decode(errors="replace").rstrip("\0").split("\0")
        except OSError:
            continue
        if argv and argv[0] and int(pid) != os.getpid() and is_ray(argv):
            found[int(pid)] = argv
    return found


def options_of(procs, name):
    for argv in procs.values():
        if os.path.basename(argv[0]) == name:
            return dict(a[2:].partition("=")[::2] for a in argv[1:] if a.startswith("--"))
    return None


def node_state():
    procs = ray_processes()
    raylet = options_of(procs, "raylet")
    gcs = options_of(procs, "gcs_server")
    port = (gcs or {}).get("gcs_server_port", "")
    return {
        "running": raylet is not None,
        "node_ip": raylet.get("node_ip_address") if raylet else None,
        "gcs_address": raylet.get("gcs-address") if raylet else None,
        "gcs_port": int(port) if port.isdigit() else None,
        "pids": sorted(procs),
    }


def terminate(grace=3):
    """SIGTERM this user's Ray processes, gcs_server last (as `ray stop` does: it ignores SIGTERM while its
    clients are alive), then SIGKILL what is left after a grace."""
    def is_gcs(argv):
        return os.path.basename(argv[0]) == "gcs_server"

    deadline = time.monotonic() + grace
    for phase in (lambda argv: not is_gcs(argv), is_gcs):
        for pid, argv in ray_processes().items():
            if phase(argv):
                try:
                    os.kill(pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        while any(phase(a) for a in ray_processes().values()) and time.monotonic() < deadline:
            time.sleep(0.1)
    for pid in ray_processes():
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 5
    while ray_processes() and time.monotonic() < deadline:
        time.sleep(0.1)


class Node:
    def __init__(self, module):
        self.m = module
        self.p = module.params

    def fail(self, msg, **extra):
        # The same report shape as on success, so plays that read the results never meet a missing key.
        self.m.fail_json(msg=msg, sage=dict(node_state(), node_type=self.p["node_type"], **extra))

    def resolve(self, name, what):
        try:
            return socket.gethostbyname(name)
        except OSError as exc:
            self.fail(f"cannot resolve {what} {name!r} on this host: {exc}")

    def env(self):
        env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0")
        bin_dir = os.path.dirname(self.p["python_path"])
        env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "/usr/bin:/bin")
        if self.p["conda_env"]:
            env.update(CONDA_PREFIX=os.path.dirname(bin_dir), CONDA_DEFAULT_ENV=self.p["conda_env"])
        if self.p["auth_token"]:
            env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=self.p["auth_token_path"])
        else:  # explicit: Ray would turn auth on by itself if it found an old token file
            env["RAY_AUTH_MODE"] = "disabled"
            env.pop("RAY_AUTH_TOKEN", None)
        return env

    def install_token(self):
        """Write the token 0600 (dir 0700) when it differs; True when the file changed."""
        token, path = self.p["auth_token"], self.p["auth_token_path"]
        if not token:
            return False
        try:
            with open(path) as fh:
                if fh.read().strip() == token and os.stat(path).st_mode & 0o077 == 0:
                    return False
        except OSError:
            pass
        if self.m.check_mode:
            return True
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path))
        with os.fdopen(fd, "w") as fh:
            fh.write(token + "\n")
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
        return True

    def check_executables(self):
        for key in ("ray_command", "python_path"):
            path = self.p[key]
            if not (os.path.isfile(path) and os.access(path, os.X_OK)):
                self.fail(f"{key} {path} is not an executable file on this host (config remote.{key})")

    @property
    def log_file(self):
        return os.path.join(self.p["log_dir"], f"{self.p['node_type']}.log")

    def head_address(self):
        return f"{self.resolve(self.p['head_host'], 'head host')}:{self.p['head_port']}"

    def joined(self, state):
        """Whether this node's running Ray belongs to the configured cluster."""
        if not state["running"]:
            return False
        if self.p["node_type"] == "head":
            return state["gcs_port"] == self.p["head_port"]
        if state["gcs_address"] != self.head_address():
            return False
        # A raylet can outlive its head (e.g. after a head restart): ask the head whether it counts this node.
        nodes, _ = self.cluster_nodes(state)
        return any(n["alive"] and n["node_ip"] == state["node_ip"] for n in nodes or [])

    def check_head_reachable(self):
        """Fail in seconds, not after Ray's own long retries, when the head does not answer."""
        host, _, port = self.head_address().rpartition(":")
        try:
            socket.create_connection((host, int(port)), timeout=5).close()
        except OSError as exc:
            self.fail(f"the head {host}:{port} does not accept connections ({exc.strerror or exc}); "
                      "start it first (sage head start)")

    def doctor(self, state):
        """Read-only checks of this node; the controller compares versions and clocks across nodes."""
        p = self.p
        checks = {"time": time.time()}
        for key in ("python_path", "ray_command"):
            path = p[key]
            checks[key] = {"ok": os.path.isfile(path) and os.access(path, os.X_OK), "detail": path}
        if checks["python_path"]["ok"]:
            proc = subprocess.run([p["python_path"], "-c", VERSIONS_SNIPPET], capture_output=True, text=True,
                                  env=self.env(), timeout=60, stdin=subprocess.DEVNULL)
            if proc.returncode == 0:
                checks["versions"] = json.loads(proc.stdout)
            else:
                checks["versions"] = {"error": (proc.stderr.strip().splitlines() or ["no output"])[-1]}
        for key in ("temp_dir", "log_dir"):
            path = p[key]
            probe = path
            while not os.path.exists(probe):
                probe = os.path.dirname(probe)
            ok = os.path.isdir(probe) and os.access(probe, os.W_OK | os.X_OK)
            checks[key] = {"ok": ok, "detail": path if probe == path else f"{path} (to be created in {probe})"}
        if p["node_type"] == "head":
            checks["ports"] = {str(port): self.port_state(port, state)
                               for port in (p["head_port"], p["dashboard_port"])}
        return checks

    def port_state(self, port, state):
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("", port))
                return {"ok": True, "detail": "free"}
            except OSError:
                pass
        if state["running"] and (state["gcs_port"] == port or port == self.p["dashboard_port"]):
            return {"ok": True, "detail": "held by this cluster's Ray"}
        return {"ok": False, "detail": "in use by another process"}

    def start_argv(self):
        p = self.p
        ip = self.resolve(p["node_ip"], "node address")
        argv = [p["ray_command"], "start", f"--node-ip-address={ip}", f"--temp-dir={p['temp_dir']}",
                "--disable-usage-stats"]
        argv += self.resource_args()
        if p["node_type"] == "head":
            return argv + ["--head", f"--port={p['head_port']}", f"--dashboard-host={p['dashboard_host']}",
                           f"--dashboard-port={p['dashboard_port']}"]
        return argv + [f"--address={self.head_address()}"]

    def declared(self):
        """The resources and labels this node is configured with (unset ones: Ray decides)."""
        return {k: self.p[k] for k in RESOURCE_OPTIONS if self.p[k] not in (None, {})}

    def resource_args(self):
        args = [f"--{k.replace('_', '-')}={self.p[k]}" for k in RESOURCE_OPTIONS[:4] if self.p[k] is not None]
        if self.p["resources"]:
            args.append("--resources=" + json.dumps(self.p["resources"], sort_keys=True))
        if self.p["labels"]:
            # Ray's key=value,key=value form (its JSON form is deprecated); the config refuses ',' and '='.
            args.append("--labels=" + ",".join(f"{k}={v}" for k, v in sorted(self.p["labels"].items())))
        return args

    def run_logged(self, argv, timeout):
        """Run with output appended to the node's log; stdin/stdout never tie Ray's daemons to our SSH session."""
        os.makedirs(self.p["log_dir"], mode=0o755, exist_ok=True)
        os.makedirs(self.p["temp_dir"], mode=0o755, exist_ok=True)
        with open(self.log_file, "ab") as log:
            log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(argv[1:3])}\n".encode())
            log.flush()
            try:
                return subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                      env=self.env(), timeout=timeout, start_new_session=True).returncode
            except subprocess.TimeoutExpired:
                return None

    def log_reason(self):
        """The most telling line of the log's last attempt, for a one-line failure message."""
        lines = self.tail(40)
        for line in reversed(lines):
            if any(w in line for w in ("Error", "error", "failed", "Failed", "refused")):
                return line.strip()[:300]
        return lines[-1].strip()[:300] if lines else "no output"

    def tail(self, count):
        try:
            with open(self.log_file, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                fh.seek(max(0, fh.tell() - 256 * 1024))
                return fh.read().decode(errors="replace").splitlines()[-count:] if count else []
        except FileNotFoundError:
            return []

    def start(self, state):
        if self.joined(state):
            return False, state
        if self.m.check_mode:
            return True, state
        self.check_executables()
        if self.p["node_type"] == "worker":
            self.check_head_reachable()
        if state["running"]:  # Ray from another cluster or config: replace it
            self.stop(state)
        rc = self.run_logged(self.start_argv(), self.p["timeout"])
        if rc != 0:
            terminate()  # leave no half-started Ray (a dashboard without a raylet) behind
            why = "timed out" if rc is None else f"exit {rc}"
            self.fail(f"ray start failed ({why}): {self.log_reason()} (log: {self.log_file})")
        return True, node_state()

    def stop(self, state):
        if not state["pids"]:
            return False, state
        if not self.m.check_mode:
            terminate()
        return True, node_state()

    def dashboard_nodes(self):
        """Ray's node table from the dashboard's state API on the head: ~0.05 s against ~2 s for importing Ray."""
        import urllib.request  # 0.07 s of CPU that only the head's view needs, not every node's status
        p = self.p
        host = "127.0.0.1" if p["dashboard_host"] in ("0.0.0.0", "::", "localhost") else p["dashboard_host"]
        request = urllib.request.Request(f"http://{host}:{p['dashboard_port']}/api/v0/nodes?limit=10000")
        if p["auth_token"]:
            request.add_header("Authorization", f"Bearer {p['auth_token']}")
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                rows = json.load(response)["data"]["result"]["result"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return [{"node_ip": n["node_ip"], "hostname": n.get("node_name"), "alive": n["state"] == "ALIVE",
                 "is_head": n.get("is_head_node", False),
                 "resources": {k: v for k, v in (n.get("resources_total") or {}).items() if not k.startswith("node:")},
                 "labels": {k: v for k, v in (n.get("labels") or {}).items() if not k.startswith("ray.io/")}}
                for n in rows]

    def cluster_nodes(self, state):
        if self.p["node_type"] == "head":
            nodes = self.dashboard_nodes()
            if nodes is not None:
                return nodes, None
        address = state["gcs_address"] or self.head_address()
        proc = subprocess.run([self.p["python_path"], "-c", NODES_SNIPPET, address], capture_output=True,
                              text=True, env=self.env(), timeout=60, stdin=subprocess.DEVNULL)
        if proc.returncode != 0:
            tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            return None, f"cannot read Ray's node table at {address}: {tail}"
        return json.loads(proc.stdout), None

    def wait(self, state):
        if not state["running"]:
            self.fail("Ray is not running on the head: start it first (sage head start)")
        want = set(self.p["wait_for"])
        deadline = time.monotonic() + self.p["timeout"]
        while True:
            nodes, err = self.cluster_nodes(state)
            alive = {n["node_ip"] for n in nodes or [] if n["alive"]}
            missing = sorted(want - alive)
            if not missing and nodes is not None:
                return False, self.view(nodes)
            if time.monotonic() > deadline:
                self.fail(f"not alive in Ray after {self.p['timeout']} s: {', '.join(missing) or err}",
                          cluster=self.view(nodes or []))
            time.sleep(0.25)  # a dashboard query costs ~0.05 s: poll often, the start waits on this

    @staticmethod
    def view(nodes):
        alive = [n for n in nodes if n["alive"]]
        totals = {}
        for n in alive:
            for k, v in n["resources"].items():
                totals[k] = totals.get(k, 0) + v
        return {"alive": len(alive), "nodes": nodes, "resources": totals}


def main():
    spec = {
        "state": dict(type="str", required=True, choices=["started", "stopped", "restarted", "status", "logs", "wait", "doctor"]),
        "node_type": dict(type="str", required=True, choices=["head", "worker"]),
        "ray_command": dict(type="path", required=True),
        "python_path": dict(type="path", required=True),
        "conda_env": dict(type="str", default=""),
        "node_ip": dict(type="str", required=True),
        "head_host": dict(type="str", required=True),
        "head_port": dict(type="int", required=True),
        "dashboard_host": dict(type="str", default="127.0.0.1"),
        "dashboard_port": dict(type="int", default=8265),
        "temp_dir": dict(type="path", required=True),
        "log_dir": dict(type="path", required=True),
        "log_lines": dict(type="int", default=50),
        "cluster_view": dict(type="bool", default=False),
        "wait_for": dict(type="list", elements="str", default=[]),
        "timeout": dict(type="int", default=60),
        "auth_token": dict(type="str", default=None, no_log=True),
        "auth_token_path": dict(type="path", default="~/.ray/auth_token"),
        "num_cpus": dict(type="int"),
        "num_gpus": dict(type="int"),
        "memory": dict(type="int"),
        "object_store_memory": dict(type="int"),
        "resources": dict(type="dict", default={}),
        "labels": dict(type="dict", default={}),
    }
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    node = Node(module)
    p = module.params
    state = node_state()
    changed = False
    if p["state"] in ("stopped", "restarted"):
        changed, state = node.stop(state)
    if p["state"] in ("started", "restarted"):
        token_changed = node.install_token()
        if token_changed and state["running"] and not module.check_mode:
            _, state = node.stop(state)  # a running node keeps its old token: restart it with the new one
        started, state = node.start(state)
        changed = changed or started or token_changed
    report = dict(state, node_type=p["node_type"], log_file=node.log_file, declared=node.declared())
    if p["state"] == "logs":
        report["log"] = node.tail(p["log_lines"])
    if p["state"] == "doctor":
        report["doctor"] = node.doctor(state)
    if p["state"] == "wait":
        _, report["cluster"] = node.wait(state)
    elif p["cluster_view"] and state["running"]:
        nodes, err = node.cluster_nodes(state)
        report["cluster"] = node.view(nodes) if nodes is not None else {"error": err}
    if p["node_type"] == "head":
        host = p["dashboard_host"] if p["dashboard_host"] != "0.0.0.0" else p["head_host"]
        report["dashboard_url"] = f"http://{host}:{p['dashboard_port']}"
    module.exit_json(changed=changed, sage=report)


if __name__ == "__main__":
    main()
