"""N realistic SSH "hosts" on this one machine, for end-to-end tests and benchmarks.

Each host is an sshd in its own mount, UTS and PID namespace (see hostinit.py), listening on
its own loopback address 127.0.0.N:22, with its own hostname, /home/<user>, /tmp and /dev/shm.
Hosts share the network namespace and /etc, so they reach each other over 127.0.0.x and all
see the names this rig writes into /etc/hosts.

Hosts whose PID 1 is systemd (`Rig(names, systemd=[...])`) sit beside the plain ones: systemd boots
sage-rig.target, which starts sshd (`UsePAM yes`: a login gets a systemd user session and
XDG_RUNTIME_DIR), dbus, polkit, journald, systemd-logind and systemd-user-sessions, so the rig user's
own systemd works (`systemctl --user`, `loginctl enable-linger`), and so do system units the host's
root enables (WantedBy=multi-user.target, in the host's own /etc/systemd/system). Such a host has its
own /run, /var/tmp, /var/lib/systemd (linger), /etc/systemd/system, /etc/tmpfiles.d, /var/log/journal,
/etc/hostname, /etc/machine-id and /etc/sudoers.d (see hostinit.py for why and how); the rest of /etc, /usr and
/opt are the machine's, as on plain hosts. `reboot(name)` kills its
namespace and boots it again (home, /var/lib/systemd, /etc/systemd/system and /var/tmp kept, /tmp
emptied); `power_cut()` does that to every host at once; `nsenter(name, argv)` runs a command inside
it as root without SSH (systemctl, journalctl). `sudo=[...]` lets the rig user run sudo without a
password on those systemd hosts (when the machine has sudo). Every systemd host runs only units of the
rig's own list (hostinit.py), never the machine's: it cannot start the machine's sshd on 0.0.0.0:22,
set sysctls, load modules or clean the machine's /tmp.
"""
from __future__ import annotations

import atexit
import contextlib
import dataclasses
import fcntl
import glob
import importlib.metadata
import ipaddress
import json
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from .hostinit import HOSTDIR_INSIDE, SYSTEMD_BINDS, cgroup_hierarchies

DEFAULT_ROOT = "/var/tmp/sage-rig"
DEFAULT_ENV = "/opt/conda/envs/sage"
DEFAULT_USER = "sage"
HOST_PYTHON = "/usr/bin/python3"  # the hosts' interpreter: readable by the user, unlike /root/.pyenv
SSHD = "/usr/sbin/sshd"
INIT = str(Path(__file__).with_name("hostinit.py"))


def rig_root(name: str) -> str:
    """A test module's own rig root beside the run's (tests/rig/isolated sets SAGE_RIG_ROOT per checkout), so two
    isolated runs of the same module never share one."""
    return f"{os.environ.get('SAGE_RIG_ROOT', DEFAULT_ROOT)}-{name}"
ETC_HOSTS = "/etc/hosts"
START_TIMEOUT = 20.0
SYSTEMD_START_TIMEOUT = 90.0  # a boot to SSH takes seconds alone, much longer beside other boots on 2 busy cores
SYSTEMD = "/lib/systemd/systemd"
CGROUP_PARENT = "sage-rig"  # each systemd host's cgroup subtree is <hierarchy>/sage-rig/<its directory, escaped>
# The machine's units a systemd host runs (linked from /lib/systemd/system into its unit directory); anything
# else the machine has (sysctl, modules-load, tmpfiles, timesyncd, its sshd, getty, ...) does not exist there.
SYSTEMD_UNITS = ["sysinit.target", "basic.target", "sockets.target", "timers.target", "paths.target",
                 "slices.target", "multi-user.target", "network.target", "network-online.target",
                 "nss-user-lookup.target", "remote-fs.target", "user.slice", "user-.slice.d",
                 "dbus.socket", "dbus.service", "polkit.service", "systemd-journald.socket",
                 "systemd-journald-dev-log.socket", "systemd-journald.service", "systemd-logind.service",
                 "systemd-user-sessions.service", "user-runtime-dir@.service", "user@.service", "user@.service.d"]
SYSTEMD_ALIASES = {"dbus-org.freedesktop.login1.service": "systemd-logind.service"}  # D-Bus activates logind by it


def default_names(n: int) -> list[str]:
    return ["sage-head"] + [f"sage-w{i}" for i in range(1, n)]


