"""The node logic of sage_ray_node, for its module (plugins/modules/) and its action plugin (plugins/action/) alike: the
module's options and their rules, finding this user's Ray, the node's state and its `sage` report, the status
probe, the `ray start` command line, the order in which Ray is terminated, and the dashboard's addresses.

No Ansible here, and every function takes what it reads as arguments (a /proc root, a process table, the kill
and clock functions), so tests/unit/test_ray_node.py runs it without root and without Ray.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import time

from ansible_collections.sage.cluster.plugins.module_utils.detect_env import AUTO
from ansible_collections.sage.cluster.plugins.module_utils.node import ENV_RECORD
from ansible_collections.sage.cluster.plugins.module_utils.remote_shell import shell_path
from ansible_collections.sage.cluster.plugins.module_utils.supervisor import (
    LINGER_DIR, PROPERTIES, SUPERVISORS, SYSTEM_UNIT_PATH, UNIT, UNIT_FACTS, UNIT_PATH)

# Bind addresses that mean "every interface": a client on the node reaches such a dashboard on loopback, and
# a person elsewhere at the head's host name.
WILDCARD_HOSTS = ("0.0.0.0", "::")

# What a node should be (the module's `state`), and what can be asked of it (its `query`): the same words as the
# role's ray_node_action and the playbooks' sage_action.
STATES = ("start", "stop", "restart")
QUERIES = ("status", "logs", "wait", "doctor")


def _typed(kind, *names):
    return {name: dict(type=kind) for name in names}


# The module's options, as its DOCUMENTATION gives them (tests/unit/test_ray_node.py checks that the two agree).
# The action plugin checks them on the controller, before any connection; the module checks them again.
ARGUMENT_SPEC = {
    "state": dict(type="str", choices=list(STATES)),
    "query": dict(type="str", choices=list(QUERIES)),
    "node_type": dict(type="str", required=True, choices=["head", "worker"]),
    "python_version_match": dict(type="str", choices=["minor", "patch"]),
    "fault_tolerance": dict(type="str", choices=["none", "local", "redis"]),
    "supervisor": dict(type="str", choices=list(SUPERVISORS)),
    "become": dict(type="bool"),
    "cluster_view": dict(type="bool", default=False),
    "wait_for": dict(type="list", elements="str"),
    "auth_token": dict(type="str", no_log=True),
    # Read (and made when missing) by the action plugin on the controller, which passes the token as auth_token.
    "auth_token_file": dict(type="str"),
    "auth_token_make": dict(type="bool"),
    "auth_token_path": dict(type="path", default="~/.ray/auth_token"),
    # The CA's dir on the controller: the action plugin reads it and passes tls_ca_cert (and, where the node needs a
    # new one, tls_cert and tls_key, made there).
    "tls_ca_dir": dict(type="str"),
    "tls_make": dict(type="bool"),
    "tls_renew": dict(type="bool"),
    "tls_node_dir": dict(type="path"),
    "tls_ca_cert": dict(type="str"),
    "tls_cert": dict(type="str"),
    "tls_key": dict(type="str", no_log=True),
    "redis_password": dict(type="str", no_log=True),
    **_typed("path", "ray_command", "python_path", "temp_dir", "log_dir", "deploy_record", "gcs_storage_dir"),
    **_typed("str", "conda_env", "ray_version", "node_ip", "head_host", "dashboard_host", "blocked_by",
             "source_revision", "redis_address", "gcs_namespace"),
    **_typed("int", "head_port", "dashboard_port", "log_lines", "timeout", "num_cpus", "num_gpus", "memory",
             "object_store_memory", "gcs_reconnect_timeout"),
    **_typed("dict", "resources", "labels"),
}
# Each state or query takes only the options it reads; a head always has its addresses (for dashboard_url).
_START = ["ray_command", "python_path", "node_ip", "head_host", "head_port", "temp_dir", "log_dir", "timeout"]
ARGUMENT_RULES = {
    "required_one_of": [["state", "query"]],
    "mutually_exclusive": [["state", "query"], ["auth_token", "auth_token_file"], ["tls_ca_cert", "tls_ca_dir"]],
    "required_by": {"tls_ca_dir": "tls_node_dir", "tls_ca_cert": "tls_node_dir"},
    "required_if": [
        ["state", "start", _START],
        ["state", "restart", _START],
        ["query", "logs", ["log_dir", "log_lines"]],
        ["query", "wait", ["python_path", "wait_for", "timeout"]],
        ["query", "doctor", ["ray_command", "python_path", "temp_dir", "log_dir"]],
        ["cluster_view", True, ["python_path"]],
        ["node_type", "head", ["head_host", "head_port", "dashboard_host", "dashboard_port"]],
        ["fault_tolerance", "local", ["gcs_storage_dir", "gcs_namespace", "gcs_reconnect_timeout"]],
        ["fault_tolerance", "redis", ["redis_address", "gcs_namespace", "gcs_reconnect_timeout"]],
    ],
}


def is_ray(argv):
    name = os.path.basename(argv[0])
    # `python -m ray.util.client.server` (the head's client server) has neither a ray path nor a ray:: name.
    return (name in ("raylet", "gcs_server") or argv[0].startswith("ray::")
            or any("/site-packages/ray/" in a or a.startswith("ray.") for a in argv))


def is_gcs(argv):
    return os.path.basename(argv[0]) == "gcs_server"


def ray_of(table):
    """The Ray detector: the Ray processes of a table of this user's processes ({pid: argv}, as /proc has them).

    One rule for the module (ray_processes) and the status probe (parse_probe). `ray stop` kills every Ray process
    it can see, other users' too when run as root; sage only ever looks at, and stops, the processes of the user
    it runs as. A zombie has an empty cmdline: it is not Ray.
    """
    return {pid: argv for pid, argv in table.items() if argv and argv[0] and is_ray(argv)}


def ray_processes(proc="/proc", uid=None, own_pid=None):
    """This user's Ray processes, read from /proc: {pid: argv}."""
    uid = os.getuid() if uid is None else uid
    own_pid = os.getpid() if own_pid is None else own_pid
    table = {}
    for pid in filter(str.isdigit, os.listdir(proc)):
        try:
            if os.stat(os.path.join(proc, pid)).st_uid != uid or int(pid) == own_pid:
                continue
            with open(os.path.join(proc, pid, "cmdline"), "rb") as fh:
                table[int(pid)] = fh.read().decode(errors="replace").rstrip("\0").split("\0")
        except OSError:
            continue
    return ray_of(table)


