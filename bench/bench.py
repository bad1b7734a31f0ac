"""sage against the floor (plain SSH, as a hand-rolled script would do it), on the test rig.

Run as root from the repository root (the rig needs root: namespaces, /etc/hosts):

    python -m bench.bench                         # 3 rounds, scaling on 4 + 8..128 hosts, writes docs/performance.md
    python -m bench.bench --rounds 5 --hosts 8,16,32 --out /tmp/perf.md
    python -m bench.bench --smoke                 # CI smoke: 1 round, no scaling hosts, writes nothing
    python -m bench.bench --only cluster --systemd --out /tmp/perf-systemd.md
                                                  # the cluster rows with Ray under systemd (sage's units)
    python -m bench.bench --sage-root /tmp/scratch --only cluster --out /tmp/scratch.md
                                                  # measure a modified copy of the tree (PYTHONPATH=/tmp/scratch)

What runs, in one process, on its own rig (root $SAGE_RIG_ROOT-bench, hosts 127.0.0.120+: b-head and
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
    `ssh HOST pgrep -u sage -x raylet`; `sage cluster start --check` vs that pgrep on the head, then on the
    workers in parallel; then one more (untimed) run of each with the controller's peak memory sampled

The floor uses fresh SSH connections every time (`-F none`, no ControlMaster), as a naive script does. sage
runs as `python -m sage_cluster ... --config <bench config> --json` with HOME set to a bench temp dir, so its
SSH control masters (ControlPersist) live from one sage command to the next, as they do for a user typing
commands; the "cold SSH" status row closes them first.

Each figure is the median over the rounds; the ratio is sage / floor. Targets (issue 13, README.md): start
<= 1.05x (the floor waits for the join too), stop <= 1.2x, status <= 1.5x, no-op deploy beyond Ansible's fixed
cost <= 1.5x; on the largest host count (issue 23: 128) every scale row <= 1.5x the floor in wall time, with
sage's controller CPU per host below its 32-host figure.
The run never calls `ray stop` on the controller: every Ray command runs as the rig user inside a rig host.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # `python bench/bench.py` as well as `python -m bench.bench`
    sys.path.insert(0, str(REPO))

from bench.floor import Floor  # noqa: E402
from bench.layout import (CLUSTER, DASHBOARD_PORT, FIRST_IP, HEAD, HEAD_PORT, ROOT, WORKERS,  # noqa: E402
                          change_one_file, make_project, write_config)
from bench.measure import (BenchError, PeakMemory, Sage, Sample, children_cpu, cpu_snapshot,  # noqa: E402
                           expect_results, log, machine_cpu_since, wait_for_quiet)
from bench.phases import newest_run, start_phases  # noqa: E402
from bench.plot import plot_scale  # noqa: E402
from bench.peers import Peer, PeerError, PEERS, ensure_peer_envs, measure  # noqa: E402
from bench.report import (SCALE_KINDS, console_table, machine_info, peers_table, render_block,  # noqa: E402
                          samples_block, table_rows, write_doc)
from tests.rig import DEFAULT_ENV, Rig, ensure_env, why_not_available  # noqa: E402


# ---- the timing loop ---------------------------------------------------------------------------------------------
class SageAsPeer(Peer):
    """sage through the peers' truth checks: the same questions asked of Ray, the same dead worker."""
    name = "sage"

    def __init__(self, rig: Rig, workdir: Path, sage: Sage, cfg: Path):
        super().__init__(rig, workdir)
        self.sage, self.cfg = sage, cfg

    def install(self) -> None:
        pass  # deployed by the cluster section

    def start(self) -> float:
        return self.sage.run(self.cfg, "cluster", "start")[0]

    def status(self) -> tuple[float, int, int]:
        seconds, data = self.sage.run(self.cfg, "cluster", "status", ok_codes=(0, 1))
        return seconds, self.sage.last_rc, (data.get("cluster") or {}).get("alive", 0)

    def stop(self) -> float:
        return self.sage.run(self.cfg, "cluster", "stop")[0]


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
        self.peer_results: list[dict] = []
        self.auth = "?"
        self.scale_sizes: list[int] = []
        self.busy: list[float] = []  # the machine's busy share as each round started (other users' work included)

    def quiet(self) -> None:
        busy = wait_for_quiet(self.args.quiet, self.args.quiet_wait)
        if busy is not None:
            self.busy.append(busy)

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
        self.record_phases("sage", start_phases(newest_run(self.sage.home, "cluster.yml"), HEAD,
                                                *self.sage.last_span))

    def record_phases(self, who: str, phases: dict[str, float]) -> None:
        for key, seconds in phases.items():
            getattr(self.sample(f"phase_{key}"), who).append(seconds)
        log(f"    start phases, {who}: " + ", ".join(f"{k} {v:.2f}s" for k, v in phases.items()))

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
            self.record_phases("floor", self.floor.phases)
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
            if key == "deploy_one":  # once for both sides (each copies into its own directory)
                change_one_file(self.project)
            for who in order:
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
            self.quiet()
            for i, who in enumerate(order):
                if i:
                    self.quiet()
                self.cycle(who, cfg, order)
            self.deploys(cfg, order)

    # -- peers: the same truth checks for sage, the original SAGE CLI and `ray up` ------------------------------
    def peers_section(self) -> None:
        cfg = self.tmp / "cluster.yaml"
        for make in (lambda: SageAsPeer(self.rig, self.tmp / "peer-sage", self.sage, cfg),
                     *(lambda cls=cls, i=i: cls(self.rig, self.tmp / f"peer-{i}") for i, cls in enumerate(PEERS))):
            peer = make()
            if peer.name != "sage":  # as their users run them: without the token sage left (Ray would pick it up)
                for name in peer.nodes:
                    self.rig.ssh(name, ["rm", "-f", f"{self.rig.user_home}/.ray/auth_token"])
            log(f"peers: {peer.name}: start, status, a worker's raylet killed, stop (with Ray's own count)")
            self.quiet()
            try:
                self.peer_results.append(measure(peer, self.rig, settle=self.args.settle, truth=True))
            except (PeerError, BenchError) as e:  # a peer that breaks is a finding, not the end of the run
                self.peer_results.append({"peer": peer.name, "error": str(e).splitlines()[0][:300]})
                peer.cleanup()
            log(f"    {self.peer_results[-1]}")

    # -- scaling section ----------------------------------------------------------------------------------------
    # On sshd-only hosts (no Ray): what grows with the host count is the orchestration, not Ray.
    #   deploy:      no-op `sage cluster deploy` vs parallel rsync
    #   status:      `sage cluster status` (exit 1: every node stopped) vs parallel `ssh HOST pgrep -u sage -x raylet`
    #   start_check: `sage cluster start --check` (the module on the head, then on every worker; nothing to wait
    #                for) vs the same pgrep on the head, then on the workers in parallel
    def scale_sage(self, cfg: Path, kind: str, names: list[str]) -> tuple[float, dict]:
        args, allowed = {"deploy": (["deploy"], {"ok"}), "status": (["status"], {"ok"}),
                         "start_check": (["start", "--check"], {"changed"})}[kind]
        t, data = self.sage.run(cfg, "cluster", *args, ok_codes=(0, 1) if kind == "status" else (0,))
        expect_results(f"sage {' '.join(args)} (scale)", data, names, allowed)
        return t, data

    def scale_floor(self, kind: str, names: list[str]) -> float:
        if kind == "deploy":
            return self.floor.rsync(self.project, names)
        if kind == "status":
            return self.floor.process_check(names)
        return self.floor.process_check(names[:1]) + self.floor.process_check(names[1:])

    def scale_section(self) -> None:
        for n in self.scale_sizes:
            names = [f"b-s{i}" for i in range(1, n + 1)]
            cfg = write_config(self.tmp / f"scale{n}.yaml", self.rig, self.project, names[0], names[1:])
            log(f"scale {n} hosts: first deploy (not timed)")
            _, data = self.sage.run(cfg, "cluster", "deploy")
            expect_results("first deploy", data, names, {"changed", "ok"})
            self.quiet()  # once per size: 128 hosts take minutes a round
            for r in range(self.args.scale_rounds):
                order = ["sage", "floor"] if r % 2 == 0 else ["floor", "sage"]
                log(f"scale {n} hosts, round {r + 1}/{self.args.scale_rounds} (first: {order[0]})")
                for kind, _ in SCALE_KINDS:
                    for who in order:
                        before = cpu_snapshot()
                        if who == "sage":
                            t, data = self.scale_sage(cfg, kind, names)
                            self.record(f"scale_{kind}_{n}", "sage", t, data.get("seconds"))
                        else:
                            self.record(f"scale_{kind}_{n}", "floor", self.scale_floor(kind, names))
                        getattr(self.sample(f"scale_{kind}_{n}"), f"{who}_machine_cpu").append(
                            machine_cpu_since(before))
            log(f"scale {n} hosts: peak controller memory, one more run each (not timed)")
            for kind, _ in SCALE_KINDS:
                s = self.sample(f"scale_{kind}_{n}")
                with PeakMemory(str(self.sage.home)) as mem:
                    self.scale_sage(cfg, kind, names)
                s.sage_mem.append(mem.peak_mib)
                s.forks.append(mem.forks)
                s.forks_setting.append(mem.forks_setting)
                with PeakMemory() as mem:
                    self.scale_floor(kind, names)
                s.floor_mem.append(mem.peak_mib)
                Floor.cpu = 0.0
                log(f"    {f'scale_{kind}_{n}':<22} peak memory sage {s.sage_mem[-1]:.0f} MiB ({s.forks[-1]} "
                    f"forks at once, ANSIBLE_FORKS={s.forks_setting[-1]}), floor {s.floor_mem[-1]:.0f} MiB")


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
    ap.add_argument("--scale-rounds", type=int, help="rounds of the scale rows (default: --rounds; a 128-host "
                    "round takes about 1 min on 2 quiet cores)")
    ap.add_argument("--hosts", default="8,16,32,64,128", help="sshd-only host counts for scaling; 4 is always added "
                    "as the base ('' = none; default %(default)s)")
    ap.add_argument("--out", help="markdown file to write the table into (default docs/performance.md; with "
                    "--smoke: none)")
    ap.add_argument("--smoke", action="store_true", help="1 round, no scaling hosts, no warm-up, nothing written")
    ap.add_argument("--systemd", action="store_true", help="the 4 Ray hosts' PID 1 is systemd: sage runs Ray as its "
                    "user units there (issue 30), the floor plain `ray start` as before")
    ap.add_argument("--only", choices=["cluster", "scale"], help="run one section only")
    ap.add_argument("--settle", type=float, default=5.0, help="seconds to wait after a start (default 5)")
    ap.add_argument("--warmup", action=argparse.BooleanOptionalAction, default=None,
                    help="one untimed start/stop first (default: on, off with --smoke)")
    ap.add_argument("--quiet", type=float, default=0.6, help="before each round and cycle, wait until the "
                    "machine's CPUs are at most this busy (0..1; 1 = never wait; default %(default)s)")
    ap.add_argument("--quiet-wait", type=float, help="but wait at most this many seconds (default 60; "
                    "with --smoke 0)")
    ap.add_argument("--sage-root", help="run sage from this source tree (PYTHONPATH), e.g. a scratch copy "
                    "(default: the tree this bench is in)")
    ap.add_argument("--root", default=ROOT, help="rig directory (default %(default)s)")
    ap.add_argument("--first-ip", type=int, default=FIRST_IP, help="hosts get 127.0.0.(FIRST_IP + i)")
    ap.add_argument("--json", dest="json_out", help="also write every sample as JSON to this file")
    ap.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    ap.add_argument("--peers", action=argparse.BooleanOptionalAction, default=None,
                    help="also run the original SAGE CLI and `ray up` on the same rig, and sage through the same "
                         "truth checks (default: on, off with --smoke; installs the original CLI from PyPI)")
    args = ap.parse_args(argv)
    if args.smoke:
        args.rounds, args.hosts = 1, ""
        args.warmup = False if args.warmup is None else args.warmup
    elif args.out is None:
        args.out = str(REPO / "docs" / "performance.md")
    if args.warmup is None:
        args.warmup = True
    if args.peers is None:
        args.peers = not args.smoke and args.only != "scale"
    if args.quiet_wait is None:
        args.quiet_wait = 0 if args.smoke else 60
    if args.scale_rounds is None:
        args.scale_rounds = args.rounds
    if min(args.rounds, args.scale_rounds) < 1:
        ap.error("--rounds and --scale-rounds must be at least 1")
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
    if args.peers:
        ensure_peer_envs()  # from PyPI: before any network namespace of the rig
    names = [] if args.only == "scale" else list(CLUSTER)
    names += [f"b-s{i}" for i in range(1, max(args.sizes, default=0) + 1)] if args.only != "cluster" else []
    started, t0 = datetime.datetime.now().astimezone(), time.monotonic()
    load_before = loadavg()
    tmp = Path(tempfile.mkdtemp(prefix="sage-bench-"))
    os.chmod(tmp, 0o755)
    rig = Rig(names, root=args.root, first_ip=args.first_ip,
              systemd=[n for n in names if n in CLUSTER] if args.systemd else ())
    # SIGTERM/SIGHUP end the run like Ctrl-C does: through the finally below, which takes the rig down.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)
    bench = None
    try:
        log(f"rig: {len(names)} hosts at {args.root} (127.0.0.{args.first_ip}+)")
        rig.up()
        # The user's own env, as on a real cluster: the rig user installs the bench project into it.
        subprocess.run(["chown", "-R", f"{rig.user}:", DEFAULT_ENV], check=True)
        bench = Bench(args, rig, tmp)
        bench.scale_sizes = args.sizes if args.only != "cluster" else []
        if args.only != "scale":
            bench.cluster_section()
            if args.peers:
                bench.peers_section()
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
    if bench.peer_results:
        log("\n" + peers_table(bench.peer_results))
    log(f"\n{args.rounds} round(s) in {seconds / 60:.1f} min; medians; floor = plain ssh/rsync, fresh connections")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({k: vars(v) for k, v in bench.results.items()}, indent=1) + "\n")
    if args.out:
        out = Path(args.out)
        plot = out.with_name(f"{out.stem}-scale.png")  # next to the doc, linked from it
        plotted = plot_scale(bench.results, bench.scale_sizes, plot)
        write_doc(out, render_block(args, rows, bench.results, machine_info(), started, seconds,
                                    (load_before, load_after), bench.auth, bench.peer_results,
                                    bench.scale_sizes, plot.name if plotted else None, bench.busy))
        log(f"wrote {args.out}")
    missed = [r["what"] for r in rows if str(r["result"]).startswith("FAIL")]
    if missed:
        log(f"targets missed: {'; '.join(missed)}")
    return 1 if (args.strict and missed) else 0


if __name__ == "__main__":
    sys.exit(main())
