"""PID 1 of one rig host: `unshare --mount --uts [--ipc] --pid --fork --mount-proc` runs it.

Usage: hostinit.py NAME HOSTDIR USER_HOME sshd SSHD_CONFIG     (a plain host)
       hostinit.py NAME HOSTDIR USER_HOME systemd CGROUP        (a host whose PID 1 is systemd)

Runs with /usr/bin/python3 and only the standard library, so it does not depend on the
controller's virtualenv. Both kinds bind the host's home at USER_HOME and its tmp at /tmp, and get
a /dev/shm of their own (Ray keeps its object store there).

A plain host: this script stays PID 1, starts sshd, reaps every orphan (Ray daemonizes, and sshd
as PID 1 would not reap), and exits when sshd exits or on SIGTERM/SIGINT/SIGHUP: when PID 1 of a
PID namespace exits, the kernel kills every process left in it, which is how a host is "powered off".

A systemd host: this script builds a machine around systemd, then execs it as PID 1. systemd
acts on whatever it sees, and most of what it sees is shared with this machine, so everything
it may act on is made the host's own first (a boot on the machine's own /tmp once deleted every
file in it): its own cgroup subtree and cgroup namespace, the machine's sysfs bound read-only, /proc/sys
read-only, its own /dev, /run, /tmp, /var/tmp, and per-host directories bound over the /etc and
/var paths its units and its root write (HOSTDIR/etc-systemd-system, var-lib-systemd, journal,
sudoers.d, etc-tmpfiles.d, and the files hostname and machine-id). It runs only the units of
HOSTDIR/units (SYSTEMD_UNIT_PATH replaces the unit search path: none of the machine's units, no
generators) and of /etc/systemd/system (the host's own), boots sage-rig.target, and may not load
kernel modules nor set the clock. Its own messages go to its journal (journalctl), as there is no
console.
"""
import ctypes
import os
import signal
import socket
import subprocess
import sys

CLONE_NEWCGROUP = 0x02000000
CGROUP_FS = "/sys/fs/cgroup"
HOSTDIR_INSIDE = "/run/rig"  # where a systemd host sees its HOSTDIR
# /etc and /var paths of the machine that a systemd host gets its own of: HOSTDIR/<name> is bound there.
SYSTEMD_BINDS = {"etc-systemd-system": "/etc/systemd/system", "var-lib-systemd": "/var/lib/systemd",
                 "journal": "/var/log/journal", "hostname": "/etc/hostname", "machine-id": "/etc/machine-id",
                 "var-tmp": "/var/tmp", "sudoers.d": "/etc/sudoers.d", "etc-tmpfiles.d": "/etc/tmpfiles.d"}
# Character devices of a systemd host's own /dev (major, minor).
DEVICES = {"null": (1, 3), "zero": (1, 5), "full": (1, 7), "random": (1, 8), "urandom": (1, 9), "tty": (5, 0)}


def main() -> None:
    name, hostdir, user_home, kind, arg = sys.argv[1:6]
    if kind == "systemd":
        boot_systemd(name, hostdir, user_home, arg)
    else:
        run_sshd(name, hostdir, user_home, arg)


def mount(*argv: str) -> None:
    subprocess.run(["mount", *argv], check=True)


def mount_host_dirs(hostdir: str, user_home: str) -> None:
    mount("--bind", os.path.join(hostdir, "home"), user_home)
    mount("--bind", os.path.join(hostdir, "tmp"), "/tmp")


def run_sshd(name: str, hostdir: str, user_home: str, sshd_config: str) -> None:
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda *_: os._exit(0))
    socket.sethostname(name)
    mount_host_dirs(hostdir, user_home)
    mount("-t", "tmpfs", "-o", "mode=1777,nosuid,nodev", "tmpfs", "/dev/shm")
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


def cgroup_hierarchies() -> list[str]:
    """The machine's cgroup hierarchies systemd uses: v2 alone, or (hybrid, legacy) v1's name=systemd and v2's
    "unified" beside it if mounted."""
    if os.path.exists(os.path.join(CGROUP_FS, "cgroup.procs")):
        return [CGROUP_FS]
    return [d for d in (f"{CGROUP_FS}/systemd", f"{CGROUP_FS}/unified")
            if os.path.exists(os.path.join(d, "cgroup.procs"))]