def deployed(record, source_revision):
    """What sage_deploy recorded on a node ({revision, install_ok, stale}); stale when it is not the controller's
    source revision (an empty source_revision compares nothing)."""
    revision = record.get("revision") or None
    install = record.get("install") or {}
    return {"revision": revision, "install_ok": install.get("ok", True) if revision else None,
            "stale": bool(source_revision) and revision != source_revision}


def log_file(log_dir, node_type):
    return os.path.join(log_dir, f"{node_type}.log")


# The free space a node's temp and log dirs need. A `ray start` writes its session there (logs, sockets, the
# dashboard's files: tens of MiB); on a full disk it does not say so, its GCS "timed out during startup". Above
# 95 % used Ray's own floor (local_fs_capacity_threshold) stops it spilling objects to disk.
SPACE_FAIL_BYTES = 256 * 2**20
SPACE_WARN_BYTES = 2**30
SPACE_WARN_USED = 0.95
SPACE_LIMITS = "fail below 256 MiB, warn below 1 GiB or above 95 % used"


def nearest_existing(path):
    """path, or its nearest parent that exists (where a dir to be made would go)."""
    while not os.path.exists(path):
        path = os.path.dirname(path)
    return path


def _size(n):
    unit = "B"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            break
        n /= 1024
    return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"


def free_space(path, statvfs=os.statvfs):
    """{ok, warn, detail}: the free space of the file system path is (or will be) on, against the limits above."""
    st = statvfs(nearest_existing(path))
    free, total = st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize
    used = 1 - st.f_bfree / st.f_blocks if st.f_blocks else 0.0
    ok = free >= SPACE_FAIL_BYTES
    warn = ok and (free < SPACE_WARN_BYTES or used > SPACE_WARN_USED)
    return {"ok": ok, "warn": warn,
            "detail": f"{path}: {_size(free)} free of {_size(total)}, {used:.0%} used ({SPACE_LIMITS})"}


def no_space(node_type, params, statvfs=os.statvfs):
    """Why a node's start may have failed for want of space (its temp or log dir below the fail limit), or None."""
    for key in ("temp_dir", "log_dir"):
        space = free_space(params[key], statvfs)
        if not space["ok"]:
            return (f"no space left: {space['detail']}; free some there, or set {node_type}.{key} in the config "
                    "to a disk with room")
    return None


