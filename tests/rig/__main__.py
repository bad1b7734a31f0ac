"""python -m tests.rig up [N] | down | status | ssh NAME -- CMD...   (run as root from the repo root)

Examples:
  python -m tests.rig up 4 --env          # sage-head, sage-w1..w3, and the Ray env on them
  python -m tests.rig up --names a,b,c --first-ip 100 --root /var/tmp/rig2
  python -m tests.rig down --root /var/tmp/rig2 --purge
  python -m tests.rig ssh sage-w1 -- hostname
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

from .rig import DEFAULT_ROOT, Rig, ensure_env, why_not_available


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
    down = add("down", help="stop every host of the rig, whoever started it")
    down.add_argument("--purge", action="store_true", help="also delete the rig directory (keys, homes)")
    status = add("status", help="list hosts and whether they answer")
    status.add_argument("--json", action="store_true")
    ssh = add("ssh", help="run a command on a host as the rig user")
    ssh.add_argument("name")
    ssh.add_argument("command", nargs=argparse.REMAINDER)
    args = ap.parse_args(argv)

    if args.cmd == "up":
        reason = why_not_available()
        if reason:
            print(f"rig not available: {reason}", file=sys.stderr)
            return 2
        t0 = time.monotonic()
        try:
            rig = Rig(args.names.split(",") if args.names else args.n, root=args.root, user=args.user,
                      first_ip=args.first_ip).up(cleanup_at_exit=False)
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
        command = args.command[1:] if args.command[:1] == ["--"] else args.command
        return subprocess.run([*rig.ssh_argv(args.name), "--", shlex.join(command)]).returncode
    return 0


def _print_status(rig: Rig) -> None:
    print(f"{'NAME':<14} {'IP':<15} {'INIT PID':>8}  RUNNING  SSH")
    for s in rig.status():
        print(f"{s['name']:<14} {s['ip']:<15} {s['init_pid'] or '-':>8}  {str(s['running']):<7}  {s['ssh']}")


if __name__ == "__main__":
    sys.exit(main())
