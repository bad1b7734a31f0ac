"""The node module (roles/ray_node/library/sage_ray_node.py) as a documented contract, and its pure logic
(module_utils/ray_node.py) without root, Ray or a rig: a fake /proc, a simulated process table and clock."""
from __future__ import annotations

import ast
import http.server
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import jinja2
import pytest
import yaml
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

from sage_cluster import ray_node

REPO = Path(__file__).resolve().parents[2]
ROLE = REPO / "roles" / "ray_node"
MODULE = REPO / "plugins" / "modules" / "sage_ray_node.py"
logic = ray_node


def module_constants() -> dict[str, Any]:
    """DOCUMENTATION, EXAMPLES, RETURN (parsed YAML), read without importing the module."""
    out: dict[str, Any] = {}
    for node in ast.parse(MODULE.read_text()).body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            name = node.targets[0].id
            if name in ("DOCUMENTATION", "EXAMPLES", "RETURN"):
                out[name] = yaml.safe_load(node.value.value)
    return out


MOD = module_constants()
SPEC = logic.ARGUMENT_SPEC
FIELDS = ("type", "required", "default", "choices", "elements", "no_log")


def check(args: dict[str, Any]) -> list[str]:
    """The module's own validation of its options (the action plugin and AnsibleModule run the same): its errors."""
    result = ArgumentSpecValidator(SPEC, **logic.ARGUMENT_RULES).validate(args)
    return [str(e) for e in result.errors]


# ---------------------------------------------------------------- the contract

def test_documentation_is_the_argument_spec() -> None:
    documented = MOD["DOCUMENTATION"]["options"]
    assert sorted(documented) == sorted(SPEC)
    for name, spec in SPEC.items():
        doc = documented[name]
        assert doc.get("description"), f"option {name} is not described"
        # no_log is the code's business; the rest a reader of ansible-doc must see as the code has it.
        shown = [k for k in FIELDS if k != "no_log"]
        assert {k: doc.get(k) for k in shown} == {k: spec.get(k) for k in shown}, name


def test_every_example_is_a_valid_call_on_its_own() -> None:
    """No example needs "the other options": each passes the module's own check as written."""
    for task in MOD["EXAMPLES"]:
        assert check(task["sage_ray_node"]) == [], task["name"]
    assert {t["sage_ray_node"].get("state") or t["sage_ray_node"]["query"] for t in MOD["EXAMPLES"]} >= {
        "start", "stop", "status", "wait"}


def test_each_state_and_query_asks_only_for_what_it_reads() -> None:
    assert check({"state": "stop", "node_type": "worker"}) == []
    assert check({"query": "status", "node_type": "worker"}) == []
    missing = check({"state": "start", "node_type": "worker"})
    assert len(missing) == 1 and "ray_command" in missing[0] and "head_port" in missing[0], missing
    assert "dashboard_port" in " ".join(check({"state": "stop", "node_type": "head", "head_host": "h",
                                                "head_port": 1, "dashboard_host": "0.0.0.0"}))
    assert check({"query": "logs", "node_type": "worker", "log_dir": "/tmp/l"})  # log_lines missing
    # A state and a query at once, or neither, is no call.
    assert any("mutually exclusive" in e for e in check({"state": "stop", "query": "status", "node_type": "worker"}))
    assert any("one of the following is required" in e for e in check({"node_type": "worker"}))
    assert any("status" in e and "must be one of" in e for e in check({"state": "status", "node_type": "worker"}))


def test_return_documents_the_sage_dict_the_playbooks_and_runner_read() -> None:
    sage = MOD["RETURN"]["sage"]["contains"]
    # playbooks/wait.yml: running, node_ip; the runner and report: node_type, log, log_file, doctor, cluster,
    # dashboard_url, deploy.
    for key in ("running", "node_ip", "node_type", "log", "log_file", "doctor", "cluster", "dashboard_url", "deploy",
                "pids", "gcs_address", "gcs_port", "declared"):
        assert sage[key]["description"], key
    head = {"node_type": "head", "head_host": "base-sage", "dashboard_host": "0.0.0.0", "dashboard_port": 8265,
            "log_dir": "/tmp/l", "source_revision": "abc", "num_cpus": 2, "labels": {}}
    report = logic.node_report(head, logic.node_state({101: RAYLET}), {"revision": "abc"}, log=["x"])
    assert set(report) <= set(sage)
    assert report["dashboard_url"] == "http://base-sage:8265" and report["log_file"] == "/tmp/l/head.log"
    assert report["deploy"] == {"revision": "abc", "install_ok": True, "stale": False}
    assert report["declared"] == {"num_cpus": 2} and report["log"] == ["x"] and report["running"]
    worker = logic.node_report({"node_type": "worker"}, logic.node_state({}))
    assert set(worker) == {"running", "node_ip", "node_id", "gcs_address", "gcs_port", "pids", "raylet_pid",
                          "raylet_state", "raylet_answers", "raylet_health", "node_type", "declared"}