def node_report(params, state, record=None, **extra):
    """The `sage` result dict (RETURN of plugins/modules/sage_ray_node.py), for the module and the status probe alike.

    params: the module's options; state: node_state(); record: the deploy record read, or None when not asked for;
    extra: what the query adds (log, doctor, cluster)."""
    report = dict(state, node_type=params["node_type"], declared=declared(params))
    # The paths the node uses: with `auto`, what the module found there (still `auto` when nothing was).
    report.update({k: params[k] for k in ("python_path", "ray_command") if params.get(k)})
    if params.get("log_dir"):
        report["log_file"] = log_file(params["log_dir"], params["node_type"])
    if record is not None:
        report["deploy"] = deployed(record, params.get("source_revision") or "")
    if params["node_type"] == "head":
        report["dashboard_url"] = dashboard_url(params["dashboard_host"], params["head_host"],
                                                params["dashboard_port"])
        if store := fault_tolerance_store(params):
            report["fault_tolerance"] = store
    report.update(extra)
    return report


# query=status without a module (the sage_ray_node action plugin runs it through the connection's shell, /bin/sh
# by default): this user's processes as /proc has them (the module reads the same files, and ray_of() is the one
# rule for both) and the deploy record, in one fixed POSIX sh command. A head whose GCS runs (node_state, from that
# table) is then asked for Ray's node table (state_api_command). Only paths are put in, quoted; the dashboard's
# URL and the token come on stdin. A process is one line: its pid, its state (the letter after the command name
# in /proc/PID/stat, read by shell builtins: no process more per process), its arguments separated by \x1f (US).
# $r collects the raylets the kernel runs (not stopped: T, t), for HEALTH_SNIPPET.
PROCESS_TABLE = ("r=; for d in /proc/[0-9]*; do [ -O \"$d\" ] && { read -r st < \"$d/stat\"; s=${st##*) }; "
                 "printf '%s %s ' \"${d#/proc/}\" \"${s%% *}\"; "
                 "case $st in *' (raylet) '[!Tt]*) r=\"$r ${d#/proc/}\";; esac; "
                 "tr '\\000\\n' '\\037 ' < \"$d/cmdline\"; echo; }; done 2>/dev/null; ")
PROBE_SEPARATOR = "--- sage deploy record"
ENV_SEPARATOR = "--- sage detected env"
# With python_path or ray_command `auto`: what the module found on this node (node.ENV_RECORD, written with one
# key a line), printed only while its Python exists.
CACHED_PYTHON = ("py=$(sed -n 's/^\"python_path\": \"\\(.*\\)\",\\{0,1\\}$/\\1/p' -- " + shell_path(ENV_RECORD)
                 + " 2>/dev/null); ")

# Ray's node table from the dashboard's state API on the head: far cheaper than importing Ray. Reads
# {"url", "token"} as JSON on stdin, prints the response (nothing when the dashboard does not answer). Asked only
# while the head's gcs_server runs (node_state's gcs_port): else the dashboard answers only at the timeout, 5 s
# more for a status that has its verdict already (head_without_gcs).
STATE_API_SNIPPET = r"""
import json, sys, urllib.request
ask = json.load(sys.stdin)
request = urllib.request.Request(ask["url"])
if ask["token"]:
    request.add_header("Authorization", "Bearer " + ask["token"])
try:
    with urllib.request.urlopen(request, timeout=5) as response:
        sys.stdout.write(response.read().decode())
except (OSError, ValueError):
    pass
"""


def state_api_argv(python_path):
    # -I -S: no site-packages, no user environment; the standard library is all it needs.
    return [python_path, "-I", "-S", "-c", STATE_API_SNIPPET]


def state_api_command(python_path, quote):
    """The snippet through the node's shell (its input on stdin); a Python that is gone answers nothing."""
    return " ".join(map(quote, state_api_argv(python_path))) + " 2>/dev/null; exit 0"


def state_api_input(dashboard_host, dashboard_port, token):
    """The snippet's stdin: where a client on the head reaches the dashboard, and the token (never an argument)."""
    url = f"http://{dashboard_local_host(dashboard_host)}:{dashboard_port}/api/v0/nodes?limit=10000"
    return json.dumps({"url": url, "token": token or ""})


def state_api_nodes(text):
    """The state API's answer -> sage's node table, or None when there was no usable answer."""
    try:
        rows = json.loads(text)["data"]["result"]["result"]
        return [{"node_ip": n["node_ip"], "node_id": n.get("node_id"), "hostname": n.get("node_name"),
                 "alive": n["state"] == "ALIVE",
                 "is_head": n.get("is_head_node", False),
                 "resources": {k: v for k, v in (n.get("resources_total") or {}).items() if not k.startswith("node:")},
                 "labels": {k: v for k, v in (n.get("labels") or {}).items() if not k.startswith("ray.io/")}}
                for n in rows]
    except (ValueError, KeyError, TypeError):
        return None


