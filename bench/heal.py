"""`python -m bench.heal`: how long a cluster with `head.fault_tolerance: local` is down when its head's GCS dies:
from `kill -9` of the head's `gcs_server` to `sage cluster start` returning with every node alive again (the
head healed on its store, the workers' raylets kept), and the `sage cluster status` between them that names the
head (exit 1). The same for every Ray process of the head killed (a head reboot, as far as Ray can tell).

Its own rig (h-head, h-w1, h-w2 on 127.0.0.160-162, Ray on 6398). Prints the figures and writes them into
docs/performance.md between its own markers. Run as root from the repository root, inside tests/rig/isolated:

    tests/rig/isolated python3 -m bench.heal [--rounds 3] [--out docs/performance.md]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench.measure import BenchError, Sage, log, raylet_pids
from bench.report import write_doc
from tests.rig import Rig, ensure_env, rig_root, why_not_available
from tests.rig.config import sage_config

HEAD, WORKERS = "h-head", ["h-w1", "h-w2"]
BEGIN, END = "<!-- bench.heal: begin -->", "<!-- bench.heal: end -->"
KILLS = {"gcs_server killed": ["pkill", "-9", "-u", "sage", "-x", "gcs_server"],
         "every Ray process of the head killed": ["pkill", "-9", "-u", "sage", "-f", "ray"]}


def one_heal(rig: Rig, sage: Sage, config: Path, kill: list[str]) -> tuple[float, float]:
    """(status seconds, kill-to-healed seconds), after checking that the heal kept the workers."""
    before = raylet_pids(rig, WORKERS)
    rig.ssh(HEAD, kill, check=False)
    killed = time.perf_counter()
    status_s, status = sage.run(config, "cluster", "status", ok_codes=(1,))
    if status["hosts"][HEAD]["result"] != "failed" and status["hosts"][HEAD].get("running"):
        raise BenchError(f"status did not name the head: {status['hosts'][HEAD]}")
    _, start = sage.run(config, "cluster", "start")
    healed = time.perf_counter() - killed
    if "healed" not in (start["hosts"][HEAD].get("note") or ""):
        raise BenchError(f"the head was not healed: {start['hosts'][HEAD]}")
    if raylet_pids(rig, WORKERS) != before:
        raise BenchError("a worker's raylet was replaced: the heal did not keep the workers")
    return status_s, healed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default="docs/performance.md", help="the doc to write the table into ('' = none)")
    args = ap.parse_args(argv)
    if reason := why_not_available():
        log(f"cannot run: {reason}")
        return 2
    figures: dict[str, list[tuple[float, float]]] = {what: [] for what in KILLS}
    with tempfile.TemporaryDirectory(prefix="sage-bench-heal-") as tmp, \
            Rig([HEAD, *WORKERS], root=rig_root("bench-heal"), first_ip=160) as rig:
        ensure_env()
        home = Path(tmp)
        config = home / "cluster.yaml"
        config.write_text(sage_config(
            rig, HEAD, WORKERS, head_port=6398, dashboard_port=8298, comment="bench.heal",
            head={"fault_tolerance": "local", "temp_dir": "/tmp/ray_heal"}, worker={"temp_dir": "/tmp/ray_heal"},
            ssh={"strict_host_key_checking": "yes", "known_hosts": str(rig.known_hosts_path)}))
        sage = Sage(home, None)
        sage.run(config, "cluster", "start")
        try:
            for i in range(args.rounds):
                for what, kill in KILLS.items():
                    figures[what].append(one_heal(rig, sage, config, kill))
                    log(f"round {i + 1}, {what}: status {figures[what][-1][0]:.1f} s, "
                        f"healed {figures[what][-1][1]:.1f} s")
        finally:
            sage.run(config, "cluster", "stop", ok_codes=(0, 1))
    rows = [f"| {what} | {statistics.median(s for s, _ in xs):.1f} s | {statistics.median(h for _, h in xs):.1f} s "
            f"({min(h for _, h in xs):.1f}-{max(h for _, h in xs):.1f}) |" for what, xs in figures.items()]
    table = "\n".join(["| the head's loss (fault_tolerance: local, 1 head + 2 workers) | status (exit 1, the head "
                       "named) | killed to every node alive again (`sage cluster start` returned) |",
                       "|---|---|---|", *rows])
    print(table)
    if args.out:
        write_doc(Path(args.out), f"{BEGIN}\n### Healing a lost head (`python -m bench.heal`, median of "
                                  f"{args.rounds}, {time.strftime('%Y-%m-%d')})\n\n{table}\n\nEvery heal kept "
                                  "the workers' raylets (the same processes).\n" + END, BEGIN, END)
    return 0


if __name__ == "__main__":
    sys.exit(main())