ROLE_TASK = yaml.safe_load((ROLE / "tasks" / "main.yml").read_text())[0]["sage.cluster.sage_ray_node"]


def test_the_role_passes_its_defaults_and_the_module_has_none_of_its_own() -> None:
    """One default per setting: the role's defaults/main.yml. An option the role sets from a ray_node_ variable
    has no default in the module (so none can drift), and the role passes every option a state or query needs."""
    defaults = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    for option, value in ROLE_TASK.items():
        assert option in SPEC, f"the role passes {option}, which the module does not take"
        variable = re.fullmatch(r"\{\{ (ray_node_\w+) \}\}", str(value))
        if variable:
            assert variable.group(1) in defaults, value
            assert "default" not in SPEC[option], (f"{option} has a default in the module and one in the role "
                                                   f"({variable.group(1)})")
    needed = {o for _, _, options in logic.ARGUMENT_RULES["required_if"] for o in options}
    assert needed | {o for o, s in SPEC.items() if s.get("required")} <= set(ROLE_TASK)


@pytest.mark.parametrize("action", [*logic.STATES, *logic.QUERIES])
def test_the_role_passes_its_action_as_the_modules_state_or_query_in_the_same_word(action: str) -> None:
    """sage_action (playbooks) -> ray_node_action (role) -> the module's state or query: one word all the way."""
    specs = yaml.safe_load((ROLE / "meta" / "argument_specs.yml").read_text())["argument_specs"]["main"]["options"]
    assert specs["ray_node_action"]["choices"] == [*logic.STATES, *logic.QUERIES]
    env = jinja2.Environment()
    rendered = {key: env.from_string(ROLE_TASK[key]).render(ray_node_action=action, omit="<omit>")
                for key in ("state", "query")}
    assert {k: v for k, v in rendered.items() if v != "<omit>"} == {
        ("state" if action in logic.STATES else "query"): action}


# ---------------------------------------------------------------- process discovery from /proc

def fake_proc(tmp_path: Path, table: dict[int, list[str]]) -> Path:
    proc = tmp_path / "proc"
    for pid, argv in table.items():
        (proc / str(pid)).mkdir(parents=True)
        (proc / str(pid) / "cmdline").write_bytes("\0".join(argv).encode() + (b"\0" if argv else b""))
    (proc / "self").mkdir()  # not a pid
    return proc


RAYLET = ["/env/lib/python3.11/site-packages/ray/core/src/ray/raylet/raylet", "--node_ip_address=10.0.0.5",
          "--gcs-address=10.0.0.1:6379", "--node_id=ab12", "--other"]
GCS = ["/env/lib/python3.11/site-packages/ray/core/src/ray/gcs/gcs_server", "--gcs_server_port=6379"]
TABLE = {
    101: RAYLET,
    102: GCS,
    103: ["/env/bin/python", "-m", "ray.util.client.server", "--port=10001"],
    104: ["ray::IDLE"],
    105: ["/usr/bin/python3", "server.py"],  # not Ray
    106: [],  # a zombie: its cmdline is empty
    107: ["/env/bin/python", "/env/lib/python3.11/site-packages/ray/dashboard/dashboard.py"],  # this module itself
}


def test_ray_processes_are_this_users_ray_and_nothing_else(tmp_path: Path) -> None:
    proc = fake_proc(tmp_path, TABLE)
    found = logic.ray_processes(proc=str(proc), own_pid=107)
    assert sorted(found) == [101, 102, 103, 104]
    assert found[101] == RAYLET
    assert logic.ray_processes(proc=str(proc), uid=os.getuid() + 1) == {}  # another user's Ray is not ours