# The supervisor's facts (module_utils/supervisor.py): PID 1's name and linger by shell builtins; each unit's state
# (the user's, the system's: reading it needs no root) from systemctl only where its file is (a node without one pays
# no process more), each after the line naming it. ssh's login session has XDG_RUNTIME_DIR; a session without it
# gets the user manager's usual place.
SUPERVISOR_SEPARATOR = "--- sage supervisor"
_SHOW = " ".join(f"-p {p}" for p in PROPERTIES) + f" {UNIT} 2>/dev/null; }}; "
SUPERVISOR_PROBE = (f"echo; echo '{SUPERVISOR_SEPARATOR}'; read -r c < /proc/1/comm; echo \"pid1=$c\"; "
                    f"[ -e {LINGER_DIR}/\"${{USER:-$(id -un)}}\" ] && echo linger=yes; "
                    f"[ -f {shell_path(UNIT_PATH)} ] && {{ echo {UNIT_FACTS['user']}=yes; "
                    "XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/run/user/$(id -u)} systemctl --user show " + _SHOW
                    + f"[ -f {SYSTEM_UNIT_PATH} ] && {{ echo {UNIT_FACTS['system']}=yes; systemctl show " + _SHOW)


# What a gRPC client sends first (HTTP/2's preface and an empty SETTINGS frame): a server that refused the client's
# certificate answers it with TLS's alert, one that took it with its own SETTINGS.
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"

# Whether each raylet the kernel runs answers on its gRPC ports (those /proc shows it listening on): its SETTINGS
# frame back for the preface, through TLS with the files of its own environment where it runs with TLS. /proc alone
# calls a raylet whose cgroup is frozen (docker pause, systemctl freeze) or that hangs in the kernel (state D)
# running, and Ray counts it alive for about a minute more. The standard library only (-I -S: a fourth of what
# importing grpc costs, on every node of every status); prints "PID yes" or "PID no WHY" a raylet.
HEALTH_SEPARATOR = "--- sage raylet health"
HEALTH_TIMEOUT = 3
HEALTH_SNIPPET = r"""
import os, socket, ssl, sys

def listening(pid):
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            inodes.add(os.readlink(f"/proc/{pid}/fd/{fd}")[8:-1])
        except OSError:
            pass
    for table, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        if not os.path.exists(f"/proc/{pid}/net/{table}"):  # IPv6 off
            continue
        for line in open(f"/proc/{pid}/net/{table}").read().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:
                address, port = fields[1].split(":")
                raw = b"".join(bytes.fromhex(address[i:i + 8])[::-1] for i in range(0, len(address), 8))
                host = socket.inet_ntop(family, raw)
                if raw.strip(b"\0") == b"":
                    host = "127.0.0.1"
                elif host.startswith("::ffff:") and "." in host:
                    host = host[7:]
                yield host, int(port, 16)

def answers(pid, timeout):
    env = dict(v.split("=", 1) for v in open(f"/proc/{pid}/environ").read().split("\0") if "=" in v)
    for host, port in listening(pid):
        try:
            with socket.create_connection((host, port), timeout=timeout) as conn:
                if env.get("RAY_USE_TLS", "0").lower() in ("1", "true"):
                    context = ssl.create_default_context(cafile=env["RAY_TLS_CA_CERT"])
                    context.load_cert_chain(env["RAY_TLS_SERVER_CERT"], env["RAY_TLS_SERVER_KEY"])
                    context.set_alpn_protocols(["h2"])
                    conn = context.wrap_socket(conn, server_hostname=host)
                conn.sendall(PREFACE)
                frame = conn.recv(9)
        except ssl.SSLError:
            return "yes"  # it answered, if only to refuse the handshake
        except OSError as exc:
            why = "timed out" if isinstance(exc, socket.timeout) else exc.strerror or str(exc)
            return f"no no answer on its gRPC port {port} ({why})"
        return "yes" if frame[3:4] == b"\x04" else f"no its port {port} did not answer as a gRPC server"
    return None

for pid in sys.argv[2:]:
    try:
        said = answers(pid, float(sys.argv[1]))
    except (OSError, KeyError, ValueError):
        said = None
    if said:
        print(pid, said)
""".replace("PREFACE)", f"{H2_PREFACE!r})")


def probe_command(record_path, quote, detected=False, python_path=None):
    """detected: also print the cached finding of `auto` paths (node.ENV_RECORD) while its Python exists;
    python_path: the node's Ray Python, for HEALTH_SNIPPET (`auto`: the cached finding's)."""
    path = shell_path(record_path, quote)
    command = PROCESS_TABLE + f"echo '{PROBE_SEPARATOR}'; cat -- {path} 2>/dev/null; "
    if detected:
        command += CACHED_PYTHON + f"echo; echo '{ENV_SEPARATOR}'; [ -x \"$py\" ] && cat -- {shell_path(ENV_RECORD)}; "
    command += SUPERVISOR_PROBE
    if python_path:
        python = '"$py"' if python_path == AUTO else shell_path(python_path, quote)
        snippet = " ".join(map(quote, health_argv(python_path, [])[1:]))
        command += f"echo; echo '{HEALTH_SEPARATOR}'; [ -n \"$r\" ] && {python} {snippet} $r 2>/dev/null; "
    return command + "exit 0"