def requirements() -> list[str]:
    """What is missing for the rig to run here (empty when it can run)."""
    missing = []
    if os.geteuid() != 0:
        missing.append("the rig needs root (namespaces, bind mounts, /etc/hosts)")
    for tool in ("unshare", "ssh", "ssh-keygen", "rsync", "mount", "useradd"):
        if shutil.which(tool) is None:
            missing.append(f"no `{tool}` on PATH")
    for path in (SSHD, HOST_PYTHON):
        if not os.access(path, os.X_OK):
            missing.append(f"no {path}")
    if not missing:
        # Containers often have the tools but not the privilege to use them.
        probe = subprocess.run(["unshare", "--mount", "--uts", "--pid", "--fork", "--mount-proc", "true"],
                               capture_output=True, text=True)
        if probe.returncode != 0:
            missing.append(f"unshare does not work here: {probe.stderr.strip()}")
    return missing


# What a systemd host runs besides SYSTEMD_UNITS, and the Debian package that has it.
SYSTEMD_NEEDS = [(SYSTEMD, "systemd"), ("/usr/bin/dbus-daemon", "dbus"), ("/usr/bin/setpriv", "util-linux"),
                 ("/usr/bin/nsenter", "util-linux")]


def systemd_requirements() -> list[str]:
    """What is missing for hosts whose PID 1 is systemd (empty when they can run here)."""
    missing = [f"no {path} (Debian package {package})" for path, package in SYSTEMD_NEEDS if not os.path.exists(path)]
    missing += [f"no /lib/systemd/system/{unit} (Debian packages systemd, dbus, polkitd)" for unit in SYSTEMD_UNITS
                if not os.path.exists(f"/lib/systemd/system/{unit}")]
    if not glob.glob("/lib/*/security/pam_systemd.so") + glob.glob("/usr/lib/*/security/pam_systemd.so"):
        missing.append("no pam_systemd.so (Debian package libpam-systemd)")
    return missing


def why_not_available(systemd: bool = False) -> str | None:
    """Why the rig cannot run here (None when it can); systemd=True: hosts whose PID 1 is systemd too."""
    missing = requirements() + (systemd_requirements() if systemd else [])
    return "; ".join(missing) if missing else None


@dataclasses.dataclass
class Host:
    name: str
    ip: str
    dir: Path  # controller-side directory of this host: keys, sshd_config, log, home, tmp
    port: int = 22
    pid: int | None = None  # the `unshare` process (root PID namespace)
    init_pid: int | None = None  # hostinit.py, PID 1 of the host's namespace
    pidns: str | None = None  # e.g. "pid:[4026532301]", to find every process of the host
    systemd: bool = False  # PID 1 is systemd (else hostinit.py)
    sudo: bool = False  # the rig user may run sudo without a password (systemd hosts only)

    @property
    def home(self) -> Path:
        return self.dir / "home"

    @property
    def tmp(self) -> Path:
        return self.dir / "tmp"

    @property
    def host_key(self) -> Path:
        return self.dir / "ssh_host_ed25519_key"

    @property
    def log(self) -> Path:
        return self.dir / "log"

    @property
    def cgroup(self) -> str:
        """A systemd host's cgroup subtree, relative to each hierarchy's root."""
        return f"{CGROUP_PARENT}/{str(self.dir).strip('/').replace('/', '-')}"

    def path_inside(self, path: Path) -> Path:
        """Where the host itself sees a file of its directory (a systemd host's own /var/tmp hides the rig's)."""
        return Path(HOSTDIR_INSIDE) / path.relative_to(self.dir) if self.systemd else path


