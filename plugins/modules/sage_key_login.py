# Copyright: sage-cluster developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

# Documentation only: the action plugin plugins/action/sage_key_login.py does the work, on the controller.

from __future__ import annotations

DOCUMENTATION = r"""
module: sage_key_login
short_description: Key login to the task's host, set up with one password login when the key is not yet taken
description:
  - Runs on the controller over the host's own Ansible connection (its user, port, host key policy, known_hosts).
  - First runs C(true) with the key alone. When that works, nothing changes.
  - Otherwise, with the password in the variable C(sage_provision_ssh_password), logs in once and appends the public
    key to C(~/.ssh/authorized_keys) (making C(~/.ssh) 0700 and the file 0600), unless that key is listed there
    already, with whatever options or comment. The key is read from O(public_key_file) and sent on stdin.
  - Then runs C(true) with the key alone again, on a new connection, as the proof.
  - Without a password and without a working key login, the task fails with C(sage.ssh) set to
    C(needs the password), so a caller can ask for it.
extends_documentation_fragment:
  - sage.cluster.attributes
attributes:
  check_mode:
    details: Tries the key login; when the key would have to be added, reports a change and adds nothing.
  platform:
    details: The C(ssh) connection; a POSIX shell on the host.
options:
  public_key_file:
    description: The public key on the controller (the first line is the key), e.g. the private key's C(.pub).
    type: path
    required: true
notes:
  - The password is a play variable, never a task option, so it appears in no task event. It reaches ssh through
    Ansible's own askpass mechanism, not sshpass, and so in no process's arguments.
  - The role sage.cluster.sage_provision runs it (tasks_from C(ssh)).
"""

EXAMPLES = r"""
- name: Key login, adding the key with one password login where needed
  sage.cluster.sage_key_login:
    public_key_file: "{{ ansible_ssh_private_key_file }}.pub"
  vars:
    sage_provision_ssh_password: "{{ vault_ssh_password }}"
"""

RETURN = r"""
sage:
  description: The outcome, under C(ssh).
  returned: unless the password login, or adding the key, fails
  type: dict
  contains:
    ssh:
      description: C(key login works), C(key added, key login works), C(would add the key with one password login)
        (check mode), or C(needs the password).
      returned: unless the password login, or adding the key, fails
      type: str
      sample: key added, key login works
"""
