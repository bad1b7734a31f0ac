"""`python -m bench.recovery`: issue 30's time to recover. Per fault, seconds from the fault to Ray counting every
node alive again (each configured host exactly one alive node, the verdict of `sage cluster status --json`), two
ways on the same rig: supervised (`remote.supervisor: auto`, every node a user unit sage-ray.service; no sage command
after the fault) and today's best case (`remote.supervisor: none`, plain processes; a person runs
`sage cluster start` at once, until it returns 0). Between the two, the config is rewritten and one untimed
`sage cluster start` moves the nodes between the units and plain processes.

The wait polls the head's dashboard state API from the controller (the rig shares its network; ~0.05 s a query,
every 0.25 s): the fault counts as seen once the alive node IDs differ from those before it (every fault here
replaces at least one raylet: the head's, with its GCS), and the recovery as reached once each host has exactly
one alive node; one `sage cluster status --json` then confirms it (if it does not yet, status is polled and its
own verdict sets the time). A reboot's or a power cut's clock starts before the rig kills the hosts, so it
includes their boot up to SSH, the same in both ways.

Its own rig (r-head, r-w1, r-w2 on 127.0.0.230-232, all three systemd hosts; Ray on 6393/8293;
head.fault_tolerance: local). Prints the table and writes it into docs/performance.md between its own markers.
Run as root from the repository root, inside tests/rig/isolated:

    tests/rig/isolated python3 -m bench.recovery [--rounds 3] [--out docs/performance.md]
"""
from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import yaml

from bench.measure import BenchError, Sage, log, raylet_pids
from bench.report import rig_bench_options, span, write_rig_section
from tests.rig import Rig, ensure_env, rig_root, why_not_available
from tests.rig.config import sage_config

HEAD, WORKERS = "r-head", ["r-w1", "r-w2"]
ALL = [HEAD, *WORKERS]
PORT, DASHBOARD_PORT = 6393, 8293
BEGIN, END = "<!-- bench.recovery: begin -->", "<!-- bench.recovery: end -->"
MODES = {"supervised": "auto", "plain": "none"}  # remote.supervisor of each way
TIMEOUT = 300.0
GCS = "the head's gcs_server kill -9 (fault_tolerance: local)"


def faults(rig: Rig) -> dict[str, Callable[[], object]]:
    user = rig.user
    return {
        "a worker's raylet kill -9": lambda: rig.ssh(WORKERS[0], ["pkill", "-9", "-u", user, "-x", "raylet"]),
        "every Ray process of a worker kill -9": lambda: rig.ssh(WORKERS[1], ["pkill", "-9", "-u", user, "-f", "ray"],
                                                                check=False),
        GCS: lambda: rig.ssh(HEAD, ["pkill", "-9", "-u", user, "-x", "gcs_server"]),
        "a worker rebooted": lambda: rig.reboot(WORKERS[0]),
        "power cut (every host)": rig.power_cut,
    }


