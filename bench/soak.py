"""`python -m bench.soak`: random faults on a running cluster, as an operator breaks things, and what sage made of
each: `sage cluster status` right after the fault (its exit code and time, whether a row named the broken host),
`sage cluster start` to heal (did one start do it, how long), then what a user checks: every host has its one
alive Ray node and no more, the workers' raylets were kept where the head healed on its store, a job ran on every
node (every third cycle), nothing of an interrupted `sage` left running. Anything else is an anomaly.

Its own rig (k-head, k-w1..k-w3 on 127.0.0.175-178, Ray on 6393), one cluster per fault-tolerance mode. With
--supervised every host's PID 1 is systemd and each node runs as the user unit sage-ray.service (issue 30), so a
fault may be mended by the unit before, or while, the heal's start runs: the same checks must hold. Prints a line
per cycle, the table, and writes the table into docs/reliability.md between its own markers (one block each for
plain and supervised hosts). Run as root from the repository root, inside tests/rig/isolated:

    tests/rig/isolated python3 -m bench.soak [--cycles 20] [--modes none,local] [--seed 1] [--supervised]
        [--out docs/reliability.md]

Exit 1 when any cycle had an anomaly. tests/e2e/test_soak.py runs a short soak: the four faults the soak found
wanting, once each.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import sage_cluster  # noqa: F401  (puts the collection sage.cluster on sys.path)
from ansible_collections.sage.cluster.plugins.module_utils.ray_node import STOPPED_STATES, process_states
from bench.layout import REPO
from bench.measure import log, raylet_pids
from bench.report import write_doc
from tests.rig import Rig, ensure_env, rig_root, why_not_available
from tests.rig.config import sage_config

HEAD, WORKERS = "k-head", ["k-w1", "k-w2", "k-w3"]
HOSTS = [HEAD, *WORKERS]
PORT, DASHBOARD_PORT, TEMP_DIR = 6393, 8293, "/tmp/ray_soak"
CONNECT_TIMEOUT = 5
# What "promptly" means for a status after a fault: the time a healthy status takes is a few seconds; an
# unreachable host may take ssh.connect_timeout plus a bounded margin (issue 32).
STATUS_BOUND = CONNECT_TIMEOUT + 15

def markers(supervised: bool) -> tuple[str, str]:
    """The doc's block of plain hosts, or of supervised ones."""
    name = "bench.soak supervised" if supervised else "bench.soak"
    return f"<!-- {name}: begin -->", f"<!-- {name}: end -->"


JOB = """\
import socket
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

ray.init()

@ray.remote(num_cpus=0)
def where():
    return socket.gethostname()

nodes = [n["NodeID"] for n in ray.nodes() if n["Alive"]]
print("ran on:", " ".join(sorted(ray.get([
    where.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n, soft=False)).remote() for n in nodes]))))
"""


@dataclasses.dataclass
class Cycle:
    mode: str
    n: int
    fault: str
    host: str
    status_rc: int | None = None
    status_s: float | None = None
    named: bool | None = None  # a row named the broken host
    heal_rc: int | None = None
    heal_s: float | None = None
    alive: int | None = None  # Ray's alive nodes right after the heal
    raylets_kept: bool | None = None  # the workers' raylets survived (head faults with a store only)
    job: bool | None = None
    anomalies: list[str] = dataclasses.field(default_factory=list)


