"""A short soak (bench/soak.py) in CI: two of the faults whose handling the soak itself found wanting (issue 32: a
stopped raylet, sage killed mid-start), once each, on a rig cluster with the head's store (`fault_tolerance:
local`), each healed by one `sage cluster start`, with no anomaly (docs/reliability.md says what counts as one).
The soak's other faults have drills of their own (test_soak_findings_ops: a frozen sshd, a full temp dir;
test_rig_cluster, test_gcs_ft, test_faults, test_concurrency); every fault, both modes and random draws are
`python -m bench.soak`."""
import pytest

from bench import soak
from tests.rig import why_not_available

pytestmark = pytest.mark.rig

FAULTS = ["raylet hung", "sage killed mid-start"]


def test_the_faults_the_soak_found_end_with_no_anomaly():
    if reason := why_not_available():
        pytest.skip(reason)
    assert set(FAULTS) <= set(soak.FAULTS)
    cycles = soak.soak(FAULTS, ["local"], seed=1)
    print("\n" + soak.table(cycles))
    assert [c.fault for c in cycles if c.n] == FAULTS
    assert not soak.anomalies(cycles), "\n".join(soak.anomalies(cycles))
