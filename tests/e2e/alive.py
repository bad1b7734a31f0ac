"""What the supervision drills read between a fault and its check: `sage cluster status --json`, and the wait until
each given host has its one alive Ray node (test_supervision, test_supervision_system)."""
from __future__ import annotations

import time

from tests.conftest import Sage


def status(s: Sage) -> dict:
    return s.json("cluster", "status", timeout=120)[1]


def all_alive(s: Sage, seconds: float, hosts: list[str]) -> float:
    """Seconds until each of hosts has its one alive Ray node and every other host none (status's own verdict on
    hosts' rows), failing after `seconds`."""
    began = time.monotonic()
    while True:
        data = status(s)
        rows = {n: (h["result"], h.get("error")) for n, h in data["hosts"].items()}
        up = {n for n, h in data["hosts"].items() if h["result"] == "ok" and h.get("running")}
        if up == set(hosts) and data["cluster"].get("alive") == len(hosts):
            return time.monotonic() - began
        assert time.monotonic() - began < seconds, rows
        time.sleep(1)
