"""`python -m bench.provision`: `sage cluster provision` on bare nodes and again with nothing to do, against the
floor, a plain parallel-ssh script doing the same (a venv from the node's python3, pip install of this machine's
Ray from the node's index; with nothing to do, one ssh per node that reads the env's Ray release).

Its own rig (p-head, p-w1..p-w3 on 127.0.0.150-153, sshd only: provision starts no Ray), each host's pip pointed at
an index served here of the rig's cached wheels (tests/rig/index.py), as a lab's mirror would be. Each from-nothing
run starts from no env and an empty pip cache on every node. Prints the figures and ratios and writes them into
docs/performance.md between its own markers (the rest of the file is bench.bench's). Run as root, from the
repository root, inside tests/rig/isolated like the tests (the rig's wheels are fetched first, outside):

    python3 -c "from tests.rig import ensure_wheels; ensure_wheels()"
    tests/rig/isolated python3 -m bench.provision [--rounds 3] [--out docs/performance.md]
"""
from __future__ import annotations

import argparse
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.measure import Sage, log
from bench.report import write_doc
from tests.rig import Rig, controller_ray_version, ensure_wheels, rig_root, why_not_available
from tests.rig.config import sage_config
from tests.rig.index import serve_index

HOSTS = ["p-head", "p-w1", "p-w2", "p-w3"]
ENV = "/home/sage/envs/ray"  # in each host's own home
BEGIN, END = "<!-- bench.provision: begin -->", "<!-- bench.provision: end -->"


def floor_run(rig: Rig, command: str) -> float:
    """The same shell command on every host at once, over plain ssh; the wall time until the last one is done."""
    def one(name: str) -> None:
        proc = subprocess.run([*rig.ssh_argv(name), "--", command], capture_output=True, text=True, timeout=900,
                              stdin=subprocess.DEVNULL)
        if proc.returncode != 0:
            raise RuntimeError(f"floor on {name}: {proc.stderr[-500:]}")
    started = time.perf_counter()
    with ThreadPoolExecutor(len(HOSTS)) as pool:
        list(pool.map(one, HOSTS))
    return time.perf_counter() - started


def bare(rig: Rig) -> None:
    """No env and an empty pip cache on every node."""
    for name in HOSTS:
        for path in (rig.host(name).home / "envs", rig.host(name).home / ".cache" / "pip"):
            shutil.rmtree(path, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3, help="rounds of the no-op (the from-nothing run is once each)")
    ap.add_argument("--out", default="docs/performance.md", help="the doc to write the table into ('' = none)")
    args = ap.parse_args(argv)
    if reason := why_not_available():
        log(f"cannot run: {reason}")
        return 2
    ray = controller_ray_version()
    wheels = ensure_wheels()
    with tempfile.TemporaryDirectory(prefix="sage-bench-provision-") as tmp, \
            Rig(HOSTS, root=rig_root("bench-provision"), first_ip=150) as rig:
        server = serve_index(wheels, Path(tmp) / "index")
        for name in HOSTS:
            rig.write_pip_conf(name, f"[global]\nindex-url = {server.index_url}\n")
        home = Path(tmp) / "home"
        home.mkdir()
        config = home / "cluster.yaml"
        config.write_text(sage_config(rig, HOSTS[0], HOSTS[1:], head_port=6396, dashboard_port=8296,
                                      comment="bench.provision", ssh={"strict_host_key_checking": "yes",
                                                                      "known_hosts": str(rig.known_hosts_path)},
                                      remote={"python_path": f"{ENV}/bin/python", "ray_command": f"{ENV}/bin/ray",
                                              "conda_env": ""}))
        sage = Sage(home, None)
        install = (f"python3 -m venv {ENV} && {ENV}/bin/pip install -q --disable-pip-version-check "
                   + shlex.quote(f"ray[default]=={ray}"))
        check = f"{ENV}/bin/python -c " + shlex.quote("import importlib.metadata as m; print(m.version('ray'))")

        bare(rig)
        log("floor: provision from nothing ...")
        floor_bare = floor_run(rig, install)
        bare(rig)
        log("sage: provision from nothing ...")
        sage_bare, result = sage.run(config, "cluster", "provision")
        assert all(h["result"] == "changed" for h in result["hosts"].values()), result
        noop: dict[str, list[float]] = {"sage": [], "floor": []}
        for i in range(args.rounds):
            for who in (("sage", "floor") if i % 2 == 0 else ("floor", "sage")):
                if who == "sage":
                    seconds, result = sage.run(config, "cluster", "provision")
                    assert all(h["result"] == "ok" for h in result["hosts"].values()), result
                else:
                    seconds = floor_run(rig, check)
                noop[who].append(seconds)
        server.shutdown()

    sage_noop, floor_noop = statistics.median(noop["sage"]), statistics.median(noop["floor"])
    rows = [("from nothing (venv + ray[default] from the node's index, 4 nodes)", sage_bare, floor_bare),
            (f"nothing to do (median of {args.rounds})", sage_noop, floor_noop)]
    table = "\n".join(["| provision | sage | floor | ratio |", "|---|---|---|---|"]
                      + [f"| {what} | {s:.1f} s | {f:.1f} s | {s / f:.2f}x |" for what, s, f in rows])
    print(table)
    if args.out:
        block = (f"{BEGIN}\n### Provision (`python -m bench.provision`, ray[default]=={ray}, 4 sshd-only nodes, "
                 f"{time.strftime('%Y-%m-%d')})\n\n{table}\n\nThe floor: `python3 -m venv` and `pip install` over "
                 "plain parallel ssh; with nothing to do, one ssh per node reading the env's Ray release. The "
                 "installer is pip in both (uv: provision.py's docstring says why not).\n" + END)
        write_doc(Path(args.out), block, BEGIN, END)
    return 0


if __name__ == "__main__":
    sys.exit(main())
