"""A short soak (bench/soak.py): every fault of the soak once, on a rig cluster with the head's store
(`fault_tolerance: local`), each healed by one `sage cluster start`, with no anomaly (docs/reliability.md says what
counts as one). The long soak, both modes and random faults, is `python -m bench.soak`."""
import pytest

from bench import soak
from tests.rig import why_not_available

pytestmark = pytest.mark.rig


def test_every_fault_once_ends_with_no_anomaly():
    if reason := why_not_available():
        pytest.skip(reason)
    cycles = soak.soak(soak.FAULTS, ["local"], seed=1)
    print("\n" + soak.table(cycles))
    assert [c.fault for c in cycles if c.n] == soak.FAULTS
    assert not soak.anomalies(cycles), "\n".join(soak.anomalies(cycles))
