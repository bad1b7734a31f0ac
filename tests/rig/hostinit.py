"""PID 1 of one rig host: `unshare --mount --uts --pid --fork --mount-proc` runs it.

Usage: hostinit.py NAME HOSTDIR USER_HOME SSHD_CONFIG

Runs with /usr/bin/python3 and only the standard library, so it does not depend on the
controller's virtualenv. It makes this namespace look like its own machine, starts sshd,
reaps every orphan (Ray daemonizes, and sshd as PID 1 would not reap), and exits when sshd
exits or on SIGTERM/SIGINT/SIGHUP: when PID 1 of a PID namespace exits, the kernel kills
every process left in it, which is how a host is "powered off".
"""
import os
import signal
import socket
import subprocess
import sys


def main() -> None:
    name, hostdir, user_home, sshd_config = sys.argv[1:5]
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda *_: os._exit(0))
    socket.sethostname(name)
    mounts = [
        ["mount", "--bind", os.path.join(hostdir, "home"), user_home],
        ["mount", "--bind", os.path.join(hostdir, "tmp"), "/tmp"],
        # Ray keeps its object store in /dev/shm: give each host its own, freed with the namespace.
        ["mount", "-t", "tmpfs", "-o", "mode=1777,nosuid,nodev", "tmpfs", "/dev/shm"],
    ]
    for argv in mounts:
        subprocess.run(argv, check=True)
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege-separation dir
    sshd = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", sshd_config], stdin=subprocess.DEVNULL)
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            os._exit(1)
        if pid == sshd.pid:
            print(f"hostinit {name}: sshd exited with status {status}", file=sys.stderr, flush=True)
            os._exit(1)


if __name__ == "__main__":
    main()
