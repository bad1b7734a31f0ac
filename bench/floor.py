"""The floor: what a hand-rolled script does with plain ssh and rsync, fresh connections every time."""
from __future__ import annotations

import shlex
import subprocess
import time
from pathlib import Path

from bench.layout import (CLUSTER, DASHBOARD_PORT, DEST, ENV, HEAD, HEAD_PORT, HEAD_TEMP, REMOTE_HOME, WORKER_TEMP,
                          WORKERS)
from bench.measure import BenchError, children_cpu
from sage_cluster import source
from tests.rig import Rig


# The join, as a careful script waits for it: on the head, poll Ray's node table (the dashboard's state API, the
# standard library only) every 0.25 s, as sage does, until every node is alive; exit 1 after 60 s.
WAIT_SNIPPET = r"""
import json, sys, time, urllib.request
url, want, token_path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
headers = {"Authorization": "Bearer " + open(token_path).read().strip()} if token_path else {}
deadline = time.monotonic() + 60
while True:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5) as response:
            rows = json.load(response)["data"]["result"]["result"]
        if sum(n["state"] == "ALIVE" for n in rows) >= want:
            break
    except (OSError, ValueError, KeyError):
        pass
    if time.monotonic() > deadline:
        sys.exit(f"fewer than {want} nodes alive after 60 s")
    time.sleep(0.25)
"""


class Floor:
    cpu = 0.0  # controller CPU seconds of the floor's commands since the last record()

    def __init__(self, rig: Rig):
        self.rig = rig
        self.phases: dict[str, float] = {}
        self.use_token(None)

    def use_token(self, token: str | None) -> None:
        """The same Ray auth as sage's nodes: token mode with the token at ~/.ray/auth_token, or none."""
        auth = (f"RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH={REMOTE_HOME}/.ray/auth_token" if token
                else "RAY_AUTH_MODE=disabled")
        self.ray_env = f"env RAY_USAGE_STATS_ENABLED=0 {auth} PATH={ENV}/bin:/usr/bin:/bin"
        self.token_path = f"{REMOTE_HOME}/.ray/auth_token" if token else ""
        if token:  # one-time setup of the script's nodes, not timed
            cmd = "umask 077 && mkdir -p ~/.ray && cat > ~/.ray/auth_token"
            for name in CLUSTER:
                subprocess.run(self.ssh(name, cmd), input=token + "\n", text=True, check=True,
                               capture_output=True, timeout=60)

    def ssh(self, name: str, command: str) -> list[str]:
        return [*self.rig.ssh_argv(name), "--", command]

    @staticmethod
    def parallel(argvs: list[list[str]], ok_codes: tuple[int, ...] = (0,), what: str = "") -> float:
        """Start every command at once (`cmd & cmd & wait`), time until the last one ends."""
        t0 = time.perf_counter()
        cpu0 = children_cpu()
        procs = [subprocess.Popen(a, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
                 for a in argvs]
        outs = [p.communicate(timeout=600)[0] for p in procs]
        seconds = time.perf_counter() - t0
        Floor.cpu += children_cpu() - cpu0
        bad = [(a, p.returncode, o.decode(errors="replace")[-1500:]) for a, p, o in zip(argvs, procs, outs)
               if p.returncode not in ok_codes]
        if bad:
            a, rc, out = bad[0]
            raise BenchError(f"floor {what}: {shlex.join(a)} exited {rc}\n{out}")
        return seconds

    def ray_start(self, name: str, head: bool) -> list[str]:
        ip = self.rig.host(name).ip
        temp = HEAD_TEMP if head else WORKER_TEMP
        argv = [f"{ENV}/bin/ray", "start", f"--node-ip-address={ip}", f"--temp-dir={temp}", "--disable-usage-stats"]
        if head:
            argv += ["--head", f"--port={HEAD_PORT}", "--dashboard-host=127.0.0.1",
                     f"--dashboard-port={DASHBOARD_PORT}"]
        else:
            argv += [f"--address={self.rig.host(HEAD).ip}:{HEAD_PORT}"]
        return self.ssh(name, f"mkdir -p {temp} && {self.ray_env} {shlex.join(argv)} "
                              "</dev/null >>/tmp/bench-floor.log 2>&1")

    def start(self) -> float:
        """The head's `ray start`, then every worker's in parallel, then the wait until the head lists all alive
        (sage's promise: a careful script keeps it too). The phases' seconds are left in self.phases."""
        url = f"http://127.0.0.1:{DASHBOARD_PORT}/api/v0/nodes?limit=10000"
        wait = shlex.join([f"{ENV}/bin/python", "-I", "-S", "-c", WAIT_SNIPPET, url, str(len(CLUSTER)),
                           self.token_path])
        self.phases = {"head": self.parallel([self.ray_start(HEAD, head=True)], what="head ray start"),
                       "workers": self.parallel([self.ray_start(w, head=False) for w in WORKERS],
                                                what="worker ray start"),
                       "wait": self.parallel([self.ssh(HEAD, wait)], what="wait for the join")}
        return sum(self.phases.values())

    def stop(self) -> float:
        cmd = f"{self.ray_env} {ENV}/bin/ray stop </dev/null >>/tmp/bench-floor.log 2>&1"
        return self.parallel([self.ssh(n, cmd) for n in CLUSTER], what="ray stop")

    def status(self) -> float:
        head_ip = self.rig.host(HEAD).ip
        cmd = f"{self.ray_env} {ENV}/bin/ray status --address={head_ip}:{HEAD_PORT}"
        return self.parallel([self.ssh(HEAD, cmd)], what="ray status")

    def rsync(self, project: Path, names: list[str]) -> float:
        rsh = shlex.join(["ssh", *self.rig.ssh_options()])
        argvs = [["rsync", "-az", *[f"--exclude={e}" for e in source.EXCLUDES], "-e", rsh, f"{project}/",
                  # A directory of its own: a copy behind sage's back would make sage's next deploy a real one.
                  f"{self.rig.user}@{self.rig.host(n).ip}:{DEST}-floor/"] for n in names]
        return self.parallel(argvs, what="rsync")

    def process_check(self, names: list[str]) -> float:
        # pgrep: 0 = raylet runs, 1 = it does not; both are answers.
        return self.parallel([self.ssh(n, "pgrep -u sage -x raylet") for n in names], ok_codes=(0, 1),
                             what="pgrep raylet")