def health_argv(python_path, pids):
    return [python_path, "-I", "-S", "-c", HEALTH_SNIPPET, str(HEALTH_TIMEOUT), *map(str, pids)]


def parse_health(text):
    """HEALTH_SNIPPET's output -> {pid: None when it answers, else why not}."""
    said = {}
    for line in text.splitlines():
        pid, _, answer = line.strip().partition(" ")
        if pid.isdigit() and answer.startswith(("yes", "no ")):
            said[int(pid)] = None if answer == "yes" else answer[3:]
    return said


def parse_supervisor(text):
    """The supervisor section of the probe's output -> {pid1, linger, unit, system_unit} (each unit: its
    properties, or None)."""
    facts = {"pid1": None, "linger": False, **{key: None for key in UNIT_FACTS.values()}}
    unit = None  # the unit whose properties follow
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key == "pid1":
            facts["pid1"] = value
        elif key == "linger":
            facts["linger"] = True
        elif key in UNIT_FACTS.values():
            unit = facts[key] = {}
        elif key in PROPERTIES and unit is not None:
            unit[key] = value
    return facts


def _json_dict(text):
    try:
        data = json.loads(text) if text.strip() else {}
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def parse_probe(stdout):
    """The probe's output -> (this user's Ray processes {pid: argv}, the deploy record, the cached finding of
    detected paths ({} when none, or its Python is gone), the processes' states {pid: letter}, the supervisor's
    facts (parse_supervisor), the raylets' health (parse_health))."""
    # A separator counts only as a line of its own: the probe's own shell is in the table, its command line too.
    # Run without stdin (a worker's), the command gets a tty from Ansible's ssh (-tt): lines end in \r\n then.
    procs_text, _, rest = ("\n" + stdout.replace("\r\n", "\n")).partition(f"\n{PROBE_SEPARATOR}\n")
    rest, _, supervisor_text = rest.partition(f"\n{SUPERVISOR_SEPARATOR}\n")
    supervisor_text, _, health_text = supervisor_text.partition(f"\n{HEALTH_SEPARATOR}\n")
    record_text, _, env_text = rest.partition(f"\n{ENV_SEPARATOR}\n")
    table, states = {}, {}
    for line in procs_text.splitlines():
        pid, _, rest = line.partition(" ")
        letter, _, cmdline = rest.partition(" ")
        if pid.isdigit():
            table[int(pid)] = cmdline.rstrip("\x1f").split("\x1f")
            states[int(pid)] = letter
    return (ray_of(table), _json_dict(record_text), _json_dict(env_text), states, parse_supervisor(supervisor_text),
            parse_health(health_text))


def options_of(procs, name):
    """The --key=value options of the first process named `name`, or None when there is none."""
    for argv in procs.values():
        if os.path.basename(argv[0]) == name:
            return dict(a[2:].partition("=")[::2] for a in argv[1:] if a.startswith("--"))
    return None


def node_state(procs, states=None, health=None):
    """What runs here, from the process table: the raylet (this node's Ray) and, on a head, the gcs_server;
    states: the processes' /proc states {pid: letter}, health: the raylets' answers (parse_health), when read (the
    status probe), for raylet_not_working."""
    raylet = options_of(procs, "raylet")
    gcs = options_of(procs, "gcs_server")
    port = (gcs or {}).get("gcs_server_port", "")
    raylet_pid = next((pid for pid, argv in procs.items() if os.path.basename(argv[0]) == "raylet"), None)
    return {
        "running": raylet is not None,
        "node_ip": raylet.get("node_ip_address") if raylet else None,
        "node_id": raylet.get("node_id") if raylet else None,
        "raylet_pid": raylet_pid,
        "gcs_address": raylet.get("gcs-address") if raylet else None,
        "gcs_port": int(port) if port.isdigit() else None,
        "pids": sorted(procs),
        "raylet_state": (states or {}).get(raylet_pid),
        "raylet_answers": None if raylet_pid not in (health or {}) else health[raylet_pid] is None,
        "raylet_health": (health or {}).get(raylet_pid),
    }


# /proc's states of a process that runs no code until someone resumes it: stopped (SIGSTOP, SIGTSTP) and stopped
# by a tracer (a debugger).
STOPPED_STATES = ("T", "t")


