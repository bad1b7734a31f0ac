"""Timing: samples, the controller's CPU, a quiet machine, and sage run as a user runs it."""
from __future__ import annotations

import json
import os
import resource
import stat
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from bench.layout import REPO

if TYPE_CHECKING:
    from tests.rig import Rig


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
    sage_mem: list[float] = field(default_factory=list)  # controller peak memory (MiB, PSS) of the command
    floor_mem: list[float] = field(default_factory=list)
    forks: list[int] = field(default_factory=list)  # most ansible-playbook processes at once, minus the parent
    forks_setting: list[str] = field(default_factory=list)  # ANSIBLE_FORKS as sage set it
    # CPU seconds the whole machine spent during the command (/proc/stat): the controller's and, on the rig, the
    # hosts' sshd and the modules they run, which share its cores
    sage_machine_cpu: list[float] = field(default_factory=list)
    floor_machine_cpu: list[float] = field(default_factory=list)


def children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def cpu_snapshot() -> tuple[int, int]:
    """This machine's CPU time so far, all and idle (+ iowait), in clock ticks, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(fields), fields[3] + fields[4]


def machine_cpu_since(snapshot: tuple[int, int]) -> float:
    """Busy CPU seconds of the whole machine since `snapshot`."""
    (total0, idle0), (total1, idle1) = snapshot, cpu_snapshot()
    return ((total1 - idle1) - (total0 - idle0)) / os.sysconf("SC_CLK_TCK")


def cpu_busy(seconds: float = 2.0) -> float:
    """Share of this machine's CPU time that was busy over the next `seconds` (0..1), from /proc/stat."""
    total0, idle0 = cpu_snapshot()
    time.sleep(seconds)
    total1, idle1 = cpu_snapshot()
    return 1 - (idle1 - idle0) / max(1, total1 - total0)


def wait_for_quiet(threshold: float, max_wait: float) -> float | None:
    """On a shared machine, start a round only when others leave the CPUs mostly idle (bounded wait). Returns the
    machine's busy share when the round starts (None: not checked)."""
    if threshold >= 1 or max_wait <= 0:
        return None
    deadline = time.monotonic() + max_wait
    busy = cpu_busy()
    while busy > threshold and time.monotonic() < deadline:
        log(f"  (machine {busy:.0%} busy with other work; waiting for <= {threshold:.0%})")
        busy = cpu_busy(5.0)
    if busy > threshold:
        log(f"  (still {busy:.0%} busy after {max_wait:.0f}s; measuring anyway)")
    return busy


def _ppids() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command name) of every process, from /proc/<pid>/stat."""
    table = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                head, _, rest = Path(entry.path, "stat").read_text().rpartition(")")
                table[int(entry.name)] = (int(rest.split()[1]), head.partition("(")[2])
            except (OSError, ValueError, IndexError):
                pass
    return table


def _pss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _environ(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    return dict(item.decode(errors="replace").partition("=")[::2] for item in raw.split(b"\0") if item)


class PeakMemory:
    """The controller memory of one command, sampled every `every` seconds while it runs: the summed PSS (shared
    pages split among the processes that share them, so Ansible's forked workers are not counted in full each) of
    this process's children started since entering, their descendants, and the SSH control masters that left the
    tree (ssh processes whose command line names `marker`, sage's HOME). Only for runs that are not timed: a
    sample reads /proc for every process on the machine."""

    def __init__(self, marker: str = "", every: float = 0.2):
        self.marker, self.every = marker, every
        self.peak_mib, self.forks = 0.0, 0
        self.forks_setting = ""  # ANSIBLE_FORKS in ansible-playbook's environment, as sage's runner set it
        self._stop = threading.Event()

    def __enter__(self) -> PeakMemory:
        me = os.getpid()
        self._before = {pid for pid, (ppid, _) in _ppids().items() if ppid == me}
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        me = os.getpid()
        while not self._stop.is_set():
            table = _ppids()
            children: dict[int, list[int]] = {}
            for pid, (ppid, _) in table.items():
                children.setdefault(ppid, []).append(pid)
            todo = [pid for pid in children.get(me, []) if pid not in self._before]
            tree = set()
            while todo:
                pid = todo.pop()
                tree.add(pid)
                todo.extend(children.get(pid, []))
            for pid, (_, name) in table.items():
                if name == "ssh" and pid not in tree and self.marker:
                    try:
                        if self.marker.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                            tree.add(pid)
                    except OSError:
                        pass
            self.peak_mib = max(self.peak_mib, sum(map(_pss_kib, tree)) / 1024)
            playbooks = [pid for pid in tree if table[pid][1].startswith("ansible-playboo")]
            self.forks = max(self.forks, len(playbooks) - 1)
            for pid in playbooks if not self.forks_setting else []:
                self.forks_setting = _environ(pid).get("ANSIBLE_FORKS", "")
                if self.forks_setting:
                    break
            self._stop.wait(self.every)


class Sage:
    """`python -m sage_cluster` as a user runs it, with its own HOME (so its own ~/.sage)."""

    def __init__(self, home: Path, sage_root: str | None):
        self.home = home
        # The bench's own tree by default: a pip-installed sage may be another checkout's.
        self.sage_root = sage_root or str(REPO)
        self.last_cpu = 0.0
        self.last_rc = 0
        self.last_span = (0.0, 0.0)  # wall clock (time.time()) at the last command's launch and exit

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SAGE_", "ANSIBLE_"))}
        env["HOME"] = str(self.home)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [self.sage_root, env.get("PYTHONPATH")]))
        return env

    def run(self, config: Path, *args: str, ok_codes: tuple[int, ...] = (0,)) -> tuple[float, dict]:
        argv = [sys.executable, "-m", "sage_cluster", *args, "--config", str(config), "--json"]
        cpu0, t0, launched = children_cpu(), time.perf_counter(), time.time()
        proc = subprocess.run(argv, capture_output=True, text=True, env=self.env(), cwd=self.home, timeout=900,
                              stdin=subprocess.DEVNULL)
        seconds = time.perf_counter() - t0
        self.last_span = (launched, time.time())
        self.last_cpu = children_cpu() - cpu0
        self.last_rc = proc.returncode
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


def raylet_pids(rig: Rig, names: list[str]) -> dict[str, str]:
    """Each rig host's raylet PIDs as pgrep prints them ('' where none runs): the same after a fault = kept."""
    return {n: rig.ssh(n, ["pgrep", "-u", rig.user, "-x", "raylet"], check=False).stdout.strip() for n in names}


def hosts_results(data: dict) -> dict[str, str]:
    return {name: h.get("result") for name, h in data.get("hosts", {}).items()}


def expect_results(what: str, data: dict, names: list[str], allowed: set[str]) -> None:
    got = hosts_results(data)
    if sorted(got) != sorted(names) or not set(got.values()) <= allowed:
        raise BenchError(f"{what}: expected {sorted(allowed)} on {names}, got {got}\n"
                         f"{json.dumps(data, indent=1)[-2000:]}")
