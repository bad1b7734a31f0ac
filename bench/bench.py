"""sage against the floor (plain SSH, as a hand-rolled script would do it), on the test rig.

Run as root from the repository root (the rig needs root: namespaces, /etc/hosts):

    python -m bench.bench                         # 3 rounds, scaling on 4 + 8,16,32 hosts, writes docs/performance.md
    python -m bench.bench --rounds 5 --hosts 8,16,32 --out /tmp/perf.md
    python -m bench.bench --smoke                 # CI smoke: 1 round, no scaling hosts, writes nothing
    python -m bench.bench --sage-root /tmp/scratch --only cluster --out /tmp/scratch.md
                                                  # measure a modified copy of the tree (PYTHONPATH=/tmp/scratch)

What runs, in one process, on its own rig (root /var/tmp/sage-rig-bench, hosts 127.0.0.120+: b-head and
b-w1..b-w3 with Ray, b-s1..b-sN sshd-only), with Ray on ports 6395 (GCS) and 8295 (dashboard):

  cluster section, per round (the order of sage and floor flips every round):
    sage cycle:  `sage cluster start`; settle; status pair; `sage cluster status` with cold SSH; `sage cluster stop`
    floor cycle: head `ray start` over ssh, then the 3 workers' `ray start` in parallel; settle; status pair;
                 `ray stop` on all 4 in parallel
    status pair: `sage cluster status` and one `ray status` over ssh on the head (in flipping order)
    deploys:     no-op `sage cluster deploy` vs parallel `rsync -az` to the 4 hosts; then the same after one file
                 of the generated project (200 small files + 4 MiB) changed
  scaling section, for 4 and each --hosts N (sshd-only hosts b-s1..b-sN, b-s1 as the config's head):
    no-op `sage cluster deploy` vs parallel rsync; `sage cluster status` (exit 1: no Ray there) vs parallel
    `ssh HOST pgrep -u sage -x raylet`

The floor uses fresh SSH connections every time (`-F none`, no ControlMaster), as a naive script does. sage
runs as `python -m sage_cluster ... --config <bench config> --json` with HOME set to a bench temp dir, so its
SSH control masters (ControlPersist) live from one sage command to the next, as they do for a user typing
commands; the "cold SSH" status row closes them first.

Each figure is the median over the rounds; the ratio is sage / floor. Targets (issue 6): start <= 1.15x,
stop <= 1.5x, status <= 2x, no-op deploy <= 2x; deploy and status on 32 hosts < 3x their time on 4 hosts.
The run never calls `ray stop` on the controller: every Ray command runs as the rig user inside a rig host.
"""
from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import random
import re
import resource
import shlex
import shutil
import signal
import socket
import stat
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # `python bench/bench.py` as well as `python -m bench.bench`
    sys.path.insert(0, str(REPO))

from tests.rig import DEFAULT_ENV, Rig, ensure_env, installed_ray_version, why_not_available  # noqa: E402
from sage_cluster.source import EXCLUDES  # noqa: E402  (the floor's rsync skips what sage skips)

ROOT = "/var/tmp/sage-rig-bench"
FIRST_IP = 120
HEAD, WORKERS = "b-head", ["b-w1", "b-w2", "b-w3"]
CLUSTER = [HEAD, *WORKERS]
HEAD_PORT, DASHBOARD_PORT = 6395, 8295
ENV = DEFAULT_ENV
REMOTE_HOME = "/home/sage"
DEST = f"{REMOTE_HOME}/bench-proj"
HEAD_TEMP, WORKER_TEMP = "/tmp/ray_head", "/tmp/ray_worker"
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"

CONFIG = """\
# Written by bench/bench.py for one run; the rig is at {root}.
head:
  host: "{head}"
  head_port: {head_port}
  dashboard_port: {dashboard_port}
  dashboard_host: "127.0.0.1"
  temp_dir: "{head_temp}"
worker:
  bind_host: "localhost"
  temp_dir: "{worker_temp}"
workers_ssh_hosts: "{workers}"
ssh:
  user: "sage"
  key_path: "{key}"
  connect_timeout: 10
  strict_host_key_checking: "yes"
  known_hosts: "{known_hosts}"
remote:
  sage_home: "{dest}"
  python_path: "{env}/bin/python"
  ray_command: "{env}/bin/ray"
  conda_env: ""
deploy:
  source: "{project}"
"""