def alive_nodes(token: str) -> list[tuple[str, str]] | None:
    """(node id, node IP) of every alive node, from the head's state API; None when it does not answer."""
    request = urllib.request.Request(f"http://127.0.0.1:{DASHBOARD_PORT}/api/v0/nodes?limit=10000")
    if token:
        request.add_header("Authorization", "Bearer " + token)
    try:
        with urllib.request.urlopen(request, timeout=2) as response:
            rows = json.loads(response.read())["data"]["result"]["result"]
        return [(n["node_id"], n["node_ip"]) for n in rows if n["state"] == "ALIVE"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def recovered(nodes: list[tuple[str, str]], ips: list[str], before: set[str], exactly: bool = True) -> bool:
    """The fault seen (the alive node IDs changed) and each host back with exactly one alive node (exactly=False:
    at least one, e.g. the new one while Ray still lists the lost one alive)."""
    count = Counter(ip for _, ip in nodes)
    return {i for i, _ in nodes} != before and (count == Counter(ips) if exactly else set(count) >= set(ips))


def status_all_alive(sage: Sage, config: Path) -> bool:
    """status's own verdict (as tests/e2e/test_supervision.py's all_alive): each host one alive node, no other."""
    _, data = sage.run(config, "cluster", "status", ok_codes=(0, 1))
    up = {n for n, h in data["hosts"].items() if h["result"] == "ok" and h.get("running")}
    ok = up == set(ALL) and data["cluster"].get("alive") == len(ALL)
    restarts = {n: ((h.get("supervisor") or {}).get("unit") or {}).get("restarts") for n, h in data["hosts"].items()}
    if ok and any(v is not None for v in restarts.values()):
        log(f"  the units' restarts so far (a slow row: more than one?): {restarts}")
    return ok


def wait_recovered(sage: Sage, config: Path, token: str, ips: list[str], before: set[str], fault_at: float
                   ) -> tuple[float, float]:
    """Seconds from fault_at until every node is alive again (see the module's docstring), and until each host
    had an alive node again (the lost one possibly still listed)."""
    joined = None
    while not ((nodes := alive_nodes(token)) is not None and recovered(nodes, ips, before)):
        if joined is None and nodes is not None and recovered(nodes, ips, before, exactly=False):
            joined = time.perf_counter() - fault_at
        if time.perf_counter() - fault_at > TIMEOUT:
            raise BenchError(f"not every node alive {TIMEOUT:.0f} s after the fault: {nodes}")
        time.sleep(0.25)
    took = time.perf_counter() - fault_at
    while not status_all_alive(sage, config):
        if time.perf_counter() - fault_at > TIMEOUT:
            raise BenchError(f"status does not count every node alive {TIMEOUT:.0f} s after the fault")
        time.sleep(1)
        took = time.perf_counter() - fault_at
    return took, took if joined is None else joined


def one_fault(rig: Rig, sage: Sage, config: Path, token: str, mode: str, fault: Callable[[], object]
              ) -> tuple[float, float, bool]:
    """(seconds to recover, seconds until each host had a node again, the workers' raylets kept)."""
    ips = [rig.host(n).ip for n in ALL]
    before_nodes = alive_nodes(token)
    if before_nodes is None or not recovered(before_nodes, ips, set()):
        raise BenchError(f"not every node alive before the fault: {before_nodes}")
    before, pids = {i for i, _ in before_nodes}, raylet_pids(rig, WORKERS)
    fault_at = time.perf_counter()
    fault()
    if mode == "plain":
        for _ in range(5):  # the person runs start again until it returns 0
            sage.run(config, "cluster", "start", ok_codes=(0, 1))
            if sage.last_rc == 0:
                break
        else:
            raise BenchError("`sage cluster start` failed 5 times after the fault")
    took, joined = wait_recovered(sage, config, token, ips, before, fault_at)
    return took, joined, raylet_pids(rig, WORKERS) == pids


def switch(sage: Sage, config: Path, text: str, mode: str) -> None:
    """Rewrite the config for mode and run one start (untimed); check that status says each node's supervisor."""
    values = yaml.safe_load(text)
    values.setdefault("remote", {})["supervisor"] = MODES[mode]
    config.write_text(yaml.safe_dump(values, sort_keys=False))
    sage.run(config, "cluster", "start")
    _, data = sage.run(config, "cluster", "status", ok_codes=(0, 1))
    kinds = {n: h.get("supervisor", {}).get("kind") for n, h in data["hosts"].items()}
    want = "systemd" if mode == "supervised" else "none"
    if set(kinds.values()) != {want}:
        raise BenchError(f"after the switch to {mode}, status says supervisors {kinds}")


def table(figures: dict[str, dict[str, list[float]]], joined: dict[str, dict[str, list[float]]],
          kept: dict[str, list[bool]]) -> str:
    """figures[fault][mode]: seconds per round; joined the same for "each host had a node again"; kept[mode]: the
    GCS fault's "workers' raylets kept" per round."""
    rows = ["| fault (1 head + 2 workers, all systemd hosts) | supervised (no sage command) | plain + `sage cluster "
            "start` at once | supervised / plain | each host a node again, the lost one maybe still listed "
            "(supervised / plain) | the workers' raylets kept |", "|---|---|---|---|---|---|"]
    for fault, by_mode in figures.items():
        sup, plain = by_mode["supervised"], by_mode["plain"]
        ratio = f"{statistics.median(sup) / statistics.median(plain):.2f}x" if sup and plain else "-"
        back = " / ".join(f"{statistics.median(xs):.1f} s" if xs else "-" for xs in joined[fault].values())
        keep = " / ".join(f"{sum(kept[m])} of {len(kept[m])} {m}" for m in MODES) if fault == GCS else ""
        rows.append(f"| {fault} | {span(sup) if sup else '-'} | {span(plain) if plain else '-'} | {ratio} | {back} "
                    f"| {keep} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    args = rig_bench_options(__doc__, argv)
    load0 = os.getloadavg()[0]
    if reason := why_not_available(systemd=True):
        log(f"cannot run: {reason}")
        return 2
    figures: dict[str, dict[str, list[float]]] = {}
    joined: dict[str, dict[str, list[float]]] = {}
    kept: dict[str, list[bool]] = {m: [] for m in MODES}
    with tempfile.TemporaryDirectory(prefix="sage-bench-recovery-") as tmp, \
            Rig(ALL, root=rig_root("recovery"), first_ip=230, systemd=ALL) as rig:
        ensure_env()
        home = Path(tmp)
        config = home / "cluster.yaml"
        text = sage_config(rig, HEAD, WORKERS, head_port=PORT, dashboard_port=DASHBOARD_PORT, comment="bench.recovery",
                           head={"fault_tolerance": "local"},
                           ssh={"strict_host_key_checking": "yes", "known_hosts": str(rig.known_hosts_path)})
        sage = Sage(home, None)
        kinds = faults(rig)
        figures = {f: {m: [] for m in MODES} for f in kinds}
        joined = {f: {m: [] for m in MODES} for f in kinds}
        mode = "supervised"
        try:
            switch(sage, config, text, mode)
            token = (home / ".sage" / "ray_auth_token").read_text().strip()
            for i in range(args.rounds):
                for way in (MODES if i % 2 == 0 else reversed(MODES)):  # both ways, the order flipped every round
                    if way != mode:
                        switch(sage, config, text, way)
                        mode = way
                    for what, fault in kinds.items():
                        took, back, same = one_fault(rig, sage, config, token, mode, fault)
                        figures[what][mode].append(took)
                        joined[what][mode].append(back)
                        if what == GCS:
                            kept[mode].append(same)
                        log(f"round {i + 1}, {mode}, {what}: {took:.1f} s (each host a node: {back:.1f} s)"
                            + (f", the workers' raylets kept: {same}" if what == GCS else ""))
        finally:
            sage.run(config, "cluster", "stop", ok_codes=(0, 1))
    out = table(figures, joined, kept)
    print(out)
    note = ("`python -m bench.recovery`. From the fault to each host's one node alive again as Ray's node table "
            "and then `sage cluster status` say (a reboot's and a power cut's clock includes the hosts' boot). "
            "Supervised: `remote.supervisor: auto`, each node the user unit sage-ray.service, no sage command "
            "after the fault. Plain: `remote.supervisor: none`, `sage cluster start` run at once until it "
            "returned 0: a best case, with no time for a person to notice. The column before last: until every "
            "host had an alive node again, while Ray may still list the lost one alive (it drops it only once its "
            "health checks fail; plain: Ray is first asked when start has returned, so it is the same as the "
            "total).")
    write_rig_section(args, BEGIN, END, "Time to recover", out, note, load0, "with other work")
    return 0


if __name__ == "__main__":
    sys.exit(main())
