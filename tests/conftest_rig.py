"""The `rig` fixture: real SSH hosts on this machine (see tests/rig). Import with `from tests.conftest_rig import *`."""
import pytest

from tests.rig import Rig, ensure_env, why_not_available

__all__ = ["rig"]

# sage-w4 runs too, but is meant to stay out of the cluster config until a scale test adds it.
RIG_HOSTS = ["sage-head", "sage-w1", "sage-w2", "sage-w3", "sage-w4"]


def ray_rig(names: list[str], **kwargs):
    """Rig hosts with the Ray env, for a fixture to `yield from`; the test is skipped where no rig can run.
    kwargs go to Rig (a test module's own root and first_ip keep its hosts apart from the others')."""
    reason = why_not_available()
    if reason:
        pytest.skip(reason)
    with Rig(names, **kwargs) as r:  # tears down on failure, Ctrl-C and SIGTERM too
        ensure_env()
        yield r


@pytest.fixture(scope="session")
def rig():
    yield from ray_rig(RIG_HOSTS)