# (key, label, target ratio or None); the target applies to sage / floor.
CLUSTER_ROWS = [
    ("start", "cluster start (1 head + 3 workers)", 1.15),
    ("stop", "cluster stop", 1.5),
    ("status", "cluster status", 2.0),
    ("status_cold", "cluster status, cold SSH (no control master yet)", None),
    ("deploy_noop", "deploy, nothing changed (4 hosts)", 2.0),
    ("deploy_one", "deploy, one file changed (4 hosts)", None),
    ("ansible_empty", "for reference: ansible-playbook with one empty play, no hosts (vs the no-op deploy floor)",
     None),
]
# Rows whose "floor" column borrows another row's floor.
FLOOR_OF = {"status_cold": "status", "ansible_empty": "deploy_noop"}
SCALE_TARGET = 3.0  # sage on the largest host count < 3x sage on 4 hosts


class BenchError(RuntimeError):
    pass


def log(msg: str) -> None:
    print(msg, flush=True)


def median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


@dataclass
class Sample:
    sage: list[float] = field(default_factory=list)
    floor: list[float] = field(default_factory=list)
    inner: list[float] = field(default_factory=list)  # sage's own "seconds": the playbook run inside the command
    sage_cpu: list[float] = field(default_factory=list)  # controller CPU seconds (user + sys) of the command
    floor_cpu: list[float] = field(default_factory=list)


def children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def cpu_busy(seconds: float = 2.0) -> float:
    """Share of this machine's CPU time that was busy over the next `seconds` (0..1), from /proc/stat."""
    def snap() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + fields[4]  # idle + iowait
        return sum(fields), idle
    total0, idle0 = snap()
    time.sleep(seconds)
    total1, idle1 = snap()
    return 1 - (idle1 - idle0) / max(1, total1 - total0)


def wait_for_quiet(threshold: float, max_wait: float) -> None:
    """On a shared machine, start a round only when others leave the CPUs mostly idle (bounded wait)."""
    if threshold >= 1 or max_wait <= 0:
        return
    deadline = time.monotonic() + max_wait
    busy = cpu_busy()
    while busy > threshold and time.monotonic() < deadline:
        log(f"  (machine {busy:.0%} busy with other work; waiting for <= {threshold:.0%})")
        busy = cpu_busy(5.0)
    if busy > threshold:
        log(f"  (still {busy:.0%} busy after {max_wait:.0f}s; measuring anyway)")


# ---- sage ------------------------------------------------------------------------------------------------
class Sage:
    """`python -m sage_cluster` as a user runs it, with its own HOME (so its own ~/.sage)."""

    def __init__(self, home: Path, sage_root: str | None):
        self.home = home
        self.sage_root = sage_root
        self.last_cpu = 0.0

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SAGE_", "ANSIBLE_"))}
        env["HOME"] = str(self.home)
        if self.sage_root:
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [self.sage_root, env.get("PYTHONPATH")]))
        else:
            env.pop("PYTHONPATH", None)
        return env

    def run(self, config: Path, *args: str, ok_codes: tuple[int, ...] = (0,)) -> tuple[float, dict]:
        argv = [sys.executable, "-m", "sage_cluster", *args, "--config", str(config), "--json"]
        cpu0, t0 = children_cpu(), time.perf_counter()
        proc = subprocess.run(argv, capture_output=True, text=True, env=self.env(), cwd=self.home, timeout=900,
                              stdin=subprocess.DEVNULL)
        seconds = time.perf_counter() - t0
        self.last_cpu = children_cpu() - cpu0
        try:
            data = json.loads(proc.stdout)
        except json.JSONDecodeError:
            data = {}
        if proc.returncode not in ok_codes or not data:
            raise BenchError(f"sage {' '.join(args)} exited {proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\n"
                             f"stderr:\n{proc.stderr[-3000:]}")
        return seconds, data

    def auth_token_file(self, config: Path) -> str:
        """The controller file of the Ray auth token sage hands to the nodes ('' when auth is off), read from
        the inventory sage renders: whatever the config and sage's version, the floor does the same."""
        proc = subprocess.run([sys.executable, "-m", "sage_cluster", "inventory", "--format", "json", "--config",
                               str(config)], capture_output=True, text=True, env=self.env(), cwd=self.home,
                              timeout=120, stdin=subprocess.DEVNULL)
        if proc.returncode != 0:
            raise BenchError(f"sage inventory exited {proc.returncode}: {proc.stderr[-2000:]}")
        hostvars = json.loads(proc.stdout).get("_meta", {}).get("hostvars", {})
        groupvars = json.loads(proc.stdout).get("sage_cluster", {}).get("vars", {})
        for source in (groupvars, *hostvars.values()):
            if source.get("ray_node_auth_token_file"):
                return source["ray_node_auth_token_file"]
        return ""

    def close_masters(self) -> int:
        """Close every SSH control master sage left under its HOME (the next command connects anew)."""
        closed = 0
        for path in self.home.rglob("*"):
            try:
                if not stat.S_ISSOCK(path.lstat().st_mode):
                    continue
            except OSError:
                continue
            subprocess.run(["ssh", "-O", "exit", "-o", f"ControlPath={path}", "bench-close"],
                           capture_output=True, stdin=subprocess.DEVNULL, timeout=10)
            path.unlink(missing_ok=True)
            closed += 1
        return closed


