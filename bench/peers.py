"""The peers in the bench: the original SAGE CLI and Ray's own `ray up`/`ray down`, on the bench's rig.

Each peer is driven the way its users drive it, on the same hosts, Ray env and ports as sage and the floor:

  OriginalSage  isage-tools 0.1.5 (the Ray-era SAGE CLI), in its own venv /opt/sage-peers/isage-tools. Its
                `sage cluster start|status|stop` is `python -m sage.tools.cli.commands.cluster ...` (the top-level
                `sage` entry point imports modules that are not installed). It starts the head with a local
                subprocess, so it runs ON the head host, over ssh, with its own ~/.sage/config.yaml there and a
                key of its own that lets the head reach the workers.
  RayUp         `ray up` / `ray exec ... 'ray status'` / `ray down` from the controller, with the rig's Ray env
                (the same Ray as the cluster's) and the local provider (head_ip, worker_ips, the rig key).

Interface, for bench.py (every figure is wall-clock seconds of the peer's own command):

    ensure_peer_envs()                  # pip, needs PyPI: call before entering tests/rig/isolated
    peer = OriginalSage(rig, workdir)   # or RayUp(rig, workdir); head/workers/ports default to the bench's
    peer.install()                      # idempotent; untimed: venv check, config, keys on the rig hosts
    seconds = peer.start()
    seconds, exit_code, alive_reported = peer.status()
    seconds = peer.stop()
    peer.cleanup()                      # untimed: `ray stop` on every node, whatever the peer left running

and the truth checks, the same for every tool (Ray's view, asked through the head, not the tool's):

    alive_nodes(rig)                    # nodes the head's GCS lists alive (ray.nodes() from a driver on the head)
    wait_alive(rig, want, timeout)      # seconds until that count reaches `want` (None: it did not)
    kill_raylet(rig, "b-w3")            # `pkill -9 -u sage raylet` on that host
    hosts_with_raylet(rig, names)       # hosts where a raylet still runs (after a stop: should be none)

or all of it in one call, a dict of figures (keys ending in _s are seconds):

    measure(peer, rig, settle=5, truth=False)   # a timed round: start, status, stop + the cheap checks
    measure(peer, rig, truth=True)              # once: also the dead-worker and stopped-cluster status

`python -m bench.peers --install` builds the peer venvs; `tests/rig/isolated python3 -m bench.peers --selftest`
brings up a 1+3 rig and runs each peer once.
"""
from __future__ import annotations

import argparse
import functools
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # `python bench/peers.py` as well as `python -m bench.peers`
    sys.path.insert(0, str(REPO))

from tests.rig import DEFAULT_ENV, Rig, installed_ray_version  # noqa: E402
from tests.rig.rig import HOST_PYTHON  # noqa: E402

from bench.layout import DASHBOARD_PORT, HEAD, HEAD_PORT, HEAD_TEMP, WORKER_TEMP, WORKERS  # noqa: E402

PEERS_ROOT = "/opt/sage-peers"
ORIGINAL_ENV = f"{PEERS_ROOT}/isage-tools"
ORIGINAL_SPEC = "isage-tools[cli]==0.1.5"


class PeerError(RuntimeError):
    pass


def ensure_peer_envs(path: str = ORIGINAL_ENV) -> str:
    """The original SAGE CLI's venv (idempotent). It needs no Ray of its own: it runs the `ray_command` of its
    config, which is the rig's Ray. Built from the hosts' interpreter, so the rig user can run it."""
    if not os.access(f"{path}/bin/python", os.X_OK):
        subprocess.run([HOST_PYTHON, "-m", "venv", path], check=True, umask=0o022)
    if installed_ray_version(path, "isage_tools") != ORIGINAL_SPEC.rpartition("==")[2]:  # reads any dist-info
        # -qq: this machine's pip config names index dirs that don't all exist; pip warns once per package.
        subprocess.run([f"{path}/bin/pip", "install", "-qq", ORIGINAL_SPEC], check=True, umask=0o022)
    os.chmod(PEERS_ROOT, 0o755)
    return path


# ---- truth: Ray's own view, through the head ------------------------------------------------------------
def ray_env_prefix(env: str = DEFAULT_ENV) -> str:
    # No RAY_AUTH_MODE: Ray then uses ~/.ray/auth_token when it exists, as the peers' own `ray start` does.
    return f"env RAY_USAGE_STATS_ENABLED=0 PATH={env}/bin:/usr/bin:/bin"


