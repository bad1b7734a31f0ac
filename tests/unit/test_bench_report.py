"""bench/report.py and bench/plot.py without a rig: the scale verdicts, the scale table, the plot or its skip."""
import argparse
import sys

import pytest

from bench.measure import Sample
from bench.plot import plot_scale
from bench import report
from bench.report import scale_table, table_rows

SIZES = [4, 32, 128]


def results(wall_128: float, cpu_128: float) -> dict[str, Sample]:
    out = {}
    for kind in ("deploy", "status", "start_check"):
        out[f"scale_{kind}_4"] = Sample(sage=[1.0], floor=[0.5], sage_cpu=[1.2], floor_cpu=[0.3])
        out[f"scale_{kind}_32"] = Sample(sage=[4.0], floor=[3.0], sage_cpu=[4.8], floor_cpu=[2.0],
                                         sage_mem=[150.0], floor_mem=[20.0], forks=[8], forks_setting=["32"],
                                         sage_machine_cpu=[7.5], floor_machine_cpu=[3.5])
        out[f"scale_{kind}_128"] = Sample(sage=[wall_128], floor=[10.0], sage_cpu=[cpu_128], floor_cpu=[8.0])
    return out


def verdicts(res: dict[str, Sample]) -> dict[str, str]:
    return {r["key"]: r["result"] for r in table_rows(res, SIZES) if r["result"]}


def test_the_largest_size_passes_within_the_ratio_and_with_cpu_per_host_falling():
    got = verdicts(results(wall_128=14.0, cpu_128=12.8))  # 1.4x; CPU/host 0.15 -> 0.10 s
    assert set(got) == {"scale_deploy_128", "scale_status_128", "scale_start_check_128"}
    assert all(v.startswith("pass") for v in got.values())


def test_a_ratio_over_the_target_or_cpu_per_host_growing_fails():
    assert verdicts(results(wall_128=16.0, cpu_128=12.8))["scale_status_128"].startswith("FAIL")
    assert verdicts(results(wall_128=14.0, cpu_128=25.6))["scale_status_128"].startswith("FAIL")  # 0.2 s/host


def test_scale_table_has_machine_cpu_memory_and_forks_where_measured():
    table = scale_table(results(14.0, 12.8), SIZES)
    assert ("| 32 | status | 4.00s | 3.00s | 1.33× | 4.80s / 2.00s | 0.150s | 7.50s / 3.50s | 150 / 20 MiB | 8 of 32 |"
            in table)
    assert "| 4 | status | 1.00s | 0.50s | 2.00× | 1.20s / 0.30s | 0.300s | - / - | - | - |" in table  # not measured
    assert "| 128 | start check |" in table


def test_plot_is_written_or_skipped_with_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if not installed
    assert plot_scale(results(14.0, 12.8), SIZES, tmp_path / "p.png") is False
    assert capsys.readouterr().out.count("\n") == 1
    assert not (tmp_path / "p.png").exists()
    monkeypatch.undo()
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return
    assert plot_scale(results(14.0, 12.8), SIZES, tmp_path / "p.png") is True
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(("only", "sizes", "said"), [
    (None, [4, 128], "3 round(s) and 1 round(s) of the scale rows"),
    ("scale", [4, 128], "1 round(s) of the scale rows"),
    ("cluster", [], "3 round(s)"),
    (None, [], "3 round(s)"),  # --smoke: no scale hosts
])
def test_the_header_counts_only_the_rounds_that_ran(only, sizes, said):
    args = argparse.Namespace(only=only, sizes=sizes, rounds=3, scale_rounds=1)
    assert report.rounds_run(args) == said