class Soak:
    def __init__(self, rig: Rig, home: Path, mode: str, supervised: bool = False):
        self.rig, self.home, self.fault_tolerance = rig, home, mode
        self.mode = f"{mode}, systemd" if supervised else mode  # the table's label
        self.config = home / f"cluster-{mode}.yaml"
        self.config.write_text(sage_config(
            rig, HEAD, WORKERS, head_port=PORT, dashboard_port=DASHBOARD_PORT, comment=f"bench.soak ({self.mode})",
            head={"fault_tolerance": mode, "temp_dir": TEMP_DIR}, worker={"temp_dir": TEMP_DIR},
            remote={"supervisor": "systemd" if supervised else "none"},
            ssh={"strict_host_key_checking": "yes", "known_hosts": str(rig.known_hosts_path),
                 "connect_timeout": CONNECT_TIMEOUT}))
        self.job_dir = home / "job"
        self.job_dir.mkdir(exist_ok=True)
        (self.job_dir / "every_node.py").write_text(JOB)

    # ---- sage, as a user runs it -----------------------------------------------------------------------
    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "sage_cluster", "--config", str(self.config), *args]  # before a job's `--`

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SAGE_", "ANSIBLE_"))}
        return {**env, "HOME": str(self.home), "PYTHONPATH": os.pathsep.join(filter(None, [
            str(REPO), env.get("PYTHONPATH")]))}

    def sage(self, *args: str, timeout: float = 600) -> tuple[int, float, dict, str]:
        """(exit code, seconds, the --json object or {}, stderr)."""
        t0 = time.perf_counter()
        proc = subprocess.run(self.argv(*args, "--json"), capture_output=True, text=True, env=self.env(),
                              cwd=self.home, timeout=timeout, stdin=subprocess.DEVNULL)
        try:
            data = json.loads(proc.stdout)
        except json.JSONDecodeError:
            data = {}
        return proc.returncode, time.perf_counter() - t0, data, proc.stderr

    def popen_start(self) -> subprocess.Popen:
        return subprocess.Popen(self.argv("cluster", "start", "--json"), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, env=self.env(), cwd=self.home)

    # ---- what a user checks --------------------------------------------------------------------------
    def raylets(self) -> dict[str, str]:
        return raylet_pids(self.rig, WORKERS)

    def ray_left(self, name: str) -> str:
        return self.rig.ssh(name, ["pgrep", "-u", self.rig.user, "-a", "-f", "ray"], check=False).stdout.strip()

    def our_playbooks(self) -> list[int]:
        """Pids of ansible-playbook processes started by a sage with this soak's HOME."""
        found = []
        for pid in (int(p) for p in os.listdir("/proc") if p.isdigit()):
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
                environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"ansible-playbook" in cmdline and f"HOME={self.home}".encode() in environ:
                found.append(pid)
        return found

    def host_pids(self, name: str, comm: str) -> list[int]:
        """Pids of processes named COMM inside a rig host (its PID namespace), seen from this machine."""
        pidns = self.rig.host(name).pidns
        pids = []
        for pid in (int(p) for p in os.listdir("/proc") if p.isdigit()):
            try:
                ours = os.readlink(f"/proc/{pid}/ns/pid") == pidns
                if ours and Path(f"/proc/{pid}/comm").read_text().strip() == comm:
                    pids.append(pid)
            except OSError:
                continue
        return pids

    def signal_host(self, name: str, comm: str, sig: int) -> None:
        for pid in self.host_pids(name, comm):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:  # it ended since the listing (an sshd session, its parent resumed first)
                pass

    # ---- faults: each breaks HOST and returns what to undo once status has looked ----------------------------
    def kill_raylet(self, host: str) -> Callable[[], None] | None:
        self.signal_host(host, "raylet", signal.SIGKILL)
        return None

    def crash_node(self, host: str) -> Callable[[], None]:
        self.rig.stop_host(host)
        return lambda: self.rig.start_host(host)  # the machine comes back with no Ray; start must heal it

    def kill_head_gcs(self, host: str) -> Callable[[], None] | None:
        self.signal_host(host, "gcs_server", signal.SIGKILL)
        return None

    def hang_raylet(self, host: str) -> Callable[[], None] | None:
        self.signal_host(host, "raylet", signal.SIGSTOP)  # the heal must replace it (heal() thaws a survivor)
        return None

    def fill_temp_dir(self, host: str) -> Callable[[], None]:
        """The worker's Ray dies and its temp dir is full: a small file system of its own over it, filled. Its
        first start must fail saying so; the heal runs once the space is back."""
        self.kill_raylet(host)
        self.rig.nsenter(host, ["mount", "-t", "tmpfs", "-o", "size=2m,mode=1777", "tmpfs", TEMP_DIR])
        self.rig.nsenter(host, ["dd", "if=/dev/zero", f"of={TEMP_DIR}/filler", "bs=64k"], check=False)

        def free() -> None:
            self.rig.nsenter(host, ["umount", "-l", TEMP_DIR])
        return free

    def hang_sshd(self, host: str) -> Callable[[], None]:
        self.signal_host(host, "sshd", signal.SIGSTOP)
        return lambda: self.signal_host(host, "sshd", signal.SIGCONT)

    FAULTS: dict[str, tuple[str, str]] = {  # name: (method, where)
        "raylet killed": ("kill_raylet", "worker"),
        "node crashed": ("crash_node", "worker"),
        "head GCS killed": ("kill_head_gcs", "head"),
        "raylet hung": ("hang_raylet", "worker"),
        "sshd hung": ("hang_sshd", "worker"),
        "temp dir full": ("fill_temp_dir", "worker"),
    }
    # Faults of sage itself, mid-start: the cluster is first given work to do (a worker's raylet killed).
    SAGE_FAULTS = {"sage killed mid-start": signal.SIGKILL, "sage interrupted mid-start": signal.SIGINT,
                   "two starts at once": None}

    # ---- one cycle -------------------------------------------------------------------------------------
    def cycle(self, n: int, fault: str, rng: random.Random) -> Cycle:
        host = rng.choice(WORKERS) if fault != "head GCS killed" else HEAD
        c = Cycle(self.mode, n, fault, host)
        before = self.raylets()
        if fault in self.SAGE_FAULTS:
            self.kill_raylet(host)
            self.sage_fault(c, self.SAGE_FAULTS[fault], rng)
        else:
            method, _ = self.FAULTS[fault]
            undo = getattr(self, method)(host)
            c.status_rc, c.status_s, status, _ = self.sage("cluster", "status")
            row = status.get("hosts", {}).get(host, {})
            # A failed or unreachable row, or one whose Ray is not running: the table names the host either way.
            c.named = row.get("result") in ("failed", "unreachable") or not row.get("running")
            if c.status_rc == 0:
                c.anomalies.append("status exit 0 after the fault")
            if not c.named:
                c.anomalies.append(f"no status row named {host}")
            if c.status_s > STATUS_BOUND:
                c.anomalies.append(f"status took {c.status_s:.0f} s (bound {STATUS_BOUND} s)")
            if fault == "temp dir full":
                self.start_names_full_disk(c)
            if undo:
                undo()
        self.heal(c)
        if fault == "head GCS killed" and self.fault_tolerance != "none":
            c.raylets_kept = self.raylets() == before
            if not c.raylets_kept:
                c.anomalies.append("a worker's raylet was replaced: the head's store did not keep the workers")
        if n % 3 == 0:
            self.run_job(c)
        return c

    def sage_fault(self, c: Cycle, sig: int | None, rng: random.Random) -> None:
        first = self.popen_start()
        if sig is None:  # a second start at once: it waits for the first one's lock
            second = self.popen_start()
            codes = (first.wait(timeout=600), second.wait(timeout=600))
            if codes != (0, 0):
                c.anomalies.append(f"two starts at once exited {codes}")
            return
        time.sleep(rng.uniform(1.0, 4.0))  # somewhere in the start's plays
        first.send_signal(sig)
        first.wait(timeout=120)
        c.status_rc = first.returncode

    def start_names_full_disk(self, c: Cycle) -> None:
        rc, _, result, _ = self.sage("cluster", "start")
        error = (result.get("hosts", {}).get(c.host) or {}).get("error") or ""
        if rc == 0 or "no space left" not in error or TEMP_DIR not in error:
            c.anomalies.append(f"a start on the full temp dir exited {rc} without naming it: {error[:160]!r}")

    def heal(self, c: Cycle) -> None:
        c.heal_rc, c.heal_s, start, err = self.sage("cluster", "start")
        if c.heal_rc != 0:
            c.anomalies.append(f"start exited {c.heal_rc}: {(err.strip().splitlines() or ['?'])[-1][:160]}")
            rc, _, _, _ = self.sage("cluster", "start")
            if rc == 0:
                c.anomalies.append("the heal needed a second start")
        if left := self.our_playbooks():
            c.anomalies.append(f"ansible-playbook of an earlier run still running after the heal: {left}")
        for name in HOSTS:  # a frozen raylet the heal did not replace: thaw it for the next cycle, and say so
            stopped = [p for p, st in process_states(self.host_pids(name, "raylet")).items() if st in STOPPED_STATES]
            if stopped:
                c.anomalies.append(f"{name}: a stopped raylet survived the heal")
                for pid in stopped:
                    os.kill(pid, signal.SIGCONT)
        rc, _, status, _ = self.sage("cluster", "status")
        c.alive = (status.get("cluster") or {}).get("alive")
        if rc != 0:
            c.anomalies.append(f"status after the heal exited {rc}")
        if c.alive != len(HOSTS):
            c.anomalies.append(f"Ray counts {c.alive} alive node(s) for {len(HOSTS)} hosts after the heal")

    def run_job(self, c: Cycle) -> None:
        proc = subprocess.run(self.argv("job", "submit", "--working-dir", str(self.job_dir), "--", "python",
                                        "every_node.py"), capture_output=True, text=True, env=self.env(),
                              cwd=self.home, timeout=300, stdin=subprocess.DEVNULL)
        ran = next((line.split()[2:] for line in proc.stdout.splitlines() if line.startswith("ran on:")), [])
        c.job = proc.returncode == 0 and sorted(ran) == sorted(HOSTS)
        if not c.job:
            why = (proc.stderr.strip().splitlines() or ["?"])[-1][:200]
            c.anomalies.append(f"the job failed (exit {proc.returncode}, ran on {ran}): {why}")


