"""The `rig` fixture: real SSH hosts on this machine (see tests/rig). Import with `from tests.conftest_rig import *`."""
import pytest

from tests.rig import Rig, ensure_env, why_not_available

__all__ = ["rig"]

# sage-w4 runs too, but is meant to stay out of the cluster config until a scale test adds it.
RIG_HOSTS = ["sage-head", "sage-w1", "sage-w2", "sage-w3", "sage-w4"]


@pytest.fixture(scope="session")
def rig():
    reason = why_not_available()
    if reason:
        pytest.skip(reason)
    with Rig(RIG_HOSTS) as r:  # tears down on failure, Ctrl-C and SIGTERM too
        ensure_env()
        yield r
