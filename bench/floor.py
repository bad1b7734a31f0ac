"""The floor: what a hand-rolled script does with plain ssh and rsync, fresh connections every time."""
from __future__ import annotations

import shlex
import subprocess
import time
from pathlib import Path

from bench.layout import (CLUSTER, DASHBOARD_PORT, DEST, ENV, HEAD, HEAD_PORT, HEAD_TEMP, REMOTE_HOME, WORKER_TEMP,
                          WORKERS)
from bench.measure import BenchError, children_cpu
from sage_cluster.source import EXCLUDES
from tests.rig import Rig


class Floor:
    cpu = 0.0  # controller CPU seconds of the floor's commands since the last record()

    def __init__(self, rig: Rig):
        self.rig = rig
        self.use_token(None)

    def use_token(self, token: str | None) -> None:
        """The same Ray auth as sage's nodes: token mode with the token at ~/.ray/auth_token, or none."""
        auth = (f"RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH={REMOTE_HOME}/.ray/auth_token" if token
                else "RAY_AUTH_MODE=disabled")
        self.ray_env = f"env RAY_USAGE_STATS_ENABLED=0 {auth} PATH={ENV}/bin:/usr/bin:/bin"
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
            argv += ["--head", f"--port={HEAD_PORT}", "--dashboard-host=127.0.0.1", f"--dashboard-port={DASHBOARD_PORT}"]
        else:
            argv += [f"--address={self.rig.host(HEAD).ip}:{HEAD_PORT}"]
        return self.ssh(name, f"mkdir -p {temp} && {self.ray_env} {shlex.join(argv)} </dev/null >>/tmp/bench-floor.log 2>&1")

    def start(self) -> float:
        """The head's `ray start`, then every worker's in parallel."""
        t0 = time.perf_counter()
        self.parallel([self.ray_start(HEAD, head=True)], what="head ray start")
        self.parallel([self.ray_start(w, head=False) for w in WORKERS], what="worker ray start")
        return time.perf_counter() - t0

    def stop(self) -> float:
        cmd = f"{self.ray_env} {ENV}/bin/ray stop </dev/null >>/tmp/bench-floor.log 2>&1"
        return self.parallel([self.ssh(n, cmd) for n in CLUSTER], what="ray stop")

    def status(self) -> float:
        head_ip = self.rig.host(HEAD).ip
        cmd = f"{self.ray_env} {ENV}/bin/ray status --address={head_ip}:{HEAD_PORT}"
        return self.parallel([self.ssh(HEAD, cmd)], what="ray status")

    def rsync(self, project: Path, names: list[str]) -> float:
        rsh = shlex.join(["ssh", *self.rig.ssh_options()])
        argvs = [["rsync", "-az", *[f"--exclude={e}" for e in EXCLUDES], "-e", rsh, f"{project}/",
                  # A directory of its own: a copy behind sage's back would make sage's next deploy a real one.
                  f"{self.rig.user}@{self.rig.host(n).ip}:{DEST}-floor/"] for n in names]
        return self.parallel(argvs, what="rsync")

    def process_check(self, names: list[str]) -> float:
        # pgrep: 0 = raylet runs, 1 = it does not; both are answers.
        return self.parallel([self.ssh(n, "pgrep -u sage -x raylet") for n in names], ok_codes=(0, 1),
                             what="pgrep raylet")