def process_states(pids, proc="/proc"):
    """{pid: its one-letter state in /proc/PID/stat} of the pids still there."""
    states = {}
    for pid in pids:
        try:
            with open(os.path.join(proc, str(pid), "stat")) as fh:
                states[pid] = fh.read().rpartition(")")[2].split()[0]
        except (OSError, IndexError):
            continue
    return states


def raylet_not_working(state):
    """Why a node whose raylet is there is not working all the same (the kernel does not run it, or it does not
    answer Ray's health check), or None.

    Ray's own health check takes about a minute to drop such a node, and counts it alive until then."""
    if not state["running"]:
        return None
    if state.get("raylet_state") in STOPPED_STATES:
        return ("this node's raylet is stopped (/proc state T: SIGSTOP or a debugger): it runs no "
                "task and Ray drops the node within about a minute. Fix: `kill -CONT` it, or `sage cluster restart`")
    if state.get("raylet_answers") is False:
        return (f"this node's raylet (pid {state['raylet_pid']}, /proc state {state.get('raylet_state') or '?'}) "
                f"does not answer within {HEALTH_TIMEOUT} s ({state['raylet_health']}): it is "
                "frozen (a frozen cgroup: docker pause, systemctl freeze) or hangs in the kernel (state D), and Ray "
                "drops the node within about a minute. Fix: thaw it or find what it waits on, then `sage cluster "
                "restart` if it still does not answer")
    return None


# Ray's own switch (check_version_info): "minor" lets nodes and drivers whose Python differs at the patch level meet.
PYTHON_MATCH_ENV = "RAY_DEFAULT_PYTHON_VERSION_MATCH_LEVEL"


def ray_drift(wanted, installed):
    """Why a node whose env holds the Ray releases `installed` must not start in a cluster of `wanted`, or None
    (nothing wanted, or nothing found to compare)."""
    if not wanted or not installed or wanted in installed:
        return None
    return (f"this node has another Ray ({', '.join(installed)}) than the cluster ({wanted}, this machine's and the "
            "head's): Ray refuses to mix releases. Fix: `sage cluster provision` gives it " + wanted)


def lost_head_fate(mode):
    """What a lost head means for the cluster under fault tolerance `mode`: the one sentence the head's status row
    and the status footer both say, so they cannot disagree."""
    if (mode or "none") == "none":
        return "the cluster is down and its workers give up on it"
    return "a lost head is healed by `sage cluster start`, the workers wait for it"


def head_without_gcs(node_type, state, mode=None):
    """Why a head whose raylet runs is down all the same (its gcs_server is gone: killed, crashed, OOM), or None;
    mode: the head's fault_tolerance.

    Said from the process table at once: asked over the network instead, a GCS that is gone costs Ray's client
    timeouts before anything answers."""
    if node_type == "head" and state["running"] and state["gcs_port"] is None:
        return (f"Ray's GCS (gcs_server) is not running on this head, though its raylet is: {lost_head_fate(mode)}. "
                "Fix: `sage cluster start` starts the head again")
    return None


# The `ray start` options a node's resources are set with, in their flag order.
RESOURCE_OPTIONS = ("num_cpus", "num_gpus", "memory", "object_store_memory", "resources", "labels")


def declared(params):
    """The resources and labels a node is configured with; unset ones (None, {}) are Ray's to decide."""
    return {k: params[k] for k in RESOURCE_OPTIONS if params.get(k) not in (None, {})}


def resource_args(params):
    """The resource flags of `ray start`, one argument each."""
    args = [f"--{k.replace('_', '-')}={params[k]}" for k in RESOURCE_OPTIONS[:4] if params.get(k) is not None]
    if params.get("resources"):
        args.append("--resources=" + json.dumps(params["resources"], sort_keys=True))
    if params.get("labels"):
        # Ray's key=value,key=value form (its JSON form is deprecated); the config refuses ',' and '='.
        args.append("--labels=" + ",".join(f"{k}={v}" for k, v in sorted(params["labels"].items())))
    return args


def fault_tolerance_env(params):
    """The env of `ray start` for GCS fault tolerance (none: nothing, Ray's defaults). The head's GCS keeps its
    tables in RocksDB at gcs_storage_dir (local) or in Redis (redis), under the cluster's own namespace; a worker's
    raylet waits gcs_reconnect_timeout s for a lost head where Ray's default gives up after 60."""
    mode = params.get("fault_tolerance") or "none"
    if mode == "none":
        return {}
    if params["node_type"] == "worker":
        return {"RAY_gcs_rpc_server_reconnect_timeout_s": str(params["gcs_reconnect_timeout"])}
    env = {"RAY_external_storage_namespace": params["gcs_namespace"]}
    if mode == "local":
        env.update(RAY_gcs_storage="rocksdb", RAY_gcs_storage_path=rocksdb_path(params))
    else:
        env["RAY_REDIS_ADDRESS"] = params["redis_address"]
    return env


