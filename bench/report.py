"""The report: the table of medians and targets, every sample, the machine; written into docs/performance.md."""
from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import os
import platform
import re
import shlex
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.layout import ENV, REPO
from bench.measure import Sample, median
from bench.phases import FLOOR_PHASES, PHASES
from tests.rig import installed_ray_version

BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"

# (key, label, target ratio or None); the target applies to sage / floor.
CLUSTER_ROWS = [
    ("start", "cluster start (1 head + 3 workers)", 1.05),
    ("stop", "cluster stop", 1.2),
    ("status", "cluster status", 1.5),
    ("status_cold", "cluster status, cold SSH (no control master yet)", None),
    ("deploy_noop", "deploy, nothing changed (4 hosts; an installed pip project)", None),
    ("deploy_one", "deploy, one file of the installed project changed (4 hosts; no new install)", None),
    ("ansible_empty", "for reference: ansible-playbook with one empty play, no hosts (vs the no-op deploy floor)",
     None),
]
# Rows whose "floor" column borrows another row's floor.
FLOOR_OF = {"status_cold": "status", "ansible_empty": "deploy_noop"}
# The scale rows on sshd-only hosts (bench.py's scale_section); issue 23's targets for the largest host count:
# sage <= 1.5x the floor in wall time, and sage's controller CPU per host below its figure on 32 hosts.
SCALE_KINDS = [("deploy", "deploy, nothing changed"), ("status", "cluster status (no Ray on the hosts)"),
               ("start_check", "cluster start --check (no Ray: the orchestration alone)")]
SCALE_RATIO_TARGET = 1.5
CPU_PER_HOST_FROM = 32
# Issue 13's decision: what a no-op deploy adds beyond Ansible's own fixed cost (the same round's empty
# ansible-playbook), against the parallel-rsync floor.
BEYOND_ANSIBLE_TARGET = 1.5


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
    noop, empty = results.get("deploy_noop"), results.get("ansible_empty")
    if noop and empty and noop.sage and len(empty.sage) == len(noop.sage):
        sm, fm = median([d - e for d, e in zip(noop.sage, empty.sage)]), median(noop.floor)
        ratio = sm / fm if fm else None
        rows.append(dict(key="deploy_noop_beyond", floor_key="deploy_noop", n=len(noop.sage), sage=sm, floor=fm,
                         ratio=ratio, what="deploy, nothing changed, beyond Ansible's fixed cost (each round: "
                                           "no-op deploy minus the empty ansible-playbook)",
                         target=f"<= {BEYOND_ANSIBLE_TARGET:g}x floor",
                         result="" if ratio is None else ("pass" if ratio <= BEYOND_ANSIBLE_TARGET else "FAIL")))
    base = sizes[0] if sizes else None
    largest = sizes[-1] if sizes else None
    for kind, label in SCALE_KINDS:
        first = results.get(f"scale_{kind}_{base}")
        for n in sizes:
            s = results.get(f"scale_{kind}_{n}")
            if not s or not s.sage:
                continue
            sm, fm = median(s.sage), median(s.floor)
            ratio = sm / fm if fm else None
            growth = sm / median(first.sage) if first and first.sage and n != base else None
            verdict = ""
            if n == largest and n > CPU_PER_HOST_FROM and ratio is not None:
                # CPU per host falling from 32 hosts on: Ansible's per-host cost does not grow with the fleet.
                here, there = cpu_per_host(results, kind, n), cpu_per_host(results, kind, CPU_PER_HOST_FROM)
                falls = here is not None and there is not None and here < there
                cpu = (f"; CPU/host {there:.3f} → {here:.3f} s" if here is not None and there is not None
                       else f"; no {CPU_PER_HOST_FROM}-host figure")
                verdict = (f"{'pass' if ratio <= SCALE_RATIO_TARGET and falls else 'FAIL'} "
                           f"({ratio:.2f}x{cpu})")
            rows.append(dict(key=f"scale_{kind}_{n}", what=f"{label}, {n} sshd-only hosts", sage=sm, floor=fm,
                             ratio=ratio, growth=growth, n=len(s.sage),
                             target=(f"<= {SCALE_RATIO_TARGET:g}x floor, CPU/host below {CPU_PER_HOST_FROM} hosts'"
                                     if verdict else "-"), result=verdict))
    return rows


def cpu_per_host(results: dict[str, Sample], kind: str, n: int) -> float | None:
    s = results.get(f"scale_{kind}_{n}")
    return median(s.sage_cpu) / n if s and s.sage_cpu else None