def parse_alive(ray_status: str) -> int:
    """Alive nodes in `ray status` output: the "Active:" and "Idle:" sections (an autoscaled cluster lists an
    unused node as idle), one line per node (" 1 node_<id>") or per node type (" 3 local.cluster.node")."""
    count, inside = 0, False
    for line in ray_status.splitlines():
        if line.strip() in ("Active:", "Idle:"):
            inside = True
        elif inside:
            m = re.match(r"\s+(\d+)\s+\S", line)
            if m:
                count += int(m.group(1))
            elif not line.startswith(" ("):  # " (no active nodes)" keeps the section open; a heading ends it
                inside = False
    return count


# A driver on the head asks the GCS for its node table (`ray status` would be later: with the older autoscaler it
# shows no nodes until the autoscaler's first report).
ALIVE_SNIPPET = ('import sys, ray; ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False); '
                 'print(sum(1 for n in ray.nodes() if n["Alive"]))')


def alive_nodes(rig: Rig, head: str = HEAD, port: int = HEAD_PORT, env: str = DEFAULT_ENV) -> int:
    """How many nodes the head's GCS lists alive (0 when it cannot be asked)."""
    address = f"{rig.host(head).ip}:{port}"
    # sage's cluster (and a peer's, where Ray finds the token file sage left) wants token auth; the others none.
    # The mode that answered last goes first: a refused mode costs the driver about 20 s.
    for mode in sorted(("disabled", "token"), key=lambda m: m != _last_mode[0]):
        p = rig.ssh(head, ["env", "RAY_USAGE_STATS_ENABLED=0", f"RAY_AUTH_MODE={mode}", f"{env}/bin/python", "-c",
                           ALIVE_SNIPPET, address], check=False, timeout=60)
        last = (p.stdout.strip().splitlines() or [""])[-1]
        if p.returncode == 0 and last.isdigit():
            _last_mode[0] = mode
            return int(last)
    return 0


_last_mode = ["disabled"]


def wait_alive(rig: Rig, want: int, timeout: float, head: str = HEAD, port: int = HEAD_PORT,
               env: str = DEFAULT_ENV, fewer: bool = False) -> float | None:
    """Seconds until the head reports `want` nodes alive (fewer=True: fewer than `want`); None at timeout."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        n = alive_nodes(rig, head, port, env)
        if (n < want) if fewer else (n >= want):
            return time.monotonic() - t0
        time.sleep(1)
    return None


def kill_raylet(rig: Rig, name: str) -> None:
    rig.ssh(name, ["pkill", "-9", "-u", rig.user, "raylet"], check=False)


def hosts_with_raylet(rig: Rig, names: list[str]) -> list[str]:
    """Hosts where a raylet runs (zombies, which this sandbox reaps late, are not running)."""
    running = []
    for name in names:
        p = rig.ssh(name, ["ps", "-u", rig.user, "-o", "stat=,comm="], check=False)
        if any(f.split()[1:] == ["raylet"] and not f.split()[0].startswith("Z") for f in p.stdout.splitlines()):
            running.append(name)
    return running


# ---- the peers ------------------------------------------------------------------------------------------
class Peer:
    name = "?"

    def __init__(self, rig: Rig, workdir: str | os.PathLike, head: str = HEAD, workers: list[str] | None = None,
                 env: str = DEFAULT_ENV, head_port: int = HEAD_PORT, dashboard_port: int = DASHBOARD_PORT):
        self.rig = rig
        self.workdir = Path(workdir)
        self.head = head
        self.workers = list(WORKERS if workers is None else workers)
        self.env = env
        self.head_port = head_port
        self.dashboard_port = dashboard_port
        self.last_output = ""  # stdout + stderr of the last timed command, for errors and parsing
        self.workdir.mkdir(parents=True, exist_ok=True)

    @property
    def nodes(self) -> list[str]:
        return [self.head, *self.workers]

    def ip(self, name: str) -> str:
        return self.rig.host(name).ip

    def _shell(self, name: str, script: str, stdin: str | None = None) -> None:
        """A fixed shell snippet on a rig host, as the rig user (setup only, untimed)."""
        p = subprocess.run([*self.rig.ssh_argv(name), "--", script], input=stdin, capture_output=True, text=True,
                           timeout=120)
        if p.returncode != 0:
            raise PeerError(f"{self.name} setup on {name}: {script!r} exited {p.returncode}: {p.stderr[-1500:]}")

    def _timed(self, argv: list[str], what: str, ok_codes: tuple[int, ...] | None = (0,), timeout: float = 600,
               env: dict[str, str] | None = None) -> tuple[float, int]:
        t0 = time.perf_counter()
        p = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True, timeout=timeout, env=env)
        seconds = time.perf_counter() - t0
        self.last_output = p.stdout
        with open(self.workdir / "commands.log", "a") as log:  # every peer command's output, for the post-mortem
            log.write(f"$ {shlex.join(argv)}\n# exit {p.returncode} after {seconds:.2f}s\n{p.stdout}\n")
        if ok_codes is not None and p.returncode not in ok_codes:
            raise PeerError(f"{self.name} {what} exited {p.returncode}:\n{p.stdout[-3000:]}")
        return seconds, p.returncode

    def install(self) -> None:
        raise NotImplementedError

    def start(self) -> float:
        raise NotImplementedError

    def status(self) -> tuple[float, int, int]:
        raise NotImplementedError

    def stop(self) -> float:
        raise NotImplementedError

    def cleanup(self) -> None:
        """Untimed: stop whatever Ray this peer left on the nodes, so the next cycle starts clean."""
        for name in self.nodes:
            self.rig.ssh(name, ["sh", "-c", f"{ray_env_prefix(self.env)} ray stop --force >/dev/null 2>&1; "
                                            "pkill -9 -u \"$(id -un)\" raylet; true"], check=False, timeout=120)


class OriginalSage(Peer):
    """The original SAGE CLI (isage-tools 0.1.5), run on the head host as its users run it."""
    name = "original SAGE CLI"

    # Its worker commands refuse to run without conda (`source .../conda.sh && conda activate <env>`); the rig's
    # Ray env is a venv. This stand-in activates the venv of that name, and does nothing else.
    CONDA_SHIM = ('# stand-in for conda (bench/peers.py): the Ray env is a plain venv\n'
                  'conda() { [ "$1" = activate ] && . "/opt/conda/envs/$2/bin/activate"; }\n')

    def config(self) -> str:
        workers = ",".join(f"{self.ip(w)}:{self.rig.host(w).port}" for w in self.workers)
        ray = f"{self.env}/bin/ray"
        # Hosts by IP: the CLI passes head.host and each worker's host to `ray start --node-ip-address`.
        return f"""\