def test_node_state() -> None:
    head = logic.node_state({101: RAYLET, 102: GCS})
    assert head == {"running": True, "node_ip": "10.0.0.5", "node_id": "ab12", "gcs_address": "10.0.0.1:6379",
                    "gcs_port": 6379, "pids": [101, 102], "raylet_pid": 101, "raylet_state": None,
                    "raylet_answers": None, "raylet_health": None}
    leftover = logic.node_state({104: ["ray::IDLE"]})  # a worker process without its raylet: Ray is not running
    assert leftover == {"running": False, "node_ip": None, "node_id": None, "gcs_address": None, "gcs_port": None,
                        "pids": [104], "raylet_pid": None, "raylet_state": None, "raylet_answers": None,
                        "raylet_health": None}


def test_ray_counts_a_node_by_its_raylets_id_not_by_an_old_node_of_the_same_ip() -> None:
    old = {"node_ip": "10.0.0.5", "node_id": "old1", "alive": True}
    new = {"node_ip": "10.0.0.5", "node_id": "new2", "alive": True}
    assert not logic.counted([old], "10.0.0.5", "new2")  # the restarted raylet has not registered yet
    assert logic.counted([old, new], "10.0.0.5", "new2")
    assert not logic.counted([old, dict(new, alive=False)], "10.0.0.5", "new2")
    assert logic.counted([old], "10.0.0.5", None)  # no ID known (an older probe): by the IP, as before
    assert not logic.counted([old], "10.0.0.6", None)


def test_process_age_reads_proc(tmp_path) -> None:
    assert 0 <= logic.process_age(os.getpid()) < 3600
    assert logic.process_age(999_999_999) is None


def test_process_states_read_proc_and_a_raylet_not_working_is_named(tmp_path) -> None:
    for pid, stat in ((101, "101 (raylet) T 1 101"), (102, "102 (gcs (odd) name) S 1 102")):
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "stat").write_text(stat + " 0 0\n")
    states = logic.process_states([101, 102, 103], proc=str(tmp_path))  # 103 is gone
    assert states == {101: "T", 102: "S"}
    assert "raylet is stopped" in logic.raylet_not_working(logic.node_state({101: RAYLET, 102: GCS}, states))
    assert logic.raylet_not_working(logic.node_state({101: RAYLET}, {101: "S"})) is None


def test_a_head_whose_gcs_is_gone_is_down_and_a_worker_is_not_judged_by_it() -> None:
    assert logic.head_without_gcs("head", logic.node_state({101: RAYLET, 102: GCS})) is None
    why = logic.head_without_gcs("head", logic.node_state({101: RAYLET}))  # after `pkill -9 gcs_server`
    assert why.startswith("Ray's GCS (gcs_server) is not running on this head") and "sage cluster start" in why
    assert logic.head_without_gcs("head", logic.node_state({})) is None  # stopped: that is "not running" already
    assert logic.head_without_gcs("worker", logic.node_state({101: RAYLET})) is None  # a worker runs no GCS


# ---------------------------------------------------------------- the start command

def test_start_argv() -> None:
    head = logic.start_argv("/env/bin/ray", "head", "10.0.0.1", "/tmp/ray_head", head_port=6379,
                            dashboard_host="0.0.0.0", dashboard_port=8265)
    assert head == ["/env/bin/ray", "start", "--node-ip-address=10.0.0.1", "--temp-dir=/tmp/ray_head",
                    "--disable-usage-stats", "--head", "--port=6379", "--dashboard-host=0.0.0.0",
                    "--dashboard-port=8265"]
    worker = logic.start_argv("/env/bin/ray", "worker", "10.0.0.5", "/tmp/ray w", head_address="10.0.0.1:6379")
    assert worker[-1] == "--address=10.0.0.1:6379" and "--temp-dir=/tmp/ray w" in worker  # one argv item, no shell
    assert "--head" not in worker


# ---------------------------------------------------------------- termination