def own_cgroups(cgroup: str) -> None:
    """Move into CGROUP (a path under each cgroup hierarchy systemd uses) and make it the root of a cgroup
    namespace: systemd then builds its tree there, not at the machine's root where every host's
    system.slice/ssh.service (and user@1000.service, the same user on every host) would be one cgroup."""
    hierarchies = cgroup_hierarchies()
    for root in hierarchies:
        path = os.path.join(root, cgroup)
        os.makedirs(path, exist_ok=True)
        with open(os.path.join(path, "cgroup.procs"), "w") as f:
            f.write("0")  # this process
    if ctypes.CDLL(None, use_errno=True).unshare(CLONE_NEWCGROUP) != 0:
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWCGROUP)")
    # The machine's sysfs bound alone (none of its submounts: the cgroup mounts go on top) and read-only, so no
    # write reaches the shared kernel's /sys. A bind, not a fresh sysfs: some kernels refuse a read-only sysfs
    # while the network namespace's is mounted read-write ("sysfs already mounted on /sys", CI's machine).
    mount("--bind", "/sys", "/sys")
    mount("-o", "remount,bind,ro,nosuid,nodev,noexec", "/sys")
    if hierarchies == [CGROUP_FS]:
        mount("-t", "cgroup2", "-o", "nosuid,nodev,noexec", "cgroup2", CGROUP_FS)
        return
    mount("-t", "tmpfs", "-o", "mode=755,nosuid,nodev,noexec", "tmpfs", CGROUP_FS)
    for root in hierarchies:
        os.mkdir(root)
        if root.endswith("/unified"):
            mount("-t", "cgroup2", "-o", "nosuid,nodev,noexec", "cgroup2", root)
        else:
            mount("-t", "cgroup", "-o", "none,name=systemd,nosuid,nodev,noexec", "cgroup", root)


def own_dev() -> None:
    """A /dev of the host's own: systemd's sockets and logind's seats may not create or change the machine's."""
    mount("-t", "tmpfs", "-o", "mode=755,nosuid", "tmpfs", "/dev")
    for node, (major, minor) in DEVICES.items():
        os.mknod(f"/dev/{node}", 0o666 | 0o020000, os.makedev(major, minor))
        os.chmod(f"/dev/{node}", 0o666)
    os.mkdir("/dev/pts")
    mount("-t", "devpts", "-o", "newinstance,ptmxmode=0666,mode=0620,gid=5,nosuid,noexec", "devpts", "/dev/pts")
    os.symlink("pts/ptmx", "/dev/ptmx")
    os.mkdir("/dev/shm")
    mount("-t", "tmpfs", "-o", "mode=1777,nosuid,nodev", "tmpfs", "/dev/shm")
    for i, std in enumerate(("stdin", "stdout", "stderr")):
        os.symlink(f"/proc/self/fd/{i}", f"/dev/{std}")
    os.symlink("/proc/self/fd", "/dev/fd")


def boot_systemd(name: str, hostdir: str, user_home: str, cgroup: str) -> None:
    mount("--make-rprivate", "/")  # nothing mounted here reaches the machine, nor the other way round
    own_cgroups(cgroup)
    mount("--bind", "/proc/sys", "/proc/sys")
    mount("-o", "remount,bind,ro", "/proc/sys")
    own_dev()
    mount("-t", "tmpfs", "-o", "mode=755,nosuid,nodev", "tmpfs", "/run")
    os.mkdir("/run/lock")
    os.chmod("/run/lock", 0o1777)
    # The host directory lives under the machine's /var/tmp, which the host's own hides: its units and sshd
    # find it here.
    os.mkdir(HOSTDIR_INSIDE)
    mount("--bind", hostdir, HOSTDIR_INSIDE)
    mount_host_dirs(HOSTDIR_INSIDE, user_home)
    for own, path in SYSTEMD_BINDS.items():
        if os.path.exists(path):  # e.g. /etc/sudoers.d only where sudo is installed
            mount("--bind", os.path.join(HOSTDIR_INSIDE, own), path)
    socket.sethostname(name)
    env = {"container": "sage-rig", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8",
           "SYSTEMD_UNIT_PATH": f"/etc/systemd/system:{HOSTDIR_INSIDE}/units",
           "SYSTEMD_GENERATOR_PATH": f"{HOSTDIR_INSIDE}/generators",  # empty: no fstab or other generator
           "SYSTEMD_ENVIRONMENT_GENERATOR_PATH": f"{HOSTDIR_INSIDE}/generators"}
    os.execve("/usr/bin/setpriv", ["setpriv", "--bounding-set", "-sys_module,-sys_time,-wake_alarm", "--",
                                   "/lib/systemd/systemd", "--system", "--unit=sage-rig.target",
                                   "--log-target=journal", "--show-status=no"], env)


if __name__ == "__main__":
    main()
