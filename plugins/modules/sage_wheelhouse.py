# Copyright: sage-cluster developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

# Documentation only: the action plugin plugins/action/sage_wheelhouse.py does the work, on the controller.

from __future__ import annotations

DOCUMENTATION = r"""
module: sage_wheelhouse
short_description: Send the wheels of a Ray release, built on the controller, to a node whose pip reaches no index
description:
  - Builds the wheels of C(ray[default]==ray_version) for the node's Python and platform on the controller, with
    the controller's pip and index (C(pip download --only-binary)), once per release, Python and platform; they are
    kept in the controller's C(~/.sage/wheels/).
  - Copies them with rsync (as M(sage.cluster.sage_rsync) does) to C(~/.sage/wheels/<key>) on the node, where
    M(sage.cluster.sage_provision) installs them with its O(sage.cluster.sage_provision#module:wheel_dir) option.
  - For glibc Linux nodes only; a node without glibc fails with one line saying so.
extends_documentation_fragment:
  - sage.cluster.attributes
attributes:
  check_mode:
    details: Reports a change and the RV(wheel_dir) it would fill, and builds and sends nothing.
  platform:
    details: The controller builds for glibc Linux nodes.
options:
  ray_version:
    description: The Ray release, e.g. C(2.60.0).
    type: str
    required: true
  python_version:
    description: The node's Python, major.minor, e.g. C(3.11).
    type: str
    required: true
  glibc:
    description: The node's glibc version, e.g. C(2.36); empty for a node without glibc (which fails).
    type: str
    default: ""
  machine:
    description: The node's machine, as C(uname -m) says, e.g. C(x86_64).
    type: str
    required: true
requirements:
  - rsync on the controller and on the node; key-based SSH
notes:
  - The role sage.cluster.sage_provision runs it with what M(sage.cluster.sage_provision) found at its prepare
    stage.
"""

EXAMPLES = r"""
- name: Send this machine's wheels of Ray
  sage.cluster.sage_wheelhouse:
    ray_version: 2.60.0
    python_version: "3.11"
    glibc: "2.36"
    machine: x86_64
  register: wheels

- name: Install Ray from those wheels
  sage.cluster.sage_provision:
    stage: install
    python_path: /opt/conda/envs/sage/bin/python
    ray_version: 2.60.0
    python_version: "3.11"
    wheel_dir: "{{ wheels.wheel_dir }}"
"""

RETURN = r"""
wheel_dir:
  description: The wheels' directory on the node.
  returned: always
  type: str
  sample: ~/.sage/wheels/ray-2.60.0-cp311-glibc2.36-x86_64
"""