class Processes:
    """A process table that obeys signals: gcs_server ignores SIGTERM while other Ray processes live, and
    `stubborn` pids ignore SIGTERM altogether. Time passes only when the code sleeps."""

    def __init__(self, table: dict[int, list[str]], stubborn: tuple[int, ...] = ()) -> None:
        self.table, self.stubborn, self.now, self.signals = dict(table), stubborn, 0.0, []

    def list(self) -> dict[int, list[str]]:
        return dict(self.table)

    def kill(self, pid: int, signum: int) -> None:
        self.signals.append((pid, signum))
        if pid not in self.table:
            raise ProcessLookupError(pid)
        gcs_waits = logic.is_gcs(self.table[pid]) and any(not logic.is_gcs(a) for a in self.table.values())
        if signum == signal.SIGKILL or (pid not in self.stubborn and not gcs_waits):
            del self.table[pid]

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def terminate(procs: Processes) -> None:
    logic.terminate(list_processes=procs.list, kill=procs.kill, sleep=procs.sleep, clock=lambda: procs.now)


def test_terminate_stops_gcs_server_last_and_gently() -> None:
    procs = Processes({101: RAYLET, 102: GCS, 104: ["ray::IDLE"]})
    terminate(procs)
    assert procs.table == {}
    assert procs.signals[-1] == (102, signal.SIGTERM)  # after every other process had its SIGTERM
    assert signal.SIGKILL not in [s for _, s in procs.signals]
    assert procs.now < 1  # no waiting for a grace nobody needed


def test_terminate_kills_what_ignores_sigterm_after_the_grace() -> None:
    procs = Processes({101: RAYLET, 102: GCS}, stubborn=(101,))
    terminate(procs)
    assert procs.table == {}
    assert (101, signal.SIGKILL) in procs.signals and 3 <= procs.now < 3.5


def test_terminate_with_nothing_running_signals_nobody() -> None:
    procs = Processes({})
    terminate(procs)
    assert procs.signals == [] and procs.now == 0


# ---------------------------------------------------------------- the dashboard and Ray's node table

@pytest.mark.parametrize("bind,url,local", [
    ("0.0.0.0", "http://base-sage:8265", "127.0.0.1"),
    ("::", "http://base-sage:8265", "127.0.0.1"),
    ("localhost", "http://localhost:8265", "127.0.0.1"),
    ("10.0.0.1", "http://10.0.0.1:8265", "10.0.0.1"),
])
def test_dashboard_addresses(bind: str, url: str, local: str) -> None:
    assert logic.dashboard_url(bind, "base-sage", 8265) == url
    assert logic.dashboard_local_host(bind) == local


def test_cluster_summary_counts_alive_nodes_only() -> None:
    nodes = [{"node_ip": "a", "alive": True, "resources": {"CPU": 2.0, "memory": 4.0}},
             {"node_ip": "b", "alive": True, "resources": {"CPU": 1.0}},
             {"node_ip": "c", "alive": False, "resources": {"CPU": 8.0}}]
    assert logic.cluster_summary(nodes) == {"alive": 2, "nodes": nodes, "resources": {"CPU": 3.0, "memory": 4.0}}


def fake_raylet(tmp_path: Path) -> tuple[Path, subprocess.Popen]:
    """A process whose name is raylet, holding raylet-like options."""
    raylet = tmp_path / "raylet"
    raylet.write_bytes(Path(os.path.realpath("/usr/bin/python3")).read_bytes())
    raylet.chmod(0o755)
    return raylet, subprocess.Popen([str(raylet), "-c", "import time; time.sleep(60)", "--node_ip_address=10.9.8.7",
                                     "--gcs-address=10.9.8.1:6379"])


