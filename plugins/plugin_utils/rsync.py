"""One rsync from the controller to a task's host, over the exact ssh command Ansible's connection runs for it.

Why not ansible.posix.synchronize: it starts a module process on the controller for every host (about 0.4 s of
CPU each), which made a no-op deploy of 32 hosts take 15 s on two cores. Here rsync runs straight from the
worker process, over the same ssh command line Ansible's connection builds for the host: same user, key, port,
host key policy, known_hosts and ControlPath, so rsync rides the connection's control master. Used by the
sage_rsync action (a deploy) and the sage_wheelhouse action (provision's wheels).
"""
from __future__ import annotations

import shlex
import subprocess

from ansible.errors import AnsibleActionFail
from ansible.module_utils.common.text.converters import to_text


def rsync_argv(ssh_argv: list[str], host: str, src: str, dest: str, exclude: list[str], dry_run: bool) -> list[str]:
    """The rsync command: an argv, never a shell string. rsync splits -e itself, honouring quotes."""
    target = f"[{host}]" if ":" in host else host  # an IPv6 address needs brackets in rsync's HOST:PATH
    # --omit-dir-times: an install on the node writes into the project's dirs (pip -e: *.egg-info); their times
    # are not the source's to restore, and would make every later deploy report a change.
    return ["rsync", "--archive", "--no-owner", "--no-group", "--omit-dir-times", "--compress", "--delay-updates",
            "--itemize-changes", *(["--dry-run"] if dry_run else []),
            *[f"--exclude={pattern}" for pattern in exclude],
            "-e", shlex.join(ssh_argv), "--", src, f"{target}:{dest}"]


def ssh_argv(conn) -> list[str]:
    """The exact ssh command Ansible runs for this host: options from ansible.cfg, inventory and CLI.

    The project's one use of a private ansible-core API. The ssh connection plugin has no public way to give
    its command line, and building one here would be a second copy of its option handling (ssh_args,
    common/extra args, port, user, key, ControlPath, host key policy). tests/unit/test_sage_rsync.py drives a
    real ssh connection plugin through this function, so a change in ansible-core fails there, not on a node.
    """
    return [to_text(a) for a in conn._build_command(conn.get_option("ssh_executable"), "ssh")]


def rsync(conn, src: str, dest: str, exclude: list[str], dry_run: bool) -> dict:
    """Copy src (a trailing / copies its contents) to dest on the connection's host; never deletes there.
    Returns changed (rsync itemized a change), rc, changes (the first 100), and failed/msg on failure."""
    if conn.transport not in ("ssh", "ansible.builtin.ssh"):
        raise AnsibleActionFail(f"rsync needs the ssh connection, not {conn.transport}")
    if conn.get_option("password"):
        # Ansible would feed the password to sshpass through a pipe that rsync's ssh never sees.
        raise AnsibleActionFail("rsync needs key-based SSH (ssh.key_path); a password cannot reach rsync")
    argv = rsync_argv(ssh_argv(conn), conn.get_option("host"), src, dest, exclude, dry_run)
    proc = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False)
    changes = proc.stdout.splitlines()
    result = {"changed": bool(changes), "rc": proc.returncode, "changes": changes[:100]}
    if proc.returncode != 0:
        # ssh's and rsync's own words, whole, as Ansible's ssh connection reports its failures.
        result.update(failed=True, msg=f"rsync to {dest} failed (exit {proc.returncode}): "
                                       f"{proc.stderr.strip() or 'no output'}")
    return result
