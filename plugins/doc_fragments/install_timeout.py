"""The option both install modules (the roles' sage_install and sage_provision) document alike."""
from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  timeout:
    description: Bound on the install, in seconds.
    type: int
    default: 1200
"""