def test_the_status_probe_finds_this_users_raylet_and_the_deploy_record(tmp_path: Path) -> None:
    """The worker status probe (no module on the node) runs its one shell command as a node would, in POSIX sh."""
    logic = ray_node
    raylet, proc = fake_raylet(tmp_path)
    try:
        home = tmp_path / "home"
        (home / ".sage").mkdir(parents=True)
        (home / ".sage" / "deploy.json").write_text('{"revision": "abc123", "install": {"ok": false}}')
        command = logic.probe_command("~/.sage/deploy.json", shlex.quote)
        out = subprocess.run(["dash", "-c", command], capture_output=True, text=True,
                             env={**os.environ, "HOME": str(home)}, check=True).stdout
        procs, record, _, _, _, _ = logic.parse_probe(out)
        # One Ray detector: the probe's view of this process is the module's own, read from /proc.
        assert procs[proc.pid] == logic.ray_processes()[proc.pid] == [str(raylet), "-c", "import time; time.sleep(60)",
                                                                      "--node_ip_address=10.9.8.7",
                                                                      "--gcs-address=10.9.8.1:6379"]
        assert all(logic.is_ray(argv) for argv in procs.values())
        state = logic.node_state({proc.pid: procs[proc.pid]})
        assert state["running"] and state["node_ip"] == "10.9.8.7" and state["gcs_address"] == "10.9.8.1:6379"
        assert logic.deployed(record, "abc123") == {"revision": "abc123", "install_ok": False, "stale": False}
        assert logic.deployed(record, "def456")["stale"] is True
        assert logic.deployed({}, "def456") == {"revision": None, "install_ok": None, "stale": True}
        # Ansible's ssh runs a probe without stdin on a pty: the same output with \r\n line ends reads the same.
        assert logic.parse_probe(out.replace("\n", "\r\n"))[1] == record == {"revision": "abc123",
                                                                             "install": {"ok": False}}
        # Issue 32, finding 1: a raylet the kernel stops (SIGSTOP) is there, but not working.
        assert logic.raylet_not_working(logic.node_state(procs, logic.parse_probe(out)[3])) is None
        proc.send_signal(signal.SIGSTOP)
        time.sleep(0.2)
        out = subprocess.run(["dash", "-c", command], capture_output=True, text=True, check=True).stdout
        procs, _, _, states, _, _ = logic.parse_probe(out)
        why = logic.raylet_not_working(logic.node_state(procs, states))
        assert states[proc.pid] == "T" and why.startswith("this node's raylet is stopped")
        assert logic.raylet_not_working(logic.node_state(procs)) is None  # the module's view: no states read
    finally:
        proc.kill()
        proc.wait()
    # A record path is quoted into the command, never interpreted by the shell.
    assert "cat -- '/x/$(reboot)' " in logic.probe_command("/x/$(reboot)", shlex.quote)


def test_the_probe_asks_each_running_raylet_for_its_health_and_a_silent_one_fails_the_row(tmp_path: Path) -> None:
    """The probe hands the raylets the kernel runs (not a stopped one: /proc says enough) to the node's Python, whose
    answer names the one that does not answer. A stand-in Python answers here; the e2e test freezes a real raylet."""
    logic = ray_node
    python = tmp_path / "python with space"
    python.write_text('#!/bin/sh\nshift 5\nfor pid; do echo "$pid no no answer on its port 4242 (timed out)"; '
                      'done\n')
    python.chmod(0o755)
    _, proc = fake_raylet(tmp_path)
    try:
        time.sleep(0.2)
        command = logic.probe_command("/dev/null", shlex.quote, python_path=str(python))

        def probe():
            out = subprocess.run(["dash", "-c", command], capture_output=True, text=True, check=True).stdout
            procs, _, _, states, _, health = logic.parse_probe(out)
            return logic.node_state(procs, states, health)

        state = probe()
        assert state["raylet_answers"] is False and "port 4242" in state["raylet_health"]
        why = logic.raylet_not_working(state)
        assert why.startswith(f"this node's raylet (pid {proc.pid}, /proc state S) does not answer"), why
        proc.send_signal(signal.SIGSTOP)
        time.sleep(0.2)
        state = probe()
        assert state["raylet_answers"] is None and "raylet is stopped" in logic.raylet_not_working(state)
    finally:
        proc.kill()
        proc.wait()
    assert logic.parse_health("12 yes\r\n13 no no answer (unavailable)\nnoise\n") == {12: None,
                                                                                         13: "no answer (unavailable)"}