def hosts_results(data: dict) -> dict[str, str]:
    return {name: h.get("result") for name, h in data.get("hosts", {}).items()}


def expect_results(what: str, data: dict, names: list[str], allowed: set[str]) -> None:
    got = hosts_results(data)
    if sorted(got) != sorted(names) or not set(got.values()) <= allowed:
        raise BenchError(f"{what}: expected {sorted(allowed)} on {names}, got {got}\n"
                         f"{json.dumps(data, indent=1)[-2000:]}")


# ---- the floor: what a script with plain ssh and rsync does -----------------------------------------------
class Floor:
    cpu = 0.0  # controller CPU seconds of the floor's commands since the last record()

    def __init__(self, rig: Rig):
        self.rig = rig
        self.use_token(None)

    def use_token(self, token: str | None) -> None:
        """The same Ray auth as sage's nodes: token mode with the token at ~/.ray/auth_token, or none."""
        auth = (f"RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH={REMOTE_HOME}/.ray/auth_token" if token
                else "RAY_AUTH_MODE=disabled")
        self.ray_env = f"env RAY_USAGE_STATS_ENABLED=0 {auth} PATH={ENV}/bin:/usr/bin:/bin"
        if token:  # one-time setup of the script's nodes, not timed
            cmd = "umask 077 && mkdir -p ~/.ray && cat > ~/.ray/auth_token"
            for name in CLUSTER:
                subprocess.run(self.ssh(name, cmd), input=token + "\n", text=True, check=True,
                               capture_output=True, timeout=60)

    def ssh(self, name: str, command: str) -> list[str]:
        return [*self.rig.ssh_argv(name), "--", command]

    @staticmethod
    def parallel(argvs: list[list[str]], ok_codes: tuple[int, ...] = (0,), what: str = "") -> float:
        """Start every command at once (`cmd & cmd & wait`), time until the last one ends."""
        t0 = time.perf_counter()
        cpu0 = children_cpu()
        procs = [subprocess.Popen(a, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
                 for a in argvs]
        outs = [p.communicate(timeout=600)[0] for p in procs]
        seconds = time.perf_counter() - t0
        Floor.cpu += children_cpu() - cpu0
        bad = [(a, p.returncode, o.decode(errors="replace")[-1500:]) for a, p, o in zip(argvs, procs, outs)
               if p.returncode not in ok_codes]
        if bad:
            a, rc, out = bad[0]
            raise BenchError(f"floor {what}: {shlex.join(a)} exited {rc}\n{out}")
        return seconds

    def ray_start(self, name: str, head: bool) -> list[str]:
        ip = self.rig.host(name).ip
        temp = HEAD_TEMP if head else WORKER_TEMP
        argv = [f"{ENV}/bin/ray", "start", f"--node-ip-address={ip}", f"--temp-dir={temp}", "--disable-usage-stats"]
        if head:
            argv += ["--head", f"--port={HEAD_PORT}", "--dashboard-host=127.0.0.1", f"--dashboard-port={DASHBOARD_PORT}"]
        else:
            argv += [f"--address={self.rig.host(HEAD).ip}:{HEAD_PORT}"]
        return self.ssh(name, f"mkdir -p {temp} && {self.ray_env} {shlex.join(argv)} </dev/null >>/tmp/bench-floor.log 2>&1")

    def start(self) -> float:
        """The head's `ray start`, then every worker's in parallel."""
        t0 = time.perf_counter()
        self.parallel([self.ray_start(HEAD, head=True)], what="head ray start")
        self.parallel([self.ray_start(w, head=False) for w in WORKERS], what="worker ray start")
        return time.perf_counter() - t0

    def stop(self) -> float:
        cmd = f"{self.ray_env} {ENV}/bin/ray stop </dev/null >>/tmp/bench-floor.log 2>&1"
        return self.parallel([self.ssh(n, cmd) for n in CLUSTER], what="ray stop")

    def status(self) -> float:
        head_ip = self.rig.host(HEAD).ip
        cmd = f"{self.ray_env} {ENV}/bin/ray status --address={head_ip}:{HEAD_PORT}"
        return self.parallel([self.ssh(HEAD, cmd)], what="ray status")

    def rsync(self, project: Path, names: list[str]) -> float:
        rsh = shlex.join(["ssh", *self.rig.ssh_options()])
        argvs = [["rsync", "-az", *[f"--exclude={e}" for e in EXCLUDES], "-e", rsh, f"{project}/",
                  f"{self.rig.user}@{self.rig.host(n).ip}:{DEST}/"] for n in names]
        return self.parallel(argvs, what="rsync")

    def process_check(self, names: list[str]) -> float:
        # pgrep: 0 = raylet runs, 1 = it does not; both are answers.
        return self.parallel([self.ssh(n, "pgrep -u sage -x raylet") for n in names], ok_codes=(0, 1),
                             what="pgrep raylet")


# ---- the project that gets deployed ---------------------------------------------------------------------------
def make_project(path: Path, files: int = 200, blob_mib: int = 4) -> Path:
    rnd = random.Random(6)
    for i in range(files):
        f = path / f"pkg{i // 20}" / f"mod{i % 20}.py"
        f.parent.mkdir(parents=True, exist_ok=True)
        body = "".join(f"VALUE_{j} = {rnd.randint(0, 10**9)}  # line {j} of module {i}\n" for j in range(30))
        f.write_text(f'"""Module {i} of the bench project."""\n' + body)
    (path / "data").mkdir()
    for i in range(blob_mib):
        (path / "data" / f"blob{i}.bin").write_bytes(rnd.randbytes(1 << 20))
    (path / ".git").mkdir()  # excluded by sage and by the floor's rsync
    (path / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (path / "pkg0" / "__pycache__").mkdir()
    (path / "pkg0" / "__pycache__" / "mod0.cpython-311.pyc").write_bytes(b"\0" * 512)
    return path


def change_one_file(project: Path) -> None:
    f = project / "pkg0" / "mod0.py"
    f.write_text(f.read_text() + f"CHANGED = {time.time_ns()}\n")


def write_config(path: Path, rig: Rig, project: Path, head: str, workers: list[str]) -> Path:
    path.write_text(CONFIG.format(
        root=rig.root, head=head, head_port=HEAD_PORT, dashboard_port=DASHBOARD_PORT, head_temp=HEAD_TEMP,
        worker_temp=WORKER_TEMP, workers=",".join(f"{w}:22" for w in workers), key=rig.key_path,
        known_hosts=rig.known_hosts_path, dest=DEST, env=ENV, project=project))
    return path


# ---- the benchmark ----------------------------------------------------------------------------------------------
class Bench:
    def __init__(self, args: argparse.Namespace, rig: Rig, tmp: Path):
        self.args = args
        self.rig = rig
        self.tmp = tmp
        self.sage = Sage(tmp / "home", args.sage_root)
        self.sage.home.mkdir()
        self.floor = Floor(rig)
        self.project = make_project(tmp / "project")
        self.results: dict[str, Sample] = {}
        self.auth = "?"
        self.scale_sizes: list[int] = []

    def sample(self, key: str) -> Sample:
        return self.results.setdefault(key, Sample())

    def record(self, key: str, who: str, seconds: float, inner: float | None = None) -> None:
        s = self.sample(key)
        getattr(s, who).append(seconds)
        if who == "sage":
            cpu = self.sage.last_cpu
            s.sage_cpu.append(cpu)
        else:
            cpu, Floor.cpu = Floor.cpu, 0.0
            s.floor_cpu.append(cpu)
        if inner is not None:
            s.inner.append(inner)
        log(f"    {key:<22} {who:<5} {seconds:7.2f}s  (cpu {cpu:5.2f}s"
            + (f", playbook {inner:.2f}s)" if inner is not None else ")"))

    # -- cluster section --------------------------------------------------------------------------------------
    def sage_start(self, cfg: Path) -> None:
        t, data = self.sage.run(cfg, "cluster", "start")
        expect_results("sage cluster start", data, CLUSTER, {"changed"})
        self.record("start", "sage", t, data.get("seconds"))

    def sage_stop(self, cfg: Path) -> None:
        t, data = self.sage.run(cfg, "cluster", "stop")
        expect_results("sage cluster stop", data, CLUSTER, {"changed"})
        self.record("stop", "sage", t, data.get("seconds"))

    def sage_status(self, cfg: Path, key: str = "status") -> None:
        t, data = self.sage.run(cfg, "cluster", "status")
        expect_results("sage cluster status", data, CLUSTER, {"ok"})
        if data.get("cluster", {}).get("alive") != len(CLUSTER) or not data.get("healthy"):
            raise BenchError(f"sage cluster status: not {len(CLUSTER)} alive nodes: {json.dumps(data)[-2000:]}")
        self.record(key, "sage", t, data.get("seconds"))

    def status_pair(self, cfg: Path, order: list[str]) -> None:
        for who in order:
            if who == "sage":
                self.sage_status(cfg)
            else:
                self.record("status", "floor", self.floor.status())

    def cycle(self, who: str, cfg: Path, order: list[str]) -> None:
        if who == "sage":
            self.sage_start(cfg)
        else:
            self.record("start", "floor", self.floor.start())
        time.sleep(self.args.settle)  # let the fresh nodes' agents finish starting before timing status
        self.status_pair(cfg, order)
        if who == "sage":
            self.sage.close_masters()
            self.sage_status(cfg, "status_cold")
            self.sage_stop(cfg)
        else:
            self.record("stop", "floor", self.floor.stop())

    def deploys(self, cfg: Path, order: list[str]) -> None:
        for key in ("deploy_noop", "deploy_one"):
            for who in order:
                if key == "deploy_one":
                    change_one_file(self.project)
                if who == "sage":
                    t, data = self.sage.run(cfg, "cluster", "deploy")
                    expect_results(f"sage deploy ({key})", data, CLUSTER,
                                   {"ok"} if key == "deploy_noop" else {"changed"})
                    self.record(key, "sage", t, data.get("seconds"))
                else:
                    self.record(key, "floor", self.floor.rsync(self.project, CLUSTER))
        self.record("ansible_empty", "sage", self.ansible_empty())

    def ansible_empty(self) -> float:
        """Ansible's fixed cost, which no playbook run avoids: ansible-playbook with one play of no tasks."""
        play = self.tmp / "empty.yml"
        play.write_text("- hosts: localhost\n  gather_facts: false\n  tasks: []\n")
        argv = [str(Path(sys.executable).with_name("ansible-playbook")), "-i", "localhost,", "-c", "local", str(play)]
        cpu0, t0 = children_cpu(), time.perf_counter()
        subprocess.run(argv, check=True, capture_output=True, stdin=subprocess.DEVNULL, env=self.sage.env(),
                       cwd=self.tmp, timeout=120)
        self.sage.last_cpu = children_cpu() - cpu0
        return time.perf_counter() - t0

    def cluster_section(self) -> None:
        cfg = write_config(self.tmp / "cluster.yaml", self.rig, self.project, HEAD, WORKERS)
        log("cluster: first deploy (copies the project; not timed)")
        _, data = self.sage.run(cfg, "cluster", "deploy")
        expect_results("first deploy", data, CLUSTER, {"changed"})
        token_file = self.sage.auth_token_file(cfg)
        self.auth = "token" if token_file else "off"
        log(f"cluster: Ray auth {self.auth} (from sage's inventory); the floor's nodes get the same")
        self.floor.use_token(Path(token_file).read_text().strip() if token_file else None)
        if self.args.warmup:
            log("cluster: warm-up start/stop with plain ssh (not timed: fills the page cache with Ray)")
            self.floor.start()
            self.floor.stop()
        Floor.cpu = 0.0
        for r in range(self.args.rounds):
            order = ["sage", "floor"] if r % 2 == 0 else ["floor", "sage"]
            log(f"cluster round {r + 1}/{self.args.rounds} (first: {order[0]})")
            wait_for_quiet(self.args.quiet, self.args.quiet_wait)
            for i, who in enumerate(order):
                if i:
                    wait_for_quiet(self.args.quiet, self.args.quiet_wait)
                self.cycle(who, cfg, order)
            self.deploys(cfg, order)

    # -- scaling section ----------------------------------------------------------------------------------------
    def scale_section(self) -> None:
        for n in self.scale_sizes:
            names = [f"b-s{i}" for i in range(1, n + 1)]
            cfg = write_config(self.tmp / f"scale{n}.yaml", self.rig, self.project, names[0], names[1:])
            log(f"scale {n} hosts: first deploy (not timed)")
            _, data = self.sage.run(cfg, "cluster", "deploy")
            expect_results("first deploy", data, names, {"changed", "ok"})
            for r in range(self.args.rounds):
                order = ["sage", "floor"] if r % 2 == 0 else ["floor", "sage"]
                log(f"scale {n} hosts, round {r + 1}/{self.args.rounds} (first: {order[0]})")
                wait_for_quiet(self.args.quiet, self.args.quiet_wait)
                for who in order:
                    if who == "sage":
                        t, data = self.sage.run(cfg, "cluster", "deploy")
                        expect_results("sage deploy (scale)", data, names, {"ok"})
                        self.record(f"scale_deploy_{n}", "sage", t, data.get("seconds"))
                    else:
                        self.record(f"scale_deploy_{n}", "floor", self.floor.rsync(self.project, names))
                for who in order:
                    if who == "sage":
                        # No Ray on these hosts: every node reports "stopped" and the command exits 1.
                        t, data = self.sage.run(cfg, "cluster", "status", ok_codes=(0, 1))
                        expect_results("sage status (scale)", data, names, {"ok"})
                        self.record(f"scale_status_{n}", "sage", t, data.get("seconds"))
                    else:
                        self.record(f"scale_status_{n}", "floor", self.floor.process_check(names))


# ---- report ------------------------------------------------------------------------------------------------------
def fmt(x: float | None, unit: str = "s") -> str:
    return "-" if x is None else f"{x:.2f}{unit}"


def table_rows(results: dict[str, Sample], sizes: list[int]) -> list[dict]:
    rows = []
    for key, label, target in CLUSTER_ROWS:
        s = results.get(key)
        if not s or not s.sage:
            continue
        sm, fm = median(s.sage), median(s.floor)
        floor_key = FLOOR_OF.get(key, key)
        if floor_key != key:
            fm = median(results[floor_key].floor) if results.get(floor_key) else None
        ratio = sm / fm if sm and fm else None
        verdict = "" if target is None or ratio is None else ("pass" if ratio <= target else "FAIL")
        rows.append(dict(key=key, what=label, sage=sm, floor=fm, ratio=ratio, floor_key=floor_key,
                         target=f"<= {target:g}x floor" if target else "-", result=verdict, n=len(s.sage)))
    base = sizes[0] if sizes else None
    for kind, label in (("deploy", "deploy, nothing changed"), ("status", "cluster status (no Ray on the hosts)")):
        first = results.get(f"scale_{kind}_{base}")
        for n in sizes:
            s = results.get(f"scale_{kind}_{n}")
            if not s or not s.sage:
                continue
            sm, fm = median(s.sage), median(s.floor)
            growth = sm / median(first.sage) if first and first.sage and n != base else None
            last = n == sizes[-1] and n != base
            verdict = "" if not last or growth is None else ("pass" if growth < SCALE_TARGET else "FAIL")
            rows.append(dict(key=f"scale_{kind}_{n}", what=f"{label}, {n} sshd-only hosts", sage=sm, floor=fm,
                             ratio=sm / fm if fm else None, growth=growth, n=len(s.sage),
                             target=f"< {SCALE_TARGET:g}x sage on {base} hosts" if last else "-",
                             result=(f"{verdict} ({growth:.2f}x)" if verdict else "")))
    return rows


def console_table(rows: list[dict]) -> str:
    header = ["what", "sage", "floor", "sage/floor", "vs 4 hosts", "target", "result"]
    body = [[r["what"], fmt(r["sage"]), fmt(r["floor"]), fmt(r["ratio"], "x"), fmt(r.get("growth"), "x"),
             r["target"], r["result"]] for r in rows]
    widths = [max(len(str(x[i])) for x in [header, *body]) for i in range(len(header))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(line, widths)).rstrip() for line in [header, *body])


def markdown_table(rows: list[dict]) -> str:
    lines = ["| what | sage (median) | floor (median) | sage / floor | vs 4 hosts | target | result |",
             "|---|---:|---:|---:|---:|---|---|"]
    for r in rows:
        lines.append(f"| {r['what']} | {fmt(r['sage'])} | {fmt(r['floor'])} | {fmt(r['ratio'], '×')} | "
                     f"{fmt(r.get('growth'), '×')} | {r['target'].replace('<=', '≤')} | {r['result']} |")
    return "\n".join(lines)


def samples_block(results: dict[str, Sample]) -> str:
    lines = []
    for key, s in results.items():
        sage = " ".join(f"{x:.2f}" for x in s.sage)
        floor = " ".join(f"{x:.2f}" for x in s.floor)
        inner = " ".join(f"{x:.2f}" for x in s.inner)
        cpu = f"{median(s.sage_cpu) or 0:.2f}/{median(s.floor_cpu) or 0:.2f}"
        lines.append(f"{key:<14} sage [{sage}]  floor [{floor}]" + (f"  sage's playbook [{inner}]" if inner else "")
                     + f"  controller CPU s, sage/floor median {cpu}")
    return "\n".join(lines)


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _first_line(argv: list[str]) -> str:
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        return ((p.stdout or p.stderr).strip().splitlines() or ["?"])[0]
    except (OSError, subprocess.SubprocessError):
        return "?"


def machine_info() -> dict[str, str]:
    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kib = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))
    distro = "?"
    with_os = Path("/etc/os-release")
    if with_os.exists():
        m = re.search(r'^PRETTY_NAME="?([^"\n]*)', with_os.read_text(), re.M)
        distro = m.group(1) if m else "?"
    rev = _first_line(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    return {
        "host": socket.gethostname(),
        "cpu": f"{os.cpu_count()} CPUs (nproc), {cpu}",
        "memory": f"{mem_kib / 2**20:.1f} GiB",
        "kernel": platform.release(),
        "os": distro,
        "python": platform.python_version(),
        "ansible-core": _version("ansible-core"),
        "ansible-runner": _version("ansible-runner"),
        "ray": f"{_version('ray')} (controller), {installed_ray_version(ENV)} (hosts' env {ENV})",
        "openssh": _first_line(["ssh", "-V"]),
        "rsync": _first_line(["rsync", "--version"]),
        "tree": f"git {rev}" + (" with uncommitted changes" if dirty else ""),
    }


def render_block(args: argparse.Namespace, rows: list[dict], results: dict[str, Sample], info: dict[str, str],
                 started: datetime.datetime, seconds: float, loads: tuple[str, str], auth: str) -> str:
    cmd = "python -m bench.bench " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    machine = "\n".join(f"- {k}: {v}" for k, v in info.items())
    return f"""{BEGIN}
## Latest run

`{cmd.strip()}`: {started:%Y-%m-%d %H:%M %Z}, {args.rounds} round(s), {seconds / 60:.1f} min in all; load average
{loads[0]} before, {loads[1]} after; Ray auth {auth} for sage and the floor alike.{f" sage from {args.sage_root}." if args.sage_root else ""}

{markdown_table(rows)}

Machine:

{machine}

Every sample, in seconds (sage's playbook = the "seconds" sage reports for its Ansible run, the rest of the
sage figure is starting Python, loading the config, ansible-runner and ansible-playbook):

```
{samples_block(results)}
```
{END}"""


DOC_SKELETON = f"""# Performance

Written by `python -m bench.bench` (see bench/README.md); the block below is replaced on every run.

{BEGIN}
{END}
"""


def write_doc(path: Path, block: str) -> None:
    text = path.read_text() if path.exists() else DOC_SKELETON
    if BEGIN in text and END in text:
        text = text[:text.index(BEGIN)] + block + text[text.index(END) + len(END):]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


# ---- main ------------------------------------------------------------------------------------------------------
def loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME-WAIT leftovers are no obstacle
        try:
            s.bind(("0.0.0.0", port))
            return True
        except OSError:
            return False


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3, help="rounds of every measurement (default 3)")
    ap.add_argument("--hosts", default="8,16,32", help="sshd-only host counts for scaling; 4 is always added "
                    "as the base ('' = none; default %(default)s)")
    ap.add_argument("--out", help="markdown file to write the table into (default docs/performance.md; with "
                    "--smoke: none)")
    ap.add_argument("--smoke", action="store_true", help="1 round, no scaling hosts, no warm-up, nothing written")
    ap.add_argument("--only", choices=["cluster", "scale"], help="run one section only")
    ap.add_argument("--settle", type=float, default=5.0, help="seconds to wait after a start (default 5)")
    ap.add_argument("--warmup", action=argparse.BooleanOptionalAction, default=None,
                    help="one untimed start/stop first (default: on, off with --smoke)")
    ap.add_argument("--quiet", type=float, default=0.6, help="before each round and cycle, wait until the "
                    "machine's CPUs are at most this busy (0..1; 1 = never wait; default %(default)s)")
    ap.add_argument("--quiet-wait", type=float, help="but wait at most this many seconds (default 60; "
                    "with --smoke 0)")
    ap.add_argument("--sage-root", help="run sage from this source tree (PYTHONPATH), e.g. a scratch copy")
    ap.add_argument("--root", default=ROOT, help="rig directory (default %(default)s)")
    ap.add_argument("--first-ip", type=int, default=FIRST_IP, help="hosts get 127.0.0.(FIRST_IP + i)")
    ap.add_argument("--json", dest="json_out", help="also write every sample as JSON to this file")
    ap.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = ap.parse_args(argv)
    if args.smoke:
        args.rounds, args.hosts = 1, ""
        args.warmup = False if args.warmup is None else args.warmup
    elif args.out is None:
        args.out = str(REPO / "docs" / "performance.md")
    if args.warmup is None:
        args.warmup = True
    if args.quiet_wait is None:
        args.quiet_wait = 0 if args.smoke else 60
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")
    try:
        args.sizes = sorted({int(x) for x in args.hosts.split(",") if x.strip()})
    except ValueError:
        ap.error(f"--hosts: comma-separated numbers, not {args.hosts!r}")
    if args.sizes and args.only != "cluster":
        args.sizes = sorted({4, *args.sizes})
    if args.only == "scale" and not args.sizes:
        ap.error("--only scale needs --hosts")
    if args.sage_root:
        args.sage_root = str(Path(args.sage_root).resolve())
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    reason = why_not_available()
    if reason:
        print(f"bench: the rig is not available here: {reason}", file=sys.stderr)
        return 2
    if args.only != "scale":
        busy = [p for p in (HEAD_PORT, DASHBOARD_PORT) if not port_free(p)]
        if busy:
            print(f"bench: port(s) {busy} are in use on this machine (someone's Ray?); the bench needs them",
                  file=sys.stderr)
            return 2
    ensure_env()
    names = [] if args.only == "scale" else list(CLUSTER)
    names += [f"b-s{i}" for i in range(1, max(args.sizes, default=0) + 1)] if args.only != "cluster" else []
    started, t0 = datetime.datetime.now().astimezone(), time.monotonic()
    load_before = loadavg()
    tmp = Path(tempfile.mkdtemp(prefix="sage-bench-"))
    os.chmod(tmp, 0o755)
    rig = Rig(names, root=args.root, first_ip=args.first_ip)
    # SIGTERM/SIGHUP end the run like Ctrl-C does: through the finally below, which takes the rig down.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)
    bench = None
    try:
        log(f"rig: {len(names)} hosts at {args.root} (127.0.0.{args.first_ip}+)")
        rig.up()
        bench = Bench(args, rig, tmp)
        bench.scale_sizes = args.sizes if args.only != "cluster" else []
        if args.only != "scale":
            bench.cluster_section()
        if bench.scale_sizes:
            bench.scale_section()
    except KeyboardInterrupt:
        print("bench: interrupted; taking the rig down", file=sys.stderr)
        return 130
    except (BenchError, RuntimeError) as e:
        print(f"bench: {e}", file=sys.stderr)
        if bench is not None and bench.results:
            print("\nwhat was measured before the failure:\n" + samples_block(bench.results), file=sys.stderr)
        return 1
    finally:
        if bench is not None:
            bench.sage.close_masters()
        try:
            rig.down(purge=True)
        except RuntimeError as e:
            print(f"bench: rig teardown: {e}", file=sys.stderr)
        shutil.rmtree(tmp, ignore_errors=True)
    seconds = time.monotonic() - t0
    load_after = loadavg()
    rows = table_rows(bench.results, bench.scale_sizes)
    log("\n" + console_table(rows))
    log(f"\n{args.rounds} round(s) in {seconds / 60:.1f} min; medians; floor = plain ssh/rsync, fresh connections")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({k: vars(v) for k, v in bench.results.items()}, indent=1) + "\n")
    if args.out:
        write_doc(Path(args.out), render_block(args, rows, bench.results, machine_info(), started, seconds,
                                               (load_before, load_after), bench.auth))
        log(f"wrote {args.out}")
    missed = [r["what"] for r in rows if str(r["result"]).startswith("FAIL")]
    if missed:
        log(f"targets missed: {'; '.join(missed)}")
    return 1 if (args.strict and missed) else 0


if __name__ == "__main__":
    sys.exit(main())