# Written by bench/peers.py for the original SAGE CLI (isage-tools 0.1.5)
head:
  host: "{self.ip(self.head)}"
  head_port: {self.head_port}
  dashboard_port: {self.dashboard_port}
  dashboard_host: "127.0.0.1"
  temp_dir: "{HEAD_TEMP}"
  log_dir: "/tmp/sage_head_logs"
  ray_command: "{ray}"
  conda_env: "{Path(self.env).name}"
worker:
  bind_host: "localhost"
  temp_dir: "{WORKER_TEMP}"
  log_dir: "/tmp/sage_worker_logs"
workers_ssh_hosts: "{workers}"
ssh:
  user: "{self.rig.user}"
  key_path: "~/.ssh/id_ed25519"
  connect_timeout: 10
remote:
  sage_home: "{self.rig.user_home}"
  python_path: "{self.env}/bin/python"
  ray_command: "{ray}"
  conda_env: "{Path(self.env).name}"
"""

    def install(self) -> None:
        ensure_peer_envs()
        self._shell(self.head, "mkdir -p ~/.sage && cat > ~/.sage/config.yaml", self.config())
        # The head's own key, for its ssh to the workers (the CLI passes -i key_path, no host key checking).
        self._shell(self.head, "test -f ~/.ssh/id_ed25519 || ssh-keygen -q -t ed25519 -N '' -f ~/.ssh/id_ed25519")
        pub = self.rig.ssh(self.head, ["cat", ".ssh/id_ed25519.pub"]).stdout.strip()
        for name in self.nodes:
            self._shell(name, "mkdir -p ~/miniconda3/etc/profile.d && cat > ~/miniconda3/etc/profile.d/conda.sh",
                        self.CONDA_SHIM)
            if name != self.head:
                self._shell(name, 'read -r key; grep -qxF "$key" ~/.ssh/authorized_keys '
                                  '|| echo "$key" >> ~/.ssh/authorized_keys', pub + "\n")

    def _cli(self, command: str) -> list[str]:
        """`sage cluster COMMAND`, run on the head over ssh (one connection, like a user's login)."""
        return [*self.rig.ssh_argv(self.head), "--",
                shlex.join([f"{ORIGINAL_ENV}/bin/python", "-m", "sage.tools.cli.commands.cluster", command])]

    def start(self) -> float:
        return self._timed(self._cli("start"), "cluster start")[0]

    def status(self) -> tuple[float, int, int]:
        seconds, code = self._timed(self._cli("status"), "cluster status", ok_codes=None)
        out = self.last_output
        # What it claims: the head line, and "N/M 个Worker节点正在运行" (N of M workers running).
        head = 1 if "✅ Ray Head节点正在运行" in out else 0
        m = re.search(r"(\d+)/\d+ 个Worker节点正在运行", out)
        return seconds, code, head + (int(m.group(1)) if m else 0)

    def stop(self) -> float:
        return self._timed(self._cli("stop"), "cluster stop")[0]


class RayUp(Peer):
    """Ray's cluster launcher with the local provider, run from the controller with the rig's Ray.

    autoscaler_v2: Ray's default since 2.50 (True); False sets RAY_UP_enable_autoscaler_v2=0, the older one.
    """
    name = "ray up (local provider)"

    def __init__(self, *args, autoscaler_v2: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.autoscaler_v2 = autoscaler_v2
        if not autoscaler_v2:
            self.name = "ray up (local provider, autoscaler v1)"

    @property
    def config_path(self) -> Path:
        return self.workdir / "ray-up.yaml"

    def config(self) -> str:
        # As a user writes it for these hosts: Ray's local defaults, plus what the rig needs (every "host"
        # shares one network, so each node names its own IP; the bench's ports; no usage stats).
        ips = ", ".join(f'"{self.ip(w)}"' for w in self.workers)
        return f"""\
# Written by bench/peers.py: `ray up` with the local provider on the bench's rig
cluster_name: sage-peers
provider:
  type: local
  head_ip: "{self.ip(self.head)}"
  worker_ips: [{ips}]
auth:
  ssh_user: "{self.rig.user}"
  ssh_private_key: "{self.rig.key_path}"
min_workers: {len(self.workers)}
max_workers: {len(self.workers)}
upscaling_speed: 1.0
idle_timeout_minutes: 5
head_start_ray_commands:
  - ray stop
  - >-
    ulimit -c unlimited; ray start --head --node-ip-address={self.ip(self.head)} --port={self.head_port}
    --dashboard-host=127.0.0.1 --dashboard-port={self.dashboard_port} --disable-usage-stats
    --autoscaling-config=~/ray_bootstrap_config.yaml
worker_start_ray_commands:
  - ray stop
  - ray start --address=$RAY_HEAD_IP:{self.head_port} --node-ip-address=$(hostname -i) --disable-usage-stats
"""

    def controller_env(self) -> dict[str, str]:
        # HOME and RAY_TMPDIR in the workdir: the local provider keeps its cluster state (and lock) under the
        # Ray temp dir of the machine running `ray up`; no run should see another's.
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "SAGE_"))}
        env.update(HOME=str(self.workdir / "home"), RAY_TMPDIR=str(self.workdir / "raytmp"),
                   RAY_USAGE_STATS_ENABLED="0", RAY_UP_enable_autoscaler_v2="1" if self.autoscaler_v2 else "0",
                   PATH=f"{self.env}/bin:{env.get('PATH', '/usr/bin:/bin')}")
        return env

    def install(self) -> None:
        for d in ("home", "raytmp"):
            (self.workdir / d).mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self.config())
        # `ray up` and `ray down` run bare `ray ...` through an interactive login shell: the env goes on PATH
        # in ~/.bashrc, where ray's docs put it (appended: non-interactive ssh commands never get that far).
        line = f"export PATH={self.env}/bin:$PATH  # bench/peers.py: ray up"
        for name in self.nodes:
            self._shell(name, 'read -r line; grep -qxF "$line" ~/.bashrc || echo "$line" >> ~/.bashrc', line + "\n")

    def _ray(self, *args: str) -> list[str]:
        return [f"{self.env}/bin/ray", *args]

    def start(self) -> float:
        return self._timed(self._ray("up", "-y", "--no-config-cache", str(self.config_path)), "ray up",
                           env=self.controller_env())[0]

    def status(self) -> tuple[float, int, int]:
        # The launcher has no status command; its docs run `ray status` on the head through `ray exec`.
        seconds, code = self._timed(self._ray("exec", str(self.config_path), "ray status"), "ray exec 'ray status'",
                                    ok_codes=None, env=self.controller_env())
        return seconds, code, parse_alive(self.last_output)

    def stop(self) -> float:
        return self._timed(self._ray("down", "-y", str(self.config_path)), "ray down", env=self.controller_env())[0]


