"""The scale curve as a PNG: sage / floor in wall time, and controller CPU per host, against the host count.

matplotlib is the optional extra `bench` (pip install -e '.[bench]'), imported only here, only when plotting.
"""
from __future__ import annotations

from pathlib import Path

from bench.measure import Sample, log, median
from bench.report import SCALE_KINDS, SCALE_RATIO_TARGET, cpu_per_host


def plot_scale(results: dict[str, Sample], sizes: list[int], path: Path) -> bool:
    """Write the plot to `path`; False (and one line said) when matplotlib is missing or there is no curve."""
    try:
        import matplotlib
        matplotlib.use("Agg")  # a file, no display
        import matplotlib.pyplot as plt
    except ImportError:
        log("plot: skipped, matplotlib is not installed (pip install -e '.[bench]')")
        return False
    if len(sizes) < 2:
        return False
    fig, (wall, cpu) = plt.subplots(1, 2, figsize=(11, 4.2))
    for kind, label in SCALE_KINDS:
        points = [(n, results[f"scale_{kind}_{n}"]) for n in sizes if results.get(f"scale_{kind}_{n}")]
        ns = [n for n, _ in points]
        wall.plot(ns, [median(s.sage) / median(s.floor) for _, s in points], marker="o", label=label)
        line, = cpu.plot(ns, [cpu_per_host(results, kind, n) for n in ns], marker="o", label=f"sage: {label}")
        cpu.plot(ns, [median(s.floor_cpu) / n for n, s in points], marker="x", linestyle="--",
                 color=line.get_color(), alpha=0.6, label=f"floor: {kind.replace('_', ' ')}")
    wall.axhline(SCALE_RATIO_TARGET, color="grey", linestyle=":", label=f"target: {SCALE_RATIO_TARGET:g}x")
    for ax, title, unit in ((wall, "wall time, sage / floor", "x the floor"),
                            (cpu, "controller CPU per host", "CPU seconds per host")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(sizes, [str(n) for n in sizes])
        ax.set_xlabel("sshd-only hosts")
        ax.set_ylabel(unit)
        ax.set_title(title)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    log(f"plot: wrote {path}")
    return True