def table(cycles: list[Cycle]) -> str:
    def med(xs: list[float]) -> str:
        return f"{statistics.median(xs):.1f} s" if xs else "-"

    rows = ["| mode | fault | cycles | status failed and named the host | status time | one start healed | "
            "heal time | workers' raylets kept | anomalies |", "|---|---|---|---|---|---|---|---|---|"]
    for (mode, fault) in sorted({(c.mode, c.fault) for c in cycles}):
        cs = [c for c in cycles if (c.mode, c.fault) == (mode, fault)]
        looked = [c for c in cs if c.named is not None]
        kept = [c for c in cs if c.raylets_kept is not None]
        rows.append(
            f"| {mode} | {fault} | {len(cs)} | "
            + (f"{sum(c.named and c.status_rc != 0 for c in looked)}/{len(looked)}" if looked else "-")
            + f" | {med([c.status_s for c in looked if c.status_s is not None])}"
            + f" | {sum(c.heal_rc == 0 for c in cs)}/{len(cs)} | {med([c.heal_s for c in cs if c.heal_s])}"
            + (f" | {sum(bool(c.raylets_kept) for c in kept)}/{len(kept)}" if kept else " | -")
            + f" | {sum(len(c.anomalies) for c in cs)} |")
    return "\n".join(rows)


