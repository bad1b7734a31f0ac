"""sage_key_login: key login to the task's host, set up with one password login when the key is not yet taken.

Runs on the controller over the host's own Ansible connection (its user, port, host key policy, known_hosts):
1. `true` with the key alone (Ansible's ssh connection without a password is key-only). Works: ok, not changed.
2. Otherwise, with the password (the play's sage_provision_ssh_password, never a task argument, so it is in no
   event): one fixed shell command that makes ~/.ssh (0700) and ~/.ssh/authorized_keys (0600) and appends the
   public key, read from stdin, unless that key is already there (whatever its options or comment).
   The password reaches ssh through the connection's ssh_askpass mechanism: shared memory read by Ansible's own
   askpass helper, no sshpass, in no process's arguments.
3. `true` with the key alone again: the proof. No control master of the password login is reused for it.
"""
from __future__ import annotations

import re

from ansible.errors import AnsibleActionFail, AnsibleConnectionFailure
from ansible_collections.sage.cluster.plugins.module_utils.node import AUTH, telling_line
from ansible_collections.sage.cluster.plugins.plugin_utils.checked_action import CheckedAction

ARGS = {"public_key_file": dict(type="path", required=True)}

# The public key on stdin; its key material (the second word) is looked for in every line, so a key already
# listed (with options or another comment) is never added twice. `set -f`: no globbing of the key's words.
ADD_KEY = r"""set -f; umask 077
mkdir -p "$HOME/.ssh" && chmod 700 "$HOME/.ssh" || exit 1
f="$HOME/.ssh/authorized_keys"
touch "$f" && chmod 600 "$f" || exit 1
IFS= read -r line || [ -n "$line" ] || exit 1
set -- $line
if awk -v k="$2" '{for (i = 1; i <= NF; i++) if ($i == k) found = 1} END {exit !found}' "$f"; then
  echo present
else
  if [ -s "$f" ] && [ -n "$(tail -c 1 "$f")" ]; then echo >> "$f"; fi
  printf '%s\n' "$line" >> "$f" && echo added
fi"""


def _reason(exc: Exception) -> str:
    """ssh's own last words ("user@host: Permission denied (publickey)."), without Ansible's preamble."""
    last = telling_line(str(exc).splitlines(), words=(), skip=("Permanently added",), none="ssh failed")
    words = re.search(r"\S+@\S+: .*$", last)
    return words.group(0) if words else last


class ActionModule(CheckedAction):
    ARGS = ARGS

    def act(self, result, args, task_vars):
        user = self._connection.get_option("remote_user") or "the user"
        failure = self._key_login()
        if failure is None:
            result.update(changed=False, sage={"ssh": "key login works"})
            return result
        password = self._templar.template((task_vars or {}).get("sage_provision_ssh_password") or "")
        if not password:
            # Not raised: the result's kind tells `sage cluster setup-ssh` which hosts to ask the password for.
            result.update(failed=True, kind=AUTH, sage={"ssh": "needs the password"},
                          msg=f"key login as {user} fails ({failure}) and no password was given")
            return result
        key_file = args["public_key_file"]
        if self._task.check_mode:
            result.update(changed=True, sage={"ssh": "would add the key with one password login"})
            return result
        try:
            with open(key_file, encoding="utf-8") as fh:
                public_key = fh.readline().strip()
        except OSError as exc:
            raise AnsibleActionFail(f"cannot read the public key {key_file}: {exc.strerror}") from None
        answer = self._with_password(password, public_key)
        failure = self._key_login()
        if failure is not None:
            raise AnsibleActionFail(f"the key is in ~/.ssh/authorized_keys, yet key login still fails ({failure}): "
                                    "sshd refuses keys when the home or ~/.ssh is writable by others")
        added = answer == "added"
        result.update(changed=added, sage={"ssh": "key added, key login works" if added else "key login works"})
        return result

    def _key_login(self) -> str | None:
        """None when `true` runs over a key-only login, else why not."""
        try:
            out = self._low_level_execute_command("true")
        except AnsibleConnectionFailure as exc:
            return _reason(exc)
        return None if out["rc"] == 0 else (out["stderr"].strip() or f"exit {out['rc']}")

    def _with_password(self, password: str, public_key: str) -> str:
        conn = self._connection
        ssh_args = conn.get_option("ssh_args")
        # No ControlMaster/ControlPersist: the proof afterwards must not ride this password login's connection.
        conn.set_option("ssh_args", "")
        conn.set_option("password", password)
        try:
            out = self._low_level_execute_command(ADD_KEY, in_data=(public_key + "\n").encode())
        except AnsibleConnectionFailure as exc:
            reason = _reason(exc)
            methods = re.search(r"Permission denied \(([^)]*)\)", reason)
            if methods and "password" not in methods.group(1).split(","):
                reason = f"the node takes no password, only {methods.group(1)} ({reason})"
            elif methods:
                reason = f"wrong password ({reason})"
            raise AnsibleActionFail(f"password login failed: {reason}") from None
        finally:
            conn.set_option("password", None)
            conn.set_option("ssh_args", ssh_args)
        if out["rc"] != 0:
            raise AnsibleActionFail(f"cannot add the key to ~/.ssh/authorized_keys: "
                                    f"{(out['stderr'] or out['stdout']).strip() or 'exit %d' % out['rc']}")
        return out["stdout"].strip().splitlines()[-1] if out["stdout"].strip() else ""
