"""`python -m bench.tls`: issue 31's cost of mutual TLS. The same rig cluster (1 head + 2 workers, plain hosts) with
`security.tls: off` and `on`, in one run, the order flipped every round; per mode: `sage cluster start` from
stopped, 10,000 tiny tasks across the cluster, 100 actor calls one after another (the actor on a worker, the
driver on the head), and a 1 GiB object made on one worker and read by a task on the other (Ray's object transfer
between two nodes). The driver runs on the head, with the head's own TLS files when TLS is on.

Prints the table and writes it into docs/performance.md between its own markers. Run as root from the repository
root, inside tests/rig/isolated:

    tests/rig/isolated python3 -m bench.tls [--rounds 3] [--out docs/performance.md]
"""
from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import textwrap
from pathlib import Path

import yaml

import sage_cluster  # noqa: F401  (puts the collection sage.cluster on sys.path)
from ansible_collections.sage.cluster.plugins.module_utils import ray_node

from bench.measure import BenchError, Sage, log
from bench.report import rig_bench_options, span, write_rig_section
from tests.rig import DEFAULT_ENV, Rig, ensure_env, rig_root, why_not_available
from tests.rig.config import sage_config

HEAD, WORKERS = "t-head", ["t-w1", "t-w2"]
ALL = [HEAD, *WORKERS]
PORT, DASHBOARD_PORT = 6395, 8295
BEGIN, END = "<!-- bench.tls: begin -->", "<!-- bench.tls: end -->"
MODES = ("off", "on")

# Runs on the head: argv[1] the GCS address, argv[2:4] the two workers' IPs. Prints one JSON line of seconds.
WORKLOAD = textwrap.dedent("""
    import json, sys, time, ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy as On
    ray.init(address=sys.argv[1], log_to_driver=False)
    node = {n["NodeManagerAddress"]: n["NodeID"] for n in ray.nodes() if n["Alive"]}
    w1, w2 = (On(node[ip], soft=False) for ip in sys.argv[2:4])

    @ray.remote(num_cpus=0)
    def tiny():
        return 1

    @ray.remote(num_cpus=0)
    class Echo:
        def ping(self, x):
            return x

    @ray.remote(num_cpus=0)
    def gib():
        return b"\\0" * (1 << 30)

    @ray.remote(num_cpus=0)
    def size(blob):
        return len(blob)

    ray.get([tiny.remote() for _ in range(200)])  # warm: the workers' Python processes up
    out = {}
    t = time.perf_counter()
    assert sum(ray.get([tiny.remote() for _ in range(10000)])) == 10000
    out["tasks"] = time.perf_counter() - t
    echo = Echo.options(scheduling_strategy=w1).remote()
    ray.get(echo.ping.remote(0))
    t = time.perf_counter()
    for i in range(100):
        assert ray.get(echo.ping.remote(i)) == i
    out["actor"] = time.perf_counter() - t
    blob = gib.options(scheduling_strategy=w1).remote()
    ray.wait([blob], fetch_local=False)
    t = time.perf_counter()
    assert ray.get(size.options(scheduling_strategy=w2).remote(blob)) == 1 << 30
    out["object"] = time.perf_counter() - t
    print(json.dumps(out))
""")
ROWS = [("start", "`sage cluster start` from stopped (3 nodes)"),
        ("tasks", "10,000 tiny tasks across the cluster"),
        ("actor", "100 actor calls, one after another (driver on the head, actor on a worker)"),
        ("object", "a 1 GiB object made on one worker, read by a task on the other")]


def workload(rig: Rig, tls: bool) -> dict[str, float]:
    certs = ray_node.tls_paths(f"{rig.user_home}/.sage/tls")
    env = ray_node.tls_env(certs["ca"], certs["cert"], certs["key"]) if tls else {"RAY_USE_TLS": "0"}
    run = rig.ssh(HEAD, ["env", "RAY_AUTH_MODE=token", f"RAY_AUTH_TOKEN_PATH={rig.user_home}/.ray/auth_token",
                         *(f"{k}={v}" for k, v in env.items()), f"{DEFAULT_ENV}/bin/python", "-c", WORKLOAD,
                         f"{rig.host(HEAD).ip}:{PORT}", *(rig.host(w).ip for w in WORKERS)], timeout=600)
    line = next((ln for ln in reversed(run.stdout.splitlines()) if ln.startswith("{")), None)
    if line is None:
        raise BenchError(f"the workload printed no figures:\n{run.stdout[-2000:]}\n{run.stderr[-3000:]}")
    return json.loads(line)


def table(figures: dict[str, dict[str, list[float]]]) -> str:
    rows = ["| 1 head + 2 workers | TLS off | TLS on | on / off |", "|---|---|---|---|"]
    for key, label in ROWS:
        off, on = figures[key]["off"], figures[key]["on"]
        rows.append(f"| {label} | {span(off, digits=2)} | {span(on, digits=2)} | "
                    f"{statistics.median(on) / statistics.median(off):.2f}x |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    args = rig_bench_options(__doc__, argv)
    load0 = os.getloadavg()[0]
    if reason := why_not_available():
        log(f"cannot run: {reason}")
        return 2
    figures: dict[str, dict[str, list[float]]] = {key: {m: [] for m in MODES} for key, _ in ROWS}
    with tempfile.TemporaryDirectory(prefix="sage-bench-tls-") as tmp, \
            Rig(ALL, root=rig_root("bench-tls"), first_ip=185) as rig:
        ensure_env()
        home = Path(tmp)
        config = home / "cluster.yaml"
        text = sage_config(rig, HEAD, WORKERS, head_port=PORT, dashboard_port=DASHBOARD_PORT, comment="bench.tls",
                           ssh={"strict_host_key_checking": "yes", "known_hosts": str(rig.known_hosts_path)})
        sage = Sage(home, None)
        try:
            for i in range(args.rounds):
                for mode in (MODES if i % 2 == 0 else reversed(MODES)):
                    values = yaml.safe_load(text)
                    values["security"] = {"tls": mode}
                    config.write_text(yaml.safe_dump(values, sort_keys=False))
                    sage.run(config, "cluster", "stop")
                    seconds, _ = sage.run(config, "cluster", "start")
                    _, data = sage.run(config, "cluster", "status", ok_codes=(0, 1))
                    if data["cluster"].get("alive") != len(ALL):
                        raise BenchError(f"TLS {mode}: not every node alive after the start: {data['cluster']}")
                    figures["start"][mode].append(seconds)
                    for key, value in workload(rig, mode == "on").items():
                        figures[key][mode].append(value)
                    log(f"round {i + 1}, TLS {mode}: start {seconds:.1f} s, "
                        + ", ".join(f"{k} {figures[k][mode][-1]:.2f} s" for k, _ in ROWS[1:]))
        finally:
            sage.run(config, "cluster", "stop", ok_codes=(0, 1))
    out = table(figures)
    print(out)
    note = ("`python -m bench.tls`: the same rig cluster with `security.tls: off` and `on` (every Ray connection "
            "mutual TLS, sage's CA), the modes taking turns. The driver runs on the head (with the head's own "
            "certificate when on); its Python workers are warmed before the timings. The rig's hosts share one "
            "machine's loopback, so these figures show TLS's CPU cost, not a network's.")
    write_rig_section(args, BEGIN, END, "Mutual TLS on against off", out, note, load0,
                      "by the 3 hosts and the controller")
    return 0


if __name__ == "__main__":
    sys.exit(main())