FAULTS = [*Soak.FAULTS, *Soak.SAGE_FAULTS]


def plan(cycles: int, seed: int, faults: list[str] | None = None) -> list[str]:
    """CYCLES faults in a random order (seeded: a run can be repeated) from FAULTS or the given ones: each of them
    once where CYCLES allows (a short run of random draws would leave some out), the rest drawn at random."""
    rng = random.Random(seed)
    chosen = faults or FAULTS
    drawn = rng.sample(chosen, min(cycles, len(chosen))) + [rng.choice(chosen) for _ in range(cycles - len(chosen))]
    rng.shuffle(drawn)
    return drawn


def soak(faults: list[str], modes: list[str], seed: int, supervised: bool = False) -> list[Cycle]:
    """The faults in turn on one cluster per mode (a fresh start for each mode, the same rig)."""
    rng = random.Random(seed)
    done: list[Cycle] = []
    with tempfile.TemporaryDirectory(prefix="sage-bench-soak-") as tmp, \
            Rig(HOSTS, root=rig_root("bench-soak"), first_ip=175, systemd=HOSTS if supervised else ()) as rig:
        ensure_env()
        for mode in modes:
            s = Soak(rig, Path(tmp), mode, supervised)
            rc, _, _, err = s.sage("cluster", "start")
            if rc != 0:
                raise RuntimeError(f"the soak's cluster did not start ({mode}): {err[-2000:]}")
            try:
                for n, fault in enumerate(faults, 1):
                    c = s.cycle(n, fault, rng)
                    done.append(c)
                    log(f"{mode} {n:3d} {c.fault:28s} {c.host:8s} status {c.status_rc} "
                        f"{(c.status_s or 0):5.1f}s  heal {c.heal_rc} {(c.heal_s or 0):5.1f}s  alive {c.alive}"
                        + (f"  ANOMALY: {'; '.join(c.anomalies)}" if c.anomalies else ""))
            finally:
                s.sage("cluster", "stop")
                for name in HOSTS:
                    if left := s.ray_left(name):
                        done.append(Cycle(mode, 0, "stop at the end", name,
                                          anomalies=[f"Ray still running after stop: {left}"]))
    return done


