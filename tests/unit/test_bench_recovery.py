"""bench/recovery.py without a rig: when a fault counts as recovered, and the table."""
from bench.recovery import GCS, recovered, table

IPS = ["127.0.0.230", "127.0.0.231", "127.0.0.232"]


def test_recovered_needs_the_fault_seen_and_each_host_exactly_one_alive_node():
    before = {"a", "b", "c"}
    same = list(zip(["a", "b", "c"], IPS))
    assert not recovered(same, IPS, before)  # Ray has not noticed the fault yet
    assert not recovered([*same, ("d", IPS[1])], IPS, before)  # the new node joined, the old not yet marked dead
    assert not recovered([("a", IPS[0]), ("b", IPS[1])], IPS, before)  # a host without a node
    assert recovered([("a", IPS[0]), ("d", IPS[1]), ("c", IPS[2])], IPS, before)
    assert recovered([*same, ("d", IPS[1])], IPS, before, exactly=False)  # back, the lost one still listed
    assert not recovered(same, IPS, before, exactly=False)


def test_the_table_has_medians_ranges_ratios_and_the_raylets_kept_only_for_the_gcs_row():
    figures = {"a worker's raylet kill -9": {"supervised": [10.0, 12.0, 11.0], "plain": [20.0, 24.0, 22.0]},
               GCS: {"supervised": [15.0], "plain": [30.0]}}
    joined = {"a worker's raylet kill -9": {"supervised": [3.0, 4.0, 5.0], "plain": [9.0, 8.0, 7.0]},
              GCS: {"supervised": [15.0], "plain": [30.0]}}
    rows = table(figures, joined, {"supervised": [True], "plain": [True]}).splitlines()
    assert rows[2] == ("| a worker's raylet kill -9 | 11.0 s (10.0-12.0) | 22.0 s (20.0-24.0) | 0.50x | 4.0 s / 8.0 s "
                       "|  |")
    assert rows[3].endswith("| 0.50x | 15.0 s / 30.0 s | 1 of 1 supervised / 1 of 1 plain |")
