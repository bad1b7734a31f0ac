# Copyright: sage-cluster developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

# Documentation only: the action plugin plugins/action/sage_rsync.py does the work, on the controller.

from __future__ import annotations

DOCUMENTATION = r"""
module: sage_rsync
short_description: Copy a local directory to the task's host with one rsync run on the controller
description:
  - Runs C(rsync) on the controller, over the exact ssh command line Ansible's connection builds for the host (its
    user, key, port, host key policy, known_hosts and ControlPath), so the copy rides the connection's control
    master. No module process is started for it, on the controller or on the host.
  - Never deletes on the host (no C(--delete)), since the destination may be the user's home, holding files this
    copy did not put there. Directory times are not restored (C(--omit-dir-times)), so an install writing into them
    does not make the next copy report a change.
  - Unlike M(ansible.posix.synchronize), which starts a module process on the controller for every host, this runs
    rsync straight from Ansible's worker process.
  - Needs key-based SSH over the C(ssh) connection; a password cannot reach rsync's own ssh.
extends_documentation_fragment:
  - sage.cluster.attributes
attributes:
  check_mode:
    details: Runs rsync with C(--dry-run), so the result lists what would be copied and C(changed) tells whether
      anything would be.
  platform:
    details: C(rsync) on the controller and on the host.
options:
  src:
    description:
      - The directory on the controller. With a trailing C(/) its contents are copied into O(dest), without one the
        directory itself.
    type: path
    required: true
  dest:
    description:
      - Where on the host. A relative path is relative to the login user's home; C(~) is not expanded.
    type: str
    required: true
  exclude:
    description: rsync exclude patterns (C(--exclude)), e.g. C(.git) or C(build/).
    type: list
    elements: str
    default: []
requirements:
  - rsync on the controller and on the host
notes:
  - The role sage.cluster.sage_deploy uses it; with C(ansible_connection=local) it is skipped there.
seealso:
  - module: ansible.posix.synchronize
"""

EXAMPLES = r"""
- name: Copy the project to the node
  sage.cluster.sage_rsync:
    src: /home/me/project/
    dest: project
    exclude: [.git, __pycache__, build/]
"""

RETURN = r"""
changes:
  description: rsync's itemized changes (C(--itemize-changes)), the first 100 lines.
  returned: always
  type: list
  elements: str
  sample: [">f+++++++++ main.py"]
rc:
  description: rsync's exit status.
  returned: always
  type: int
  sample: 0
"""
