"""The drills' detached actor: a named counter on one worker, whose next count tells whether it kept its state
through a fault (test_gcs_ft, test_supervision), or, made restartable, whether it answers after one (test_job's TLS
rotation)."""
from __future__ import annotations

import textwrap

from ansible_collections.sage.cluster.plugins.module_utils import ray_node

from tests.rig.rig import DEFAULT_ENV, Rig

# Runs on the head: the count of a named detached actor on a worker (created there the first time), plus one.
COUNTER = textwrap.dedent("""
    import sys, ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
    ray.init(address=sys.argv[1], namespace="drill", log_to_driver=False)
    restarts = int(sys.argv[3])

    @ray.remote
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
        # Pinned, unless restartable: Ray may restart it only where its node is gone.
        counter = Counter.options(name="counter", lifetime="detached", max_restarts=restarts, scheduling_strategy=
                                  NodeAffinitySchedulingStrategy(node, soft=restarts != 0)).remote()
    print(ray.get(counter.incr.remote(), timeout=60))
""")


def count(rig: Rig, head: str, port: int, worker: str, restarts: int = 0, tls: bool = False) -> int:
    """The counter's next count, run on the head of the cluster at port; the counter is made on worker, with
    max_restarts `restarts`. tls: the driver gets the head's own TLS files (security.tls: on)."""
    certs = ray_node.tls_paths(f"{rig.user_home}/.sage/tls")
    env = ray_node.tls_env(certs["ca"], certs["cert"], certs["key"]) if tls else {}
    run = rig.ssh(head, ["env", "RAY_AUTH_MODE=token", *(f"{k}={v}" for k, v in env.items()),
                         f"{DEFAULT_ENV}/bin/python", "-c", COUNTER, f"{rig.host(head).ip}:{port}",
                         rig.host(worker).ip, str(restarts)], timeout=180)
    return int(run.stdout.strip().splitlines()[-1])