def scale_table(results: dict[str, Sample], sizes: list[int]) -> str:
    """Per host count and command: wall time, controller CPU (per host too) and peak memory, sage beside the floor."""
    lines = ["| hosts | command | sage | floor | sage / floor | controller CPU sage / floor | CPU per host, sage | "
             "all CPU sage / floor (the rig's hosts too) | peak memory sage / floor | "
             "Ansible forks seen at once, of ANSIBLE_FORKS |",
             "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for n in sizes:
        for kind, _ in SCALE_KINDS:
            s = results.get(f"scale_{kind}_{n}")
            if not s or not s.sage:
                continue
            sm, fm = median(s.sage), median(s.floor)
            mem = (f"{median(s.sage_mem):.0f} / {median(s.floor_mem):.0f} MiB" if s.sage_mem and s.floor_mem else "-")
            lines.append(f"| {n} | {kind.replace('_', ' ')} | {fmt(sm)} | {fmt(fm)} | "
                         f"{fmt(sm / fm if fm else None, '×')} | "
                         f"{fmt(median(s.sage_cpu))} / {fmt(median(s.floor_cpu))} | "
                         f"{cpu_per_host(results, kind, n):.3f}s | "
                         f"{fmt(median(s.sage_machine_cpu))} / {fmt(median(s.floor_machine_cpu))} | {mem} | "
                         + (f"{max(s.forks)} of {s.forks_setting[-1] or '?'} |" if s.forks else "- |"))
    return "\n".join(lines) if len(lines) > 2 else ""


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


def phases_table(results: dict[str, Sample]) -> str:
    """sage's start cut into its phases (medians over the rounds) beside the floor's head, workers and wait."""
    lines = ["| phase of the start | sage (median) | floor (median) | sage − floor |", "|---|---:|---:|---:|"]
    extra = {}
    for key, short, detail in PHASES:
        s = results.get(f"phase_{key}")
        if not s or not s.sage:
            continue
        sm = median(s.sage)
        fm = median(s.floor) if key in FLOOR_PHASES else None
        extra[key] = sm - (fm or 0.0)
        lines.append(f"| {short} ({detail}) | {fmt(sm)} | {fmt(fm)} | {extra[key]:+.2f}s |")
    start = results.get("start")
    if not extra or not start or not start.floor:
        return ""
    lines.append(f"| the whole start (median of the totals) | {fmt(median(start.sage))} | {fmt(median(start.floor))} "
                 f"| {median(start.sage) - median(start.floor):+.2f}s |")
    top = sorted(extra.items(), key=lambda kv: -kv[1])[:3]
    shorts = {key: short for key, short, _ in PHASES}
    return ("\n".join(lines) + "\n\nsage's extra seconds, the largest first: "
            + "; ".join(f"{v:+.2f} s {shorts[k]}" for k, v in top) + ".")


def samples_block(results: dict[str, Sample]) -> str:
    lines = []
    for key, s in results.items():
        sage = " ".join(f"{x:.2f}" for x in s.sage)
        floor = " ".join(f"{x:.2f}" for x in s.floor)
        inner = " ".join(f"{x:.2f}" for x in s.inner)
        cpu = f"{median(s.sage_cpu) or 0:.2f}/{median(s.floor_cpu) or 0:.2f}"
        mem = f"  peak MiB sage/floor {median(s.sage_mem):.0f}/{median(s.floor_mem):.0f}" if s.sage_mem else ""
        lines.append(f"{key:<14} sage [{sage}]  floor [{floor}]" + (f"  sage's playbook [{inner}]" if inner else "")
                     + f"  controller CPU s, sage/floor median {cpu}{mem}")
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


# (key in peers.measure()'s result, column title)
PEER_COLUMNS = [("start_s", "start"), ("alive_after_start", "alive when start returned"),
                ("all_alive_after_s", "all 4 alive after"), ("status_s", "status"),
                ("status_exit", "status exit"), ("dead_status_exit", "status exit, a worker's raylet dead"),
                ("dead_status_alive_reported", "nodes it then claims alive"), ("stop_s", "stop"),
                ("raylets_after_stop", "raylets left 3 s after stop"),
                ("stopped_status_exit", "status exit, cluster stopped")]


def _peer_cell(key: str, value) -> str:
    if value is None:
        return "never" if key == "all_alive_after_s" else "-"
    if key.endswith("_s"):
        return f"{value:.1f}s"
    if isinstance(value, list):
        return ", ".join(value) or "none"
    return str(value)


def peers_table(results: list[dict]) -> str:
    """sage and its peers side by side: seconds, and what Ray itself said against what each tool claimed."""
    lines = ["| tool | " + " | ".join(title for _, title in PEER_COLUMNS) + " |",
             "|---|" + "---|" * len(PEER_COLUMNS)]
    for r in results:
        cells = ([f"failed: {r['error']}"] + [""] * (len(PEER_COLUMNS) - 1) if "error" in r
                 else [_peer_cell(k, r.get(k)) for k, _ in PEER_COLUMNS])
        lines.append(f"| {r['peer']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def rounds_run(args: argparse.Namespace) -> str:
    """How many rounds of what ran: a section that did not run has no count."""
    cluster = f"{args.rounds} round(s)" if args.only != "scale" else ""
    scale = f"{args.scale_rounds} round(s) of the scale rows" if args.sizes and args.only != "cluster" else ""
    return " and ".join(filter(None, [cluster, scale]))


def render_block(args: argparse.Namespace, rows: list[dict], results: dict[str, Sample], info: dict[str, str],
                 started: datetime.datetime, seconds: float, loads: tuple[str, str], auth: str,
                 peers: list[dict] | None = None, sizes: list[int] | None = None, plot: str | None = None,
                 busy: list[float] | None = None) -> str:
    cmd = "python -m bench.bench " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    peers_md = ("\nPeers on the same rig, once each after the rounds (bench/peers.py; \"alive\" is Ray's own "
                "count, from the GCS\nnode table on the head, not the tool's; the dead worker is a `pkill -9 raylet`, "
                "and status is asked once Ray\nitself counts the node dead):\n\n" + peers_table(peers) + "\n\n"
                ) if peers else ""
    phases = phases_table(results)
    phases_md = ("\nWhere the start's seconds go (bench/phases.py: sage's phases from its run's job_events, "
                 "each from the end of the one before,\nso they add up to the command; the floor's from its own three "
                 "steps):\n\n"
                 + phases + "\n") if phases else ""
    scale = scale_table(results, sizes or [])
    scale_md = ("\nThe scale rows in full (sshd-only hosts, no Ray; controller CPU = the command and its children; "
                "peak memory = the summed PSS\nof the command's processes and of sage's SSH control masters, from one "
                "more run each, sampled every 0.2 s;\nforks = the most Ansible workers seen at once):\n\n" + scale
                + "\n"
                + (f"\n![sage / floor and CPU per host against the host count]({plot})\n" if plot else "")
                ) if scale else ""
    load = (f" The machine's CPUs (2 cores, shared with other users' work) were {100 * median(busy):.0f} % busy "
            "(median; "
            f"{100 * max(busy):.0f} % at most) as each of {len(busy)} rounds (cluster, peers, scale sizes) started, "
            f"after waiting up to "
            f"{args.quiet_wait:.0f} s each for at most {100 * args.quiet:.0f} %.") if busy else ""
    where = f" sage from {args.sage_root}." if args.sage_root else ""
    summary = (f"{seconds / 60:.1f} min in all; load average {loads[0]} before, {loads[1]} after; Ray auth {auth} for "
               f"sage and the floor alike.{load}{where}")
    machine = "\n".join(f"- {k}: {v}" for k, v in info.items())
    return f"""{BEGIN}
## Latest run

`{cmd.strip()}`: {started:%Y-%m-%d %H:%M %Z}, {rounds_run(args)},
{summary}

{markdown_table(rows)}
{phases_md}{scale_md}{peers_md}Machine:

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


def write_doc(path: Path, block: str, begin: str = BEGIN, end: str = END) -> None:
    """The block (its markers begin and end included) in place of the doc's own, or added at its end."""
    text = path.read_text() if path.exists() else DOC_SKELETON
    if begin in text and end in text:
        text = text[:text.index(begin)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def rig_bench_options(doc: str, argv: list[str] | None) -> argparse.Namespace:
    """--rounds, --out and --note: what the one-rig benches (bench.recovery, bench.tls) take."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default="docs/performance.md", help="the doc to write the table into ('' = none)")
    ap.add_argument("--note", default="", help="a line on the machine (e.g. how busy it was) for the doc")
    return ap.parse_args(argv)


def span(xs: list[float], unit: str = " s", digits: int = 1) -> str:
    """The median and the range: "4.2 s (3.9-5.0)"."""
    return f"{statistics.median(xs):.{digits}f}{unit} ({min(xs):.{digits}f}-{max(xs):.{digits}f})"


def write_rig_section(args: argparse.Namespace, begin: str, end: str, heading: str, table: str, note: str,
                      load0: float, shared_by: str) -> None:
    """A one-rig bench's table, what it measured and the machine, in place of its own block of args.out."""
    if not args.out:
        return
    rounds = f"median and range of {args.rounds} round" + ("s" if args.rounds > 1 else "")
    machine = (f"The machine: {os.cpu_count()} cores shared {shared_by} (load average {load0:.1f} at the start, "
               f"{os.getloadavg()[0]:.1f} at the end). {args.note}").strip()
    write_doc(Path(args.out), f"{begin}\n### {heading}\n\n{rounds}, {time.strftime('%Y-%m-%d')}:\n\n{table}\n\n"
                              f"{note} {machine}\n{end}", begin, end)