def test_the_head_probe_reads_rays_table_from_the_dashboard_with_the_token_on_stdin(tmp_path: Path) -> None:
    """The head's status probe asks the state API with the node's Python; the token never is an argument."""
    logic = ray_node
    seen = {}
    answer = {"data": {"result": {"result": [
        {"node_ip": "10.0.0.1", "node_id": "id1", "node_name": "h", "state": "ALIVE", "is_head_node": True,
         "resources_total": {"CPU": 2.0, "node:10.0.0.1": 1.0}, "labels": {"ray.io/node_id": "x", "zone": "a"}},
        {"node_ip": "10.0.0.2", "node_name": "w", "state": "DEAD", "resources_total": {"CPU": 4.0}}]}}}

    class StateApi(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            seen.update(path=self.path, auth=self.headers.get("Authorization"))
            body = json.dumps(answer).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), StateApi)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    command = logic.state_api_command(sys.executable, shlex.quote)
    ask = logic.state_api_input("0.0.0.0", server.server_port, "s3cret-token")
    try:
        out = subprocess.run(["sh", "-c", command], input=ask, capture_output=True, text=True, check=True).stdout
    finally:
        server.shutdown()
        server.server_close()
    assert "s3cret" not in command
    assert seen == {"path": "/api/v0/nodes?limit=10000", "auth": "Bearer s3cret-token"}
    nodes = logic.state_api_nodes(out)
    assert nodes == [
        {"node_ip": "10.0.0.1", "node_id": "id1", "hostname": "h", "alive": True, "is_head": True,
         "resources": {"CPU": 2.0}, "labels": {"zone": "a"}},
        {"node_ip": "10.0.0.2", "node_id": None, "hostname": "w", "alive": False, "is_head": False,
         "resources": {"CPU": 4.0}, "labels": {}}]
    # No dashboard there, or no such Python: no table (the module then asks Ray's GCS), and the command succeeds.
    for python in (sys.executable, "/nonexistent/python"):
        out = subprocess.run(["sh", "-c", logic.state_api_command(python, shlex.quote)], input=ask,
                             capture_output=True, text=True, check=True).stdout
        assert logic.state_api_nodes(out) is None


def test_the_head_is_asked_for_its_table_only_while_its_gcs_runs() -> None:
    """The one Ray detector decides: a head's raylet without a gcs_server is down, and its dashboard (which would
    answer only at the timeout) is not asked; the same table with the gcs_server is asked."""
    raylet = {7: ["/env/bin/raylet", "--node_ip_address=10.0.0.1", "--gcs-address=10.0.0.1:6379"]}
    gcs = {8: ["/env/bin/gcs_server", "--gcs_server_port=6379"]}
    without = logic.node_state(logic.ray_of(raylet))
    assert without["running"] and logic.head_without_gcs("head", without)
    assert logic.head_without_gcs("head", logic.node_state(logic.ray_of({**raylet, **gcs}))) is None


def test_a_zombie_or_another_process_is_not_ray_for_the_probe_either() -> None:
    out = ("101 S " + "\x1f".join(RAYLET) + "\x1f\n106 Z \n105 S /usr/bin/python3\x1fserver.py\x1f\n"
           f"{logic.PROBE_SEPARATOR}\n")
    procs, record, _, _, _, _ = logic.parse_probe(out)
    assert procs == {101: RAYLET} and record == {}


def test_a_start_refuses_another_ray_release_found_beside_the_python(tmp_path: Path) -> None:
    from ansible_collections.sage.cluster.plugins.module_utils.sage_env import installed_ray
    python = tmp_path / "env" / "bin" / "python"
    python.parent.mkdir(parents=True)
    assert installed_ray(str(python)) == []  # nothing found: not checked
    assert logic.ray_drift("2.60.0", []) is None
    (tmp_path / "env" / "lib" / "python3.11" / "site-packages" / "ray-2.58.0.dist-info").mkdir(parents=True)
    found = installed_ray(str(python))
    assert found == ["2.58.0"]
    why = logic.ray_drift("2.60.0", found)
    assert "another Ray (2.58.0) than the cluster (2.60.0" in why and "`sage cluster provision`" in why
    assert logic.ray_drift("2.58.0", found) is None and logic.ray_drift("", found) is None


def test_an_env_that_does_not_exist_yet_is_not_unwritable(tmp_path: Path) -> None:
    # (A root-owned env, as the SSH user sees it: the rig test test_bare_hosts.)
    from ansible_collections.sage.cluster.plugins.module_utils.sage_env import unwritable_env
    (tmp_path / "env" / "bin").mkdir(parents=True)
    assert unwritable_env(str(tmp_path / "env" / "bin" / "python")) is None
    assert unwritable_env(str(tmp_path / "missing" / "bin" / "python")) is None  # provision makes that one


# ---------------------------------------------------------------- GCS fault tolerance

FT_HEAD = {"node_type": "head", "gcs_storage_dir": "/home/sage/.sage/gcs", "redis_address": "r1:6379",
           "redis_password": "pw", "gcs_namespace": "sage-h-6379", "gcs_reconnect_timeout": 600}