class Rig:
    """Usage: `with Rig(4) as rig: rig.ssh("sage-w1", ["hostname"])` (the context manager calls up/down);
    `Rig(names, systemd=["sage-w1"], sudo=["sage-w1"])` for hosts whose PID 1 is systemd."""

    def __init__(self, hosts: int | list[str] = 4, *, root: str | os.PathLike | None = None,
                 user: str = DEFAULT_USER, first_ip: int = 10, systemd: Sequence[str] = (), sudo: Sequence[str] = ()):
        """systemd: the names of the hosts whose PID 1 is systemd; sudo: those of them where the rig user may
        run sudo without a password."""
        self.root = Path(root or os.environ.get("SAGE_RIG_ROOT") or DEFAULT_ROOT)
        self.user = user
        self.first_ip = first_ip
        names = default_names(hosts) if isinstance(hosts, int) else list(hosts)
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate host names: {names}")
        base = ipaddress.IPv4Address("127.0.0.0") + first_ip
        if (base + len(names) - 1) not in ipaddress.IPv4Network("127.0.0.0/8") or first_ip < 2:
            raise ValueError(f"first_ip={first_ip} puts hosts outside 127.0.0.2-127.255.255.254")
        for kind, chosen in (("systemd", systemd), ("sudo", sudo)):
            unknown = set(chosen) - set(names)
            if unknown:
                raise ValueError(f"{kind}= names hosts not in this rig: {sorted(unknown)}")
        if set(sudo) - set(systemd):
            raise ValueError(f"sudo= hosts must be systemd hosts too: {sorted(set(sudo) - set(systemd))}")
        self.hosts = [Host(name, str(base + i), self.root / "hosts" / name, systemd=name in systemd,
                           sudo=name in sudo) for i, name in enumerate(names)]
        self._procs: dict[str, subprocess.Popen] = {}
        self._cleanup_registered = False

    # ---- paths and lookups -------------------------------------------------------------------
    key_path = property(lambda self: self.root / "id_ed25519")
    known_hosts_path = property(lambda self: self.root / "known_hosts")
    state_path = property(lambda self: self.root / "state.json")

    def host(self, name: str) -> Host:
        for h in self.hosts:
            if h.name == name:
                return h
        raise KeyError(f"no host {name!r} in this rig ({', '.join(h.name for h in self.hosts)})")

    @property
    def user_home(self) -> str:
        return f"/home/{self.user}"

    def ssh_options(self) -> list[str]:
        """ssh options that reach these hosts with strict host key checking (for ssh, rsync -e, ansible)."""
        return ["-F", "none", "-i", str(self.key_path), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
                "-o", f"UserKnownHostsFile={self.known_hosts_path}", "-o", "GlobalKnownHostsFile=/dev/null",
                "-o", "StrictHostKeyChecking=yes", "-o", "ConnectTimeout=10"]

    def ssh_argv(self, name: str) -> list[str]:
        h = self.host(name)
        return ["ssh", *self.ssh_options(), "-p", str(h.port), f"{self.user}@{h.ip}"]

    def ssh(self, name: str, argv: list[str], check: bool = True, timeout: float = 60
            ) -> subprocess.CompletedProcess:
        """Run argv on a host as the rig user; the remote shell sees it quoted, word for word."""
        return subprocess.run([*self.ssh_argv(name), "--", shlex.join(argv)], stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=timeout, check=check)

    # ---- whole rig ---------------------------------------------------------------------------
    def __enter__(self) -> Rig:
        return self.up()

    def __exit__(self, *exc) -> None:
        self.down()

    def up(self, cleanup_at_exit: bool = True) -> Rig:
        """Start every host on fresh home and tmp directories (host keys are kept).

        cleanup_at_exit: also tear down at interpreter exit, SIGTERM or SIGHUP (pass False to
        leave the hosts running for other processes, as `python -m tests.rig up` does).
        """
        reason = why_not_available(systemd=any(h.systemd for h in self.hosts))
        if reason:
            raise RuntimeError(f"rig not available: {reason}")
        if self.state_path.exists():  # a rig of a crashed run, or one left up on purpose: same root, same rig
            Rig.from_state(self.root).down()
        for h in self.hosts:
            if _banner(h.ip, h.port, timeout=0.3):
                raise RuntimeError(f"{h.ip}:{h.port} already answers (another rig? pick another first_ip)")
        if cleanup_at_exit:
            self._register_cleanup()
        try:
            _edit_etc_hosts(self._block_marker(), [f"{h.ip} {h.name}" for h in self.hosts])
            self.root.mkdir(parents=True, exist_ok=True)
            os.chmod(self.root, 0o755)
            _ensure_user(self.user)
            os.makedirs(self.user_home, exist_ok=True)  # the mount point of every host's home
            if not self.key_path.exists():
                _keygen(self.key_path, f"sage-rig@{socket.gethostname()}")
            for h in self.hosts:
                self._prepare(h)
            self.write_known_hosts()
            self._start([h.name for h in self.hosts])
        except BaseException:
            self.down()  # half a rig is no use, and nobody else knows to clean it up
            raise
        return self

    def down(self, purge: bool = False) -> None:
        """Kill every host (and so every process in it), remove the /etc/hosts block and the state file.

        Raises RuntimeError if a process of the rig survives.
        """
        self._stop([h.name for h in self.hosts])
        _edit_etc_hosts(self._block_marker(), [])
        self.state_path.unlink(missing_ok=True)
        if self._cleanup_registered:
            atexit.unregister(self.down)
            self._cleanup_registered = False
        if purge:
            shutil.rmtree(self.root, ignore_errors=True)
        left = self.leftover_processes()
        if left:
            raise RuntimeError(f"processes of the rig survived teardown: {left}")

    def leftover_processes(self, names: list[str] | None = None) -> list[tuple[int, str]]:
        """(pid, cmdline) of every process in the PID namespace of a host (default: all) or running its hostinit
        (a systemd host's PID 1 and everything its units started are in its namespace too)."""
        hosts = self.hosts if names is None else [self.host(n) for n in names]
        namespaces = {h.pidns for h in hosts if h.pidns}
        dirs = {str(h.dir).encode() for h in hosts}
        found = []
        for pid in _pids():
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                if _state(pid) == "Z":
                    continue
                ns = os.readlink(f"/proc/{pid}/ns/pid")
            except OSError:
                continue
            mine = INIT.encode() in cmdline and not dirs.isdisjoint(cmdline)
            if ns in namespaces or mine:
                found.append((pid, b" ".join(cmdline).decode(errors="replace").strip()))
        return found

    def status(self) -> list[dict]:
        return [{"name": h.name, "ip": h.ip, "port": h.port, "init": "systemd" if h.systemd else "hostinit",
                 "sudo": h.sudo, "init_pid": h.init_pid,
                 "running": self._alive(h), "ssh": _banner(h.ip, h.port, timeout=1.0)} for h in self.hosts]

    @classmethod
    def from_state(cls, root: str | os.PathLike | None = None) -> Rig:
        """The rig described by ROOT/state.json, as written by whichever process started it."""
        root = Path(root or os.environ.get("SAGE_RIG_ROOT") or DEFAULT_ROOT)
        state = json.loads((root / "state.json").read_text())
        rig = cls([h["name"] for h in state["hosts"]], root=root, user=state["user"], first_ip=state["first_ip"],
                  systemd=[h["name"] for h in state["hosts"] if h.get("systemd")],
                  sudo=[h["name"] for h in state["hosts"] if h.get("sudo")])
        for h, saved in zip(rig.hosts, state["hosts"]):
            h.pid, h.init_pid, h.pidns = saved["pid"], saved["init_pid"], saved["pidns"]
            if not rig._alive(h):  # its pid and namespace inode may belong to someone else by now
                h.pid = h.init_pid = h.pidns = None
        return rig

    # ---- one host ----------------------------------------------------------------------------
    def start_host(self, name: str) -> None:
        """Bring a stopped host back: same host key, same home and tmp contents."""
        self._start([name])

    def stop_host(self, name: str) -> None:
        """Power a host off: every process in it dies at once (no shutdown scripts, like a crash)."""
        self._stop([name])
        self._save_state()

    def reboot(self, *names: str) -> None:
        """Crash and boot hosts again, all at once (no shutdown: every process dies like at a power cut). Home,
        host key and, on a systemd host, /var/lib/systemd (linger), /etc/systemd/system and /var/tmp are kept;
        /tmp is emptied, as Debian empties it at boot."""
        self._stop(list(names))
        for name in names:
            self._empty_tmp(self.host(name))
        self._start(list(names))

    def power_cut(self) -> None:
        """Every host of the rig crashes and boots again at once."""
        self.reboot(*(h.name for h in self.hosts))

    def nsenter(self, name: str, argv: list[str], check: bool = True, timeout: float | None = 60
                ) -> subprocess.CompletedProcess:
        """Run argv as root inside a running host (its mount, UTS, IPC and PID namespaces), without SSH: e.g.
        ["systemctl", "--user", "-M", "sage@", "status", "x"] or ["journalctl", "-u", "ssh"] on a systemd host."""
        h = self.host(name)
        if not self._alive(h):
            raise RuntimeError(f"host {name} is not running")
        return subprocess.run(["nsenter", "-t", str(h.init_pid), "-m", "-u", "-i", "-p", "--", *argv],
                              env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"},
                              stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout, check=check)

    def regenerate_host_key(self, name: str, update_known_hosts: bool = False) -> None:
        """Give a host a new host key and restart it.

        By default known_hosts keeps the old key, so strict ssh to this host now fails with
        "REMOTE HOST IDENTIFICATION HAS CHANGED"; update_known_hosts=True accepts the new key.
        """
        h = self.host(name)
        self._stop([name])
        h.host_key.unlink(missing_ok=True)
        h.host_key.with_suffix(".pub").unlink(missing_ok=True)
        _keygen(h.host_key, name)
        if update_known_hosts:
            self.write_known_hosts()
        self._start([name])

    def allow_password(self, name: str, password: str, keys: bool = True) -> None:
        """A machine before key setup: the host's sshd takes the user's password too (keys=False: only the
        password, the user has no authorized key there). The password is the user's own (in /etc/shadow, which
        every rig host shares: give such a rig a user of its own), set through chpasswd's stdin, never an argument."""
        h = self.host(name)
        subprocess.run(["chpasswd"], input=f"{self.user}:{password}\n", text=True, check=True, capture_output=True)
        if not keys:
            (h.home / ".ssh" / "authorized_keys").unlink(missing_ok=True)
        self._stop([name])
        self._write_sshd_config(h, password=True)
        self._start([name])

    def cut_off_index(self, name: str) -> None:
        """The host's pip reaches no package index: its own ~/.config/pip/pip.conf names a closed port (the other
        hosts keep theirs)."""
        self.write_pip_conf(name, "[global]\nindex-url = http://127.0.0.1:9/simple\nfind-links =\nextra-index-url =\n")

    def write_pip_conf(self, name: str, text: str) -> None:
        """The user's ~/.config/pip/pip.conf on one host."""
        pw = pwd.getpwnam(self.user)
        conf = self.host(name).home / ".config" / "pip"
        conf.mkdir(parents=True, exist_ok=True)
        _write(conf / "pip.conf", text, 0o644)
        for path in (conf.parent, conf, conf / "pip.conf"):
            os.lchown(path, pw.pw_uid, pw.pw_gid)

    def write_known_hosts(self) -> None:
        lines = []
        for h in self.hosts:
            keytype, key = h.host_key.with_suffix(".pub").read_text().split()[:2]
            lines.append(f"{h.name},{h.ip} {keytype} {key}\n")
        _write(self.known_hosts_path, "".join(lines), 0o644)

    # ---- internals ---------------------------------------------------------------------------
    def _block_marker(self) -> str:
        return f"sage-rig {self.root}"  # one block per rig root, so concurrent rigs don't clobber each other

    def _prepare(self, h: Host) -> None:
        """Fresh home and tmp, sshd_config, and a host key kept from earlier runs."""
        pw = pwd.getpwnam(self.user)
        h.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(h.dir, 0o755)
        if not h.host_key.exists():
            _keygen(h.host_key, h.name)
        shutil.rmtree(h.home, ignore_errors=True)
        self._empty_tmp(h)
        shutil.copytree("/etc/skel", h.home)
        ssh_dir = h.home / ".ssh"
        ssh_dir.mkdir(mode=0o700)
        shutil.copy(self.key_path.with_suffix(".pub"), ssh_dir / "authorized_keys")
        os.chmod(ssh_dir / "authorized_keys", 0o600)
        os.chmod(h.home, 0o755)
        for path in [h.home, *h.home.rglob("*")]:
            os.lchown(path, pw.pw_uid, pw.pw_gid)
        self._write_sshd_config(h, password=False)
        if h.systemd:
            self._prepare_systemd(h)

    def _empty_tmp(self, h: Host) -> None:
        shutil.rmtree(h.tmp, ignore_errors=True)
        h.tmp.mkdir()
        os.chmod(h.tmp, 0o1777)

    def _prepare_systemd(self, h: Host) -> None:
        """A systemd host's own directories (bound over the machine's by hostinit.py), fresh, and its units."""
        for own in SYSTEMD_BINDS:
            path = h.dir / own
            if path.is_dir():
                shutil.rmtree(path)
            if own in ("hostname", "machine-id"):
                continue
            path.mkdir(mode=0o755)
        (h.dir / "var-tmp").chmod(0o1777)
        (h.dir / "sudoers.d").chmod(0o750)
        _write(h.dir / "hostname", h.name + "\n", 0o644)
        if not (h.dir / "machine-id").exists():  # kept like the host key: the same machine after every up
            _write(h.dir / "machine-id", os.urandom(16).hex() + "\n", 0o444)
        if h.sudo:
            _write(h.dir / "sudoers.d" / "sage-rig", f"{self.user} ALL=(ALL) NOPASSWD: ALL\n", 0o440)
        units = h.dir / "units"
        shutil.rmtree(units, ignore_errors=True)
        units.mkdir()
        (h.dir / "generators").mkdir(exist_ok=True)  # stays empty: the machine's generators do not run
        for unit in SYSTEMD_UNITS:
            (units / unit).symlink_to(f"/lib/systemd/system/{unit}")
        for alias, unit in SYSTEMD_ALIASES.items():
            (units / alias).symlink_to(unit)
        config = h.path_inside(h.dir / "sshd_config")
        _write(units / "ssh.service", "\n".join([
            "[Unit]",
            f"Description=OpenSSH server of rig host {h.name}",
            # Logins need logind and dbus (pam_systemd) and no /run/nologin.
            "After=network.target dbus.socket systemd-logind.service systemd-user-sessions.service",
            "[Service]",
            f"ExecStart={SSHD} -D -e -f {config}",
            "KillMode=process",  # a restart of sshd keeps the logins, as Debian's ssh.service does
            "Restart=on-failure",
            "RuntimeDirectory=sshd",
            "RuntimeDirectoryMode=0755",
            "",
        ]), 0o644)
        _write(units / "sage-rig.target", "\n".join([
            "[Unit]",
            "Description=A rig host (booted instead of the machine's default target)",
            "Requires=basic.target",
            "Wants=multi-user.target ssh.service dbus.socket systemd-journald.service systemd-journald-dev-log.socket "
            "systemd-logind.service systemd-user-sessions.service",
            "After=basic.target multi-user.target ssh.service",
            "",
        ]), 0o644)

    def _write_sshd_config(self, h: Host, password: bool) -> None:
        _write(h.dir / "sshd_config", "\n".join([
            f"ListenAddress {h.ip}:{h.port}",
            f"HostKey {h.path_inside(h.host_key)}",
            "PidFile none",
            f"PasswordAuthentication {'yes' if password else 'no'}",
            "KbdInteractiveAuthentication no",
            "PubkeyAuthentication yes",
            "AuthorizedKeysFile .ssh/authorized_keys",
            "StrictModes yes",
            f"UsePAM {'yes' if h.systemd else 'no'}",  # PAM's pam_systemd gives a login its user session
            "PermitRootLogin no",
            f"AllowUsers {self.user}",
            "PrintMotd no",
            "AcceptEnv LANG LC_*",
            # Lets a test skew one host's clock (libfaketime through ~/.ssh/environment), as doctor must see.
            "PermitUserEnvironment LD_PRELOAD,FAKETIME",
            "Subsystem sftp /usr/lib/openssh/sftp-server",
            "",
        ]), 0o644)

    def _start(self, names: list[str]) -> None:
        hosts = [self.host(n) for n in names]
        for h in hosts:  # launch all, then wait: 32 hosts start in about the time of one
            if self._alive(h):
                continue
            if h.systemd:  # its own IPC namespace too: logind removes a user's IPC objects at logout
                unshare, init = ["--ipc"], ["systemd", h.cgroup]
                self._remove_cgroups(h)  # a crashed run's
            else:
                unshare, init = [], ["sshd", str(h.dir / "sshd_config")]
            with open(h.log, "ab") as log:
                p = subprocess.Popen(
                    ["unshare", "--mount", "--uts", *unshare, "--pid", "--fork", "--mount-proc", "--kill-child",
                     "--", HOST_PYTHON, INIT, h.name, str(h.dir), self.user_home, *init],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    start_new_session=True)  # a Ctrl-C in the terminal goes to us, and we tear down in order
            self._procs[h.name] = p
            h.pid, h.init_pid, h.pidns = p.pid, None, None
        deadline = time.monotonic() + (SYSTEMD_START_TIMEOUT if any(h.systemd for h in hosts) else START_TIMEOUT)
        for h in hosts:
            p = self._procs.get(h.name)
            while not _banner(h.ip, h.port, timeout=0.5):
                if (p and p.poll() is not None) or time.monotonic() > deadline:
                    self._save_state()
                    tail = h.log.read_text(errors="replace")[-2000:] + (self._journal(p) if h.systemd else "")
                    raise RuntimeError(f"host {h.name} ({h.ip}:{h.port}) did not start; log {h.log}:\n{tail}")
                time.sleep(0.05)
            if h.init_pid is None:
                h.init_pid = _child_of(h.pid)
                h.pidns = os.readlink(f"/proc/{h.init_pid}/ns/pid")
        self._save_state()

    def _stop(self, names: list[str]) -> None:
        hosts = [self.host(n) for n in names]
        killed = [h for h in hosts if self._alive(h)]
        for h in killed:
            os.kill(h.init_pid, signal.SIGKILL)
        for h in hosts:  # launched but init pid not known yet: unshare --kill-child takes init down with it
            p = self._procs.get(h.name)
            if h not in killed and p and p.poll() is None:
                p.kill()
        deadline = time.monotonic() + 10
        for h in killed:
            # Not _alive(): an exiting init has an empty cmdline well before it is gone. And PID 1
            # turns zombie only once every other process of its namespace is gone.
            while _state(h.init_pid) not in (None, "Z") and time.monotonic() < deadline:
                time.sleep(0.02)
        for h in hosts:
            p = self._procs.pop(h.name, None)
            if p:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.wait(timeout=max(0.1, deadline - time.monotonic()))
        while time.monotonic() < deadline:  # anything that escaped or is still exiting: should not happen
            left = self.leftover_processes(names)
            if not left:
                break
            for pid, _ in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.05)
        for h in hosts:  # a dead namespace's inode number gets reused: forget it
            h.pid = h.init_pid = h.pidns = None
            if h.systemd:
                self._remove_cgroups(h)

    def _journal(self, p: subprocess.Popen) -> str:
        """The end of a systemd host's journal, where its systemd logs (its /dev has no console)."""
        with contextlib.suppress(RuntimeError, OSError, subprocess.SubprocessError):
            out = subprocess.run(["nsenter", "-t", str(_child_of(p.pid, timeout=1)), "-m", "-p", "--", "journalctl",
                                  "-b", "--no-pager", "-n", "40"], capture_output=True, text=True, timeout=10)
            return f"\njournal:\n{out.stdout}{out.stderr}"
        return ""

    def _remove_cgroups(self, h: Host) -> None:
        """Remove a dead systemd host's cgroup subtree (the dirs its systemd made), innermost first."""
        for hierarchy in cgroup_hierarchies():
            top = Path(hierarchy) / h.cgroup
            if not top.exists():
                continue
            for dirpath, _, _ in sorted(os.walk(top), key=lambda w: -len(w[0])):
                deadline = time.monotonic() + 5
                while True:
                    try:
                        os.rmdir(dirpath)
                        break
                    except OSError as e:  # EBUSY: its last processes are still exiting
                        if time.monotonic() > deadline:
                            raise RuntimeError(f"cannot remove cgroup {dirpath} of host {h.name}: {e}") from None
                        time.sleep(0.05)
            with contextlib.suppress(OSError):  # other rigs may still have hosts in it
                os.rmdir(top.parent)

    def _alive(self, h: Host) -> bool:
        """Is this host's init running (and really ours, not a recycled pid)?"""
        if not h.init_pid or _state(h.init_pid) in (None, "Z"):
            return False
        try:
            if h.systemd:  # hostinit.py has exec'd systemd: PID 1 of the namespace the host was started in
                return (os.readlink(f"/proc/{h.init_pid}/ns/pid") == h.pidns
                        and os.path.realpath(f"/proc/{h.init_pid}/exe") == os.path.realpath(SYSTEMD))
            cmdline = Path(f"/proc/{h.init_pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        return INIT.encode() in cmdline and str(h.dir).encode() in cmdline

    def _save_state(self) -> None:
        state = {"user": self.user, "first_ip": self.first_ip,
                 "hosts": [{"name": h.name, "ip": h.ip, "port": h.port, "pid": h.pid, "init_pid": h.init_pid,
                            "pidns": h.pidns, "systemd": h.systemd, "sudo": h.sudo} for h in self.hosts]}
        _write(self.state_path, json.dumps(state, indent=1) + "\n", 0o644)

    def _register_cleanup(self) -> None:
        if self._cleanup_registered:
            return
        atexit.register(self.down)
        self._cleanup_registered = True
        # SIGTERM/SIGHUP would end Python without running atexit or fixture teardown.
        # KeyboardInterrupt (not SystemExit, which pytest records as a test failure and goes on)
        # makes pytest stop the session and tear fixtures down.
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGHUP):
                if signal.getsignal(sig) == signal.SIG_DFL:
                    signal.signal(sig, _raise_keyboard_interrupt)