# A node's TLS files in its tls_node_dir: the CA's cert, its own cert and key (0600).
TLS_FILES = {"ca": "ca.crt", "cert": "node.crt", "key": "node.key"}
TLS_VARIABLES = ("RAY_TLS_SERVER_CERT", "RAY_TLS_SERVER_KEY", "RAY_TLS_CA_CERT")


def tls_paths(node_dir):
    return {role: os.path.join(node_dir, name) for role, name in TLS_FILES.items()}


def tls_env(ca, cert, key):
    """Ray's mutual TLS, for every Ray process and client given it: the node's (or a client's) cert and key, the CA's
    cert. Ray wants all three or none."""
    return {"RAY_USE_TLS": "1", "RAY_TLS_SERVER_CERT": cert, "RAY_TLS_SERVER_KEY": key, "RAY_TLS_CA_CERT": ca}


def tls_refusal(host, port, paths, timeout=5.0):
    """Why a mutual TLS session with the gRPC server at host:port fails with the TLS files `paths` (tls_paths), in
    words naming the side that refused; None when it works, or when the server cannot be reached at all (that is
    another check's). Ray would retry such a start for minutes and then blame the GCS."""
    import ssl  # only here: every sage command and every node's module imports this file

    try:
        ctx = ssl.create_default_context(cafile=paths["ca"])
        ctx.load_cert_chain(paths["cert"], paths["key"])
        ctx.set_alpn_protocols(["h2"])
        with socket.create_connection((host, int(port)), timeout=timeout) as raw:
            with ctx.wrap_socket(raw, server_hostname=host) as tls:
                tls.sendall(H2_PREFACE)
                tls.recv(1)
    except ssl.SSLCertVerificationError as exc:
        if "mismatch" in (exc.verify_message or ""):
            return f"the certificate of {host}:{port} does not cover that address ({exc.verify_message})"
        return f"the certificate of {host}:{port} comes from another CA than this node's ({exc.verify_message})"
    except ssl.SSLError as exc:
        return f"{host}:{port} refused this node's certificate ({exc.reason or exc}): it comes from another CA"
    except OSError:
        return None
    return None


def rocksdb_path(params):
    """The local store's own directory, inside gcs_storage_dir: the one a clean start empties (never the directory
    the config names, which may hold other things)."""
    return os.path.join(params["gcs_storage_dir"], "rocksdb")


def fault_tolerance_store(params):
    """Where a head's GCS keeps its tables, in words (status and doctor), or None without fault tolerance."""
    mode = params.get("fault_tolerance") or "none"
    if mode == "none" or params["node_type"] != "head":
        return None
    where = params["gcs_storage_dir"] if mode == "local" else f"Redis {params['redis_address']}"
    return {"mode": mode, "store": where, "namespace": params["gcs_namespace"]}


def redis_args(params):
    """`ray start --head`'s hidden Redis login flags, when the head's GCS uses a Redis with a password. Ray puts
    the password on gcs_server's command line (readable in /proc by this user and root)."""
    if params.get("fault_tolerance") != "redis" or params["node_type"] != "head" or not params.get("redis_password"):
        return []
    return ["--redis-username=default", f"--redis-password={params['redis_password']}"]


def resp(*words):
    """One Redis command in its wire form (RESP)."""
    return b"".join([f"*{len(words)}\r\n".encode()]
                    + [f"${len(w.encode())}\r\n".encode() + w.encode() + b"\r\n" for w in words])


def redis_ping(address, password, timeout=5, connect=socket.create_connection):
    """None when the Redis at address (host:port, redis:// or rediss://) answers PING, after AUTH with password
    when there is one; else why not, in one line. No client library: a socket is all doctor needs."""
    scheme, _, hostport = address.rpartition("://")
    host, _, port = hostport.rpartition(":")
    host = host.strip("[]")
    try:
        sock = connect((host, int(port)), timeout)
        if scheme == "rediss":
            import ssl  # only here: every sage command and every node's module imports this file

            sock = ssl.create_default_context().wrap_socket(sock, server_hostname=host)
        with sock:
            asks = ([("AUTH", "default", password)] if password else []) + [("PING",)]
            for ask in asks:
                sock.sendall(resp(*ask))
                reply = sock.recv(4096).decode(errors="replace").strip()
                if not reply.startswith(("+OK", "+PONG")):
                    return f"{ask[0]} answered {reply[:200] or 'nothing'}"
    except (OSError, ValueError) as exc:
        return f"cannot reach it ({exc})"
    return None


