"""The drills' detached actor: a named counter pinned to one worker, whose next count tells whether it kept its
state through a fault (test_gcs_ft, test_supervision)."""
from __future__ import annotations

import textwrap

from tests.rig.rig import DEFAULT_ENV, Rig

# Runs on the head: the count of a named detached actor on a worker (created there the first time), plus one.
COUNTER = textwrap.dedent("""
    import sys, ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
    ray.init(address=sys.argv[1], namespace="drill", log_to_driver=False)

    @ray.remote(max_restarts=0)
    class Counter:
        def __init__(self):
            self.n = 0

        def incr(self):
            self.n += 1
            return self.n

    try:
        counter = ray.get_actor("counter")
    except ValueError:
        node = next(n["NodeID"] for n in ray.nodes() if n["Alive"] and n["NodeManagerAddress"] == sys.argv[2])
        counter = Counter.options(name="counter", lifetime="detached", scheduling_strategy=
                                  NodeAffinitySchedulingStrategy(node, soft=False)).remote()
    print(ray.get(counter.incr.remote(), timeout=60))
""")


def count(rig: Rig, head: str, port: int, worker: str) -> int:
    """The counter's next count, run on the head of the cluster at port; the counter lives on worker."""
    run = rig.ssh(head, ["env", "RAY_AUTH_MODE=token", f"{DEFAULT_ENV}/bin/python", "-c", COUNTER,
                         f"{rig.host(head).ip}:{port}", rig.host(worker).ip], timeout=180)
    return int(run.stdout.strip().splitlines()[-1])