def anomalies(cycles: list[Cycle]) -> list[str]:
    return [f"{c.mode} #{c.n} {c.fault} ({c.host}): {a}" for c in cycles for a in c.anomalies]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cycles", type=int, default=20, help="cycles per mode")
    ap.add_argument("--modes", default="none,local", help="head.fault_tolerance modes, comma-separated")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--faults", default="", help="only these faults, comma-separated (default: all)")
    ap.add_argument("--supervised", action="store_true", help="hosts whose PID 1 is systemd, each node a user unit")
    ap.add_argument("--out", default="docs/reliability.md", help="the doc to write the table into ('' = none)")
    ap.add_argument("--json", default="", help="write every cycle here")
    args = ap.parse_args(argv)
    if reason := why_not_available(systemd=args.supervised):
        log(f"cannot run: {reason}")
        return 2
    chosen = [f for f in args.faults.split(",") if f]
    if unknown := set(chosen) - set(FAULTS):
        ap.error(f"unknown fault(s) {sorted(unknown)}; the faults are: {', '.join(FAULTS)}")
    cycles = soak(plan(args.cycles, args.seed, chosen), args.modes.split(","), args.seed, args.supervised)
    text = table(cycles)
    found = anomalies(cycles)
    print(text)
    print("\n".join(["", f"{len(found)} anomal{'y' if len(found) == 1 else 'ies'}", *found]))
    if args.json:
        Path(args.json).write_text(json.dumps([dataclasses.asdict(c) for c in cycles], indent=1))
    if args.out:
        jobs = [c.job for c in cycles if c.job is not None]
        begin, end = markers(args.supervised)
        flags = f"--cycles {args.cycles} --modes {args.modes} --seed {args.seed}" + (
            " --supervised" if args.supervised else "")
        write_doc(Path(args.out), "\n".join([
            begin, f"### Soak{' of supervised hosts' if args.supervised else ''} (`python -m bench.soak {flags}`, "
                   f"{time.strftime('%Y-%m-%d')})", "", text, "",
            f"Jobs on every node: {sum(jobs)}/{len(jobs)}. Anomalies: {len(found)}.",
            *(f"- {a}" for a in found), end]), begin, end)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
