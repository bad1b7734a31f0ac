"""python -m tests.rig up [N] | down | status | ssh NAME -- CMD | reboot NAME... | power-cut | nsenter NAME -- CMD
(run as root from the repo root)

Examples:
  python -m tests.rig up 4 --env          # sage-head, sage-w1..w3, and the Ray env on them
  python -m tests.rig up --names a,b,c --first-ip 100 --root /var/tmp/rig2
  python -m tests.rig up 3 --systemd all --sudo sage-head   # PID 1 systemd everywhere, sudo on the head
  python -m tests.rig down --root /var/tmp/rig2 --purge
  python -m tests.rig ssh sage-w1 -- hostname
  python -m tests.rig reboot sage-w1      # crash and boot again (home kept, /tmp emptied)
  python -m tests.rig power-cut           # every host at once
  python -m tests.rig nsenter sage-w1 -- systemctl --user -M sage@ list-units   # as root inside, no SSH
  python -m tests.rig status --json
  python -m tests.rig down
"""
import argparse
import json
import os
import shlex
import subprocess
import sys
import time

from .rig import DEFAULT_ROOT, Rig, default_names, ensure_env, why_not_available


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.rig", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--root", default=os.environ.get("SAGE_RIG_ROOT", DEFAULT_ROOT),
                        help="rig directory (default: $SAGE_RIG_ROOT or %(default)s)")
    sub = ap.add_subparsers(dest="cmd", required=True)
    add = lambda name, **kw: sub.add_parser(name, parents=[common], **kw)  # noqa: E731
    up = add("up", help="start hosts; they keep running after this command exits")
    up.add_argument("n", nargs="?", type=int, default=4, help="number of hosts (default 4)")
    up.add_argument("--names", help="comma-separated host names (overrides N)")
    up.add_argument("--first-ip", type=int, default=10, help="hosts get 127.0.0.(FIRST_IP + i)")
    up.add_argument("--user", default="sage")
    up.add_argument("--env", action="store_true", help="also ensure the Ray env on the hosts (ensure_env)")
    up.add_argument("--systemd", default="", help="comma-separated hosts whose PID 1 is systemd, or 'all'")
    up.add_argument("--sudo", default="", help="comma-separated systemd hosts where the user may sudo, no password")
    down = add("down", help="stop every host of the rig, whoever started it")
    down.add_argument("--purge", action="store_true", help="also delete the rig directory (keys, homes)")
    status = add("status", help="list hosts and whether they answer")
    status.add_argument("--json", action="store_true")
    ssh = add("ssh", help="run a command on a host as the rig user")
    ssh.add_argument("name")
    ssh.add_argument("command", nargs=argparse.REMAINDER)
    reboot = add("reboot", help="crash hosts and boot them again (home kept, /tmp emptied)")
    reboot.add_argument("names", nargs="+")
    add("power-cut", help="crash every host at once and boot them again")
    nsenter = add("nsenter", help="run a command as root inside a host, without SSH")
    nsenter.add_argument("name")
    nsenter.add_argument("command", nargs=argparse.REMAINDER)
    args = ap.parse_args(argv)

    if args.cmd == "up":
        reason = why_not_available(systemd=bool(args.systemd))
        if reason:
            print(f"rig not available: {reason}", file=sys.stderr)
            return 2
        t0 = time.monotonic()
        names = args.names.split(",") if args.names else default_names(args.n)
        systemd = names if args.systemd == "all" else [n for n in args.systemd.split(",") if n]
        try:
            rig = Rig(names, root=args.root, user=args.user, first_ip=args.first_ip, systemd=systemd,
                      sudo=[n for n in args.sudo.split(",") if n]).up(cleanup_at_exit=False)
        except (RuntimeError, ValueError) as e:
            print(e, file=sys.stderr)
            return 1
        print(f"{len(rig.hosts)} hosts up in {time.monotonic() - t0:.1f}s (root {rig.root})")
        if args.env:
            t0 = time.monotonic()
            print(f"env {ensure_env()} ready in {time.monotonic() - t0:.1f}s")
        _print_status(rig)
        print(f"\nssh: {shlex.join(rig.ssh_argv(rig.hosts[0].name))}")
        return 0

    if not os.path.exists(os.path.join(args.root, "state.json")):
        print(f"no rig running at {args.root}", file=sys.stderr)
        if args.cmd == "down":
            Rig([], root=args.root).down(purge=args.purge)  # still drop a stale /etc/hosts block
            return 0
        return 1
    rig = Rig.from_state(args.root)
    if args.cmd == "down":
        rig.down(purge=args.purge)
        print(f"rig at {args.root} is down")
    elif args.cmd == "status":
        if args.json:
            print(json.dumps(rig.status(), indent=1))
        else:
            _print_status(rig)
    elif args.cmd == "ssh":
        return subprocess.run([*rig.ssh_argv(args.name), "--", shlex.join(_command(args))]).returncode
    elif args.cmd in ("reboot", "power-cut"):
        t0 = time.monotonic()
        try:
            rig.reboot(*args.names) if args.cmd == "reboot" else rig.power_cut()
        except (RuntimeError, KeyError) as e:
            print(e, file=sys.stderr)
            return 1
        print(f"up again in {time.monotonic() - t0:.1f}s")
    elif args.cmd == "nsenter":
        done = rig.nsenter(args.name, _command(args), check=False, timeout=None)
        sys.stdout.write(done.stdout)
        sys.stderr.write(done.stderr)
        return done.returncode
    return 0


def _command(args: argparse.Namespace) -> list[str]:
    return args.command[1:] if args.command[:1] == ["--"] else args.command


def _print_status(rig: Rig) -> None:
    print(f"{'NAME':<14} {'IP':<15} {'INIT':<8} {'INIT PID':>8}  RUNNING  SSH")
    for s in rig.status():
        pid = s["init_pid"] or "-"
        print(f"{s['name']:<14} {s['ip']:<15} {s['init']:<8} {pid:>8}  {str(s['running']):<7}  {s['ssh']}")


if __name__ == "__main__":
    sys.exit(main())