def start_argv(ray_command, node_type, node_ip, temp_dir, head_port=None, dashboard_host=None,
               dashboard_port=None, head_address=None, resources=()):
    """`ray start` for a head (head_port, dashboard_*) or a worker (head_address, ip:port); node_ip is an IP;
    resources: resource_args() (and redis_args())."""
    argv = [ray_command, "start", f"--node-ip-address={node_ip}", f"--temp-dir={temp_dir}", "--disable-usage-stats",
            *resources]
    if node_type == "head":
        return argv + ["--head", f"--port={head_port}", f"--dashboard-host={dashboard_host}",
                       f"--dashboard-port={dashboard_port}"]
    return argv + [f"--address={head_address}"]


def terminate(list_processes=ray_processes, kill=os.kill, sleep=time.sleep, clock=time.monotonic, grace=3):
    """SIGTERM this user's Ray processes, gcs_server last (as `ray stop` does: it ignores SIGTERM while its
    clients are alive), then SIGKILL what is left after a grace; return once none is left (at most 5 s more)."""
    def signal_all(phase, signum):
        for pid, argv in list_processes().items():
            if phase(argv):
                try:
                    kill(pid, signum)
                except ProcessLookupError:
                    pass

    deadline = clock() + grace
    for phase in (lambda argv: not is_gcs(argv), is_gcs):
        signal_all(phase, signal.SIGTERM)
        while any(phase(a) for a in list_processes().values()) and clock() < deadline:
            sleep(0.1)
    signal_all(lambda argv: True, signal.SIGKILL)
    deadline = clock() + 5
    while list_processes() and clock() < deadline:
        sleep(0.1)


def dashboard_local_host(dashboard_host):
    """Where a client on the head itself reaches the dashboard."""
    return "127.0.0.1" if dashboard_host in (*WILDCARD_HOSTS, "localhost") else dashboard_host


def dashboard_url(dashboard_host, head_host, dashboard_port):
    """The URL a person opens: a dashboard bound to every interface is reached at the head's host name."""
    host = head_host if dashboard_host in WILDCARD_HOSTS else dashboard_host
    return f"http://{host}:{dashboard_port}"


def cluster_summary(nodes):
    """Ray's node table summed up: how many nodes are alive and the resources they have together."""
    alive = [n for n in nodes if n["alive"]]
    totals = {}
    for n in alive:
        for k, v in n["resources"].items():
            totals[k] = totals.get(k, 0) + v
    return {"alive": len(alive), "nodes": nodes, "resources": totals}


# How long a start waits, once every host has a new node, for Ray to drop the old node of a restarted raylet: Ray
# counts it alive until its health check fails (4-8 s seen, about 15 s at Ray's default period and threshold).
OLD_NODE_GRACE = 20


def alive_per_host(nodes, ips):
    """Ray's alive nodes at each of the hosts' node IPs that has not exactly one: {ip: count}. Each host runs one
    raylet, so none (Ray dropped it) or more than one (the old one not dropped yet) is said per host."""
    counts = {ip: 0 for ip in ips}
    for n in nodes:
        if n["alive"] and n["node_ip"] in counts:
            counts[n["node_ip"]] += 1
    return {ip: c for ip, c in counts.items() if c != 1}


def counted(nodes, node_ip, node_id):
    """Whether Ray lists this node's running raylet alive: by its node ID where both sides know it (a restarted
    raylet's old node keeps its IP, and may stay listed alive until Ray's health check drops it), else by its IP."""
    return any(n["alive"] and (n["node_id"] == node_id if node_id and n.get("node_id") else n["node_ip"] == node_ip)
               for n in nodes)


NOT_JOINED_NOTE = ("Ray does not count this host's running raylet yet, only an old node of it (the raylet was just "
                   "restarted; Ray drops the old one once its health checks fail): ask again in a few seconds")


def process_age(pid, proc="/proc"):
    """Seconds since process pid started, or None when it is gone."""
    try:
        with open(f"{proc}/{pid}/stat") as f:
            ticks = int(f.read().rpartition(")")[2].split()[19])  # field 22, starttime: ticks after boot
        with open(f"{proc}/uptime") as f:
            uptime = float(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return uptime - ticks / os.sysconf("SC_CLK_TCK")


def alive_count_note(count):
    """A host's row when Ray lists other than one alive node for it (alive_per_host)."""
    if count == 0:
        return ("Ray lists no alive node for this host: Ray dropped it (its raylet did not answer Ray's health "
                "checks). Fix: `sage cluster start` restarts it")
    return (f"Ray still lists {count} alive nodes for this host: the old raylet's until Ray's health check drops it "
            "(seconds), and the new one")