# ---- the Ray environment on the hosts ------------------------------------------------------------
def controller_ray_version() -> str:
    return importlib.metadata.version("ray")  # no `import ray`: that takes seconds


def installed_ray_version(path: str = DEFAULT_ENV, package: str = "ray") -> str | None:
    """The version of a package (ray) in the env at PATH, read from its dist-info (fast: no interpreter start)."""
    if not os.access(os.path.join(path, "bin", "python"), os.X_OK):
        return None
    for d in glob.glob(os.path.join(path, "lib", "python*", "site-packages", f"{package}-*.dist-info")):
        return os.path.basename(d)[len(package) + 1:-len(".dist-info")]
    return None


# setuptools with its own bdist_wheel (>= 70.1): the deploy tests' projects install with --no-build-isolation,
# offline, as on nodes without internet.
SETUPTOOLS = (70, 1)


def _env_ready(path: str, want: str) -> bool:
    setuptools = installed_ray_version(path, "setuptools") or "0"
    return (installed_ray_version(path) == want
            and tuple(int(x) for x in re.findall(r"\d+", setuptools)[:2]) >= SETUPTOOLS)


def ensure_env(path: str = DEFAULT_ENV, ray_version: str | None = None) -> str:
    """A venv at PATH with ray[default]==the controller's ray, readable and runnable by any user."""
    want = ray_version or controller_ray_version()
    if _env_ready(path, want):
        return path
    parent = os.path.dirname(path)
    os.makedirs(parent, mode=0o755, exist_ok=True)
    lock = os.open(parent, os.O_RDONLY)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)  # parallel test sessions: one builds, the others wait
        if _env_ready(path, want):
            return path
        if not os.access(os.path.join(path, "bin", "python"), os.X_OK):
            subprocess.run([HOST_PYTHON, "-m", "venv", path], check=True, umask=0o022)
        # -qq: this machine's pip config names index dirs that don't all exist; pip warns once per package.
        subprocess.run([os.path.join(path, "bin", "pip"), "install", "-qq", f"ray[default]=={want}",
                        "setuptools>={}.{}".format(*SETUPTOOLS)],
                       check=True, umask=0o022)
        for d in (parent, os.path.dirname(parent)):
            os.chmod(d, os.stat(d).st_mode | 0o755)
    finally:
        os.close(lock)
    return path