def test_fault_tolerance_off_leaves_rays_env_and_argv_alone() -> None:
    for node_type in ("head", "worker"):
        params = dict(FT_HEAD, node_type=node_type, fault_tolerance="none")
        assert logic.fault_tolerance_env(params) == {} and logic.redis_args(params) == []
        assert logic.fault_tolerance_store(params) is None


def test_the_head_keeps_its_tables_where_the_mode_says_and_the_workers_wait() -> None:
    local = dict(FT_HEAD, fault_tolerance="local")
    assert logic.fault_tolerance_env(local) == {"RAY_gcs_storage": "rocksdb",
                                                "RAY_gcs_storage_path": "/home/sage/.sage/gcs/rocksdb",
                                                "RAY_external_storage_namespace": "sage-h-6379"}
    assert logic.redis_args(local) == []
    redis = dict(FT_HEAD, fault_tolerance="redis")
    assert logic.fault_tolerance_env(redis) == {"RAY_REDIS_ADDRESS": "r1:6379",
                                                "RAY_external_storage_namespace": "sage-h-6379"}
    assert logic.redis_args(redis) == ["--redis-username=default", "--redis-password=pw"]
    assert logic.redis_args(dict(redis, redis_password=None)) == []
    worker = dict(redis, node_type="worker")
    assert logic.fault_tolerance_env(worker) == {"RAY_gcs_rpc_server_reconnect_timeout_s": "600"}
    assert logic.redis_args(worker) == []


class FakeRedis:
    """A connection that answers each command with the next reply."""

    def __init__(self, replies: list[bytes]) -> None:
        self.replies, self.sent = replies, []

    def __call__(self, address, timeout):
        self.address = address
        return self

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def sendall(self, data: bytes) -> None:
        self.sent.append(data)

    def recv(self, size: int) -> bytes:
        return self.replies.pop(0)


def test_redis_ping_logs_in_then_pings() -> None:
    fake = FakeRedis([b"+OK\r\n", b"+PONG\r\n"])
    assert logic.redis_ping("redis://r1:6380", "pw", connect=fake) is None
    assert fake.address == ("r1", 6380)
    assert fake.sent == [b"*3\r\n$4\r\nAUTH\r\n$7\r\ndefault\r\n$2\r\npw\r\n", b"*1\r\n$4\r\nPING\r\n"]
    wrong = FakeRedis([b"-WRONGPASS invalid username-password pair\r\n"])
    assert logic.redis_ping("r1:6379", "bad", connect=wrong) == (
        "AUTH answered -WRONGPASS invalid username-password pair")
    assert logic.redis_ping("127.0.0.1:1", None).startswith("cannot reach it")


def test_a_lost_head_is_told_alike_on_its_row_and_in_the_footer() -> None:
    """Issue 32, finding 5: with fault tolerance the row said the workers give up, the footer that they wait."""
    from sage_cluster.report import fault_tolerance_text

    for mode in ("local", "redis"):
        row = logic.head_without_gcs("head", logic.node_state({101: RAYLET}), mode)
        footer = fault_tolerance_text({"mode": mode, "store": "/x", "namespace": "n"})
        assert logic.lost_head_fate(mode) in row and logic.lost_head_fate(mode) in footer
        assert "give up" not in row and "wait for it" in row
    assert "give up" in logic.head_without_gcs("head", logic.node_state({101: RAYLET}), "none")


def test_alive_nodes_are_counted_per_host_not_in_total() -> None:
    """Issue 32, findings 1 and 2: a host Ray dropped, and a host whose old node Ray still lists, are said per host."""
    def node(ip: str, alive: bool = True) -> dict[str, Any]:
        return {"node_ip": ip, "alive": alive}

    nodes = [node("10.0.0.1"), node("10.0.0.2"), node("10.0.0.2"), node("10.0.0.3", alive=False), node("10.0.0.9")]
    assert logic.alive_per_host(nodes, ["10.0.0.1", "10.0.0.2", "10.0.0.3"]) == {"10.0.0.2": 2, "10.0.0.3": 0}
    assert logic.alive_per_host(nodes, ["10.0.0.1"]) == {}
    assert "dropped" in logic.alive_count_note(0) and "sage cluster start" in logic.alive_count_note(0)
    assert "2 alive nodes" in logic.alive_count_note(2) and "old raylet" in logic.alive_count_note(2)