PEERS = [OriginalSage, RayUp]


# ---- selftest ---------------------------------------------------------------------------------------------
def measure(peer: Peer, rig: Rig, settle: float = 5.0, truth: bool = True, join_timeout: float = 90.0) -> dict:
    """One cycle of a peer: install, start, status, stop, cleanup; returns the figures (seconds: *_s).

    truth=False (timed rounds): only the cheap checks, nodes alive right after start and raylets left after
    stop. truth=True adds the slow ones: wait (join_timeout at most) for every node to join, status with a
    worker's raylet killed, and status once the cluster is stopped.
    """
    r: dict = {"peer": peer.name}
    peer.install()
    r["start_s"] = peer.start()
    r["alive_after_start"] = alive_nodes(rig, peer.head, peer.head_port, peer.env)
    if truth:  # 0 when every node was alive as the start returned
        r["all_alive_after_s"] = 0.0 if r["alive_after_start"] >= len(peer.nodes) else wait_alive(
            rig, len(peer.nodes), join_timeout, peer.head, peer.head_port, peer.env)
    time.sleep(settle)
    r["status_s"], r["status_exit"], r["status_alive_reported"] = peer.status()
    if truth:
        r["alive_before_kill"] = before = alive_nodes(rig, peer.head, peer.head_port, peer.env)
        # Kill a worker that runs (a peer may have left one out), and ask for status once Ray itself has seen
        # the node die, so that a tool that asks Ray could know.
        victim = (hosts_with_raylet(rig, peer.workers) or peer.workers)[-1]
        kill_raylet(rig, victim)
        r["killed_raylet_on"] = victim
        r["ray_noticed_dead_s"] = wait_alive(rig, before, 60, peer.head, peer.head_port, peer.env, fewer=True)
        r["dead_status_s"], r["dead_status_exit"], r["dead_status_alive_reported"] = peer.status()
        r["alive_before_stop"] = alive_nodes(rig, peer.head, peer.head_port, peer.env)
    r["stop_s"] = peer.stop()
    time.sleep(3)  # zombies are reaped late here; a raylet still running 3 s after stop was left behind
    r["raylets_after_stop"] = hosts_with_raylet(rig, peer.nodes)
    peer.cleanup()
    if truth:
        r["stopped_status_s"], r["stopped_status_exit"], r["stopped_status_alive_reported"] = peer.status()
    return r


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.peers", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--install", action="store_true", help="build the peers' venvs (needs PyPI)")
    ap.add_argument("--selftest", action="store_true", help="1+3 rig, each peer once, print the figures")
    ap.add_argument("--only", choices=["original", "rayup", "rayup-v1"], help="selftest one peer (rayup-v1: "
                    "ray up with the older autoscaler)")
    ap.add_argument("--root", default="/var/tmp/sage-rig-peers", help="rig directory (default %(default)s)")
    ap.add_argument("--first-ip", type=int, default=120)
    ap.add_argument("--keep", action="store_true", help="keep the work dir (configs, commands.log) and say where")
    args = ap.parse_args(argv)
    if args.install:
        print(f"original SAGE CLI: {ensure_peer_envs()}")
    if not args.selftest:
        return 0
    peers = {"original": [OriginalSage], "rayup": [RayUp],
             "rayup-v1": [functools.partial(RayUp, autoscaler_v2=False)]}.get(args.only, PEERS)
    tmp = Path(tempfile.mkdtemp(prefix="sage-peers-"))
    try:
        with Rig([HEAD, *WORKERS], root=args.root, first_ip=args.first_ip) as rig:
            for cls in peers:
                peer = cls(rig, tmp / f"peer{len(os.listdir(tmp))}")
                print(f"== {peer.name}", flush=True)
                try:
                    for k, v in measure(peer, rig).items():
                        print(f"  {k:<28} {round(v, 2) if isinstance(v, float) else v}", flush=True)
                except (PeerError, subprocess.TimeoutExpired) as e:
                    print(f"  FAILED: {e}\n  last output:\n{peer.last_output[-4000:]}", flush=True)
                    peer.cleanup()
    finally:
        if args.keep:
            print(f"work dir kept: {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