WHEELS_ROOT = "/var/tmp/sage-rig-wheels"


def ensure_wheels(ray_version: str | None = None) -> Path:
    """The wheels of ray[default]==the controller's release for the rig's hosts (their Python, glibc and machine are
    this machine's /usr/bin/python3's), built by sage's own wheelhouse code once and kept: the source of a package
    index a test serves to the hosts, which cannot reach one inside a network namespace of their own."""
    import sage_cluster  # noqa: F401  (puts the collection on sys.path)
    from ansible_collections.sage.cluster.plugins.plugin_utils.wheelhouse import build_wheelhouse

    probe = ("import os, platform, sys; "
             "print('%d.%d' % sys.version_info[:2], os.confstr('CS_GNU_LIBC_VERSION').split()[1], platform.machine())")
    python, glibc, machine = subprocess.run([HOST_PYTHON, "-c", probe], capture_output=True, text=True,
                                            check=True).stdout.split()
    return build_wheelhouse(ray_version or controller_ray_version(), python, glibc, machine, root=Path(WHEELS_ROOT))


# ---- helpers ---------------------------------------------------------------------------------------
def _raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def _banner(ip: str, port: int, timeout: float) -> bool:
    """Does an SSH server answer there (TCP accept is not enough: sshd may still be loading)?"""
    try:
        with socket.create_connection((ip, port), timeout=timeout) as s:
            return s.recv(8).startswith(b"SSH-")
    except OSError:
        return False


