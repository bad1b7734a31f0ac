"""sage_rsync: copy a local directory to the task's host with one rsync run on the controller.

Why not ansible.posix.synchronize: it starts a module process on the controller for every host (about 0.4 s of
CPU each), which made a no-op deploy of 32 hosts take 15 s on two cores. This plugin runs rsync straight from the
worker process, over the same ssh command line Ansible's connection builds for the host: same user, key, port,
host key policy, known_hosts and ControlPath, so rsync rides the connection's control master.

Options: src (local directory; a trailing / copies its contents), dest (path on the host), exclude (patterns).
Never deletes on the host. Check mode runs rsync --dry-run. changed is true when rsync itemized any change.
"""
from __future__ import annotations

import shlex
import subprocess

from ansible.errors import AnsibleActionFail
from ansible.module_utils.common.text.converters import to_text
from ansible_collections.sage.cluster.plugins.plugin_utils.checked_action import CheckedAction

ARGS = {"src": dict(type="str", required=True), "dest": dict(type="str", required=True),
        "exclude": dict(type="list", elements="str", default=[])}


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


class ActionModule(CheckedAction):
    ARGS = ARGS

    def act(self, result, args, task_vars):
        conn = self._connection
        if conn.transport not in ("ssh", "ansible.builtin.ssh"):
            raise AnsibleActionFail(f"sage_rsync needs the ssh connection, not {conn.transport}")
        if conn.get_option("password"):
            # Ansible would feed the password to sshpass through a pipe that rsync's ssh never sees.
            raise AnsibleActionFail("sage_rsync needs key-based SSH (ssh.key_path); a password cannot reach rsync")
        argv = rsync_argv(ssh_argv(conn), conn.get_option("host"), args["src"], args["dest"], args["exclude"],
                          dry_run=bool(self._task.check_mode))
        proc = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False)
        changes = proc.stdout.splitlines()
        result.update(changed=bool(changes), rc=proc.returncode, changes=changes[:100])
        if proc.returncode != 0:
            # ssh's and rsync's own words, whole, as Ansible's ssh connection reports its failures.
            result.update(failed=True, msg=f"rsync to {args['dest']} failed (exit {proc.returncode}): "
                                           f"{proc.stderr.strip() or 'no output'}")
        return result
