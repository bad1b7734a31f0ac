# Copyright: sage-cluster developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

# Documentation only: the action plugin plugins/action/sage_source.py does the work, on the controller.

from __future__ import annotations

DOCUMENTATION = r"""
module: sage_source
short_description: What a deploy would send from the controller, and whether it may be sent at all
description:
  - Reads a directory on the controller (nothing on the host) and returns its revision, a content hash of the files
    M(sage.cluster.sage_rsync) would send with the same O(exclude) patterns; the revision of its packaging files
    alone; whether it is a pip-installable project; and why it must not be deployed, if so.
  - A source that is the root directory, the home directory, or contains C(~/.ssh), C(~/.sage), C(~/.ray) or the
    SSH key O(key_path) must not be deployed.
  - The answer is the same for every host, so run it with C(run_once).
extends_documentation_fragment:
  - sage.cluster.attributes
attributes:
  check_mode:
    details: It only reads the controller's files, so check mode gives the same answer.
  platform:
    details: Runs on the controller only.
options:
  src:
    description: The project directory on the controller.
    type: path
    required: true
  exclude:
    description: rsync exclude patterns; the files they match count for no revision.
    type: list
    elements: str
    default: []
  key_path:
    description: The SSH private key of the run; a source containing it must not be deployed. Empty for none.
    type: path
    default: ""
  strict:
    description:
      - V(true), a source that must not be deployed fails the task, so nothing is copied. V(false), the task
        succeeds and returns the reason in RV(problem), with empty revisions (status and doctor only compare).
    type: bool
    default: true
notes:
  - The role sage.cluster.sage_deploy runs it (tasks_from C(revision)), and so do playbooks status.yml and doctor.yml.
"""

EXAMPLES = r"""
- name: Revision of the project
  sage.cluster.sage_source:
    src: /home/me/project
    exclude: [.git, __pycache__]
    key_path: /home/me/.ssh/id_ed25519
  run_once: true
  register: source_info
"""

RETURN = r"""
revision:
  description: Content hash of the files a deploy sends; empty when there is a RV(problem).
  returned: always
  type: str
  sample: 3f2a9c1e0b7d5a44
packaging_revision:
  description: The same over pyproject.toml, setup.py, setup.cfg and requirements.txt only.
  returned: always
  type: str
packaged:
  description: Whether the source has pyproject.toml or setup.py (pip can install it).
  returned: always
  type: bool
problem:
  description: Why the source must not be deployed, or null when it may.
  returned: always
  type: str
  sample: /home/me is your home directory
"""