def _pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _state(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()[0]


def _child_of(ppid: int, timeout: float = 5.0) -> int:
    """The pid of ppid's child (no /proc/PID/task/*/children on every kernel: scan /proc/*/stat)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for pid in _pids():
            with contextlib.suppress(OSError):
                if int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1]) == ppid:
                    return pid
        time.sleep(0.02)
    raise RuntimeError(f"process {ppid} has no child")


def _keygen(path: Path, comment: str) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
                   check=True, stdin=subprocess.DEVNULL)


def _write(path: Path, text: str, mode: int) -> None:
    tmp = path.with_name(path.name + ".new")
    tmp.write_text(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def _ensure_user(user: str) -> None:
    try:
        pwd.getpwnam(user)
    except KeyError:
        r = subprocess.run(["useradd", "--no-create-home", "--home-dir", f"/home/{user}", "--shell", "/bin/bash",
                            "--user-group", user], capture_output=True, text=True)
        try:
            pwd.getpwnam(user)  # when useradd failed, a concurrent rig may have created the user meanwhile
        except KeyError:
            raise RuntimeError(f"useradd {user} failed: {r.stderr.strip()}") from None
    # A locked account ("!" in /etc/shadow) cannot log in even with a key.
    for line in Path("/etc/shadow").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == user and fields[1].startswith("!"):
            subprocess.run(["usermod", "-p", "*", user], check=True)


def _edit_etc_hosts(marker: str, lines: list[str]) -> None:
    """Replace (or with no lines, remove) our marked block, in place: /etc/hosts may be a bind mount."""
    begin, end = f"# BEGIN {marker}", f"# END {marker}"
    with open(ETC_HOSTS, "r+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # concurrent rigs edit the same file
        kept, inside = [], False
        for line in f.read().splitlines():
            if line == begin:
                inside = True
            elif line == end:
                inside = False
            elif not inside:
                kept.append(line)
        names = {word for line in lines for word in line.split()[1:]}
        taken = [line for line in kept if names & set(line.split("#")[0].split()[1:])]
        if taken:  # the first line for a name wins: ours would be silently ignored
            raise RuntimeError(f"{ETC_HOSTS} already maps these names (another rig? pick other names): {taken}")
        if lines:
            kept += [begin, *lines, end]
        f.seek(0)
        f.truncate()
        f.write("\n".join(kept) + "\n")
