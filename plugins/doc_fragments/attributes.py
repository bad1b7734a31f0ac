"""What every module of sage.cluster is, as Ansible's attributes say it; each module adds its own details.
A module lists it after ansible.builtin.action_common_attributes and its .flow part, which describe the attributes."""
from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
author: sage-cluster developers (!UNKNOWN)  # validate-modules asks for a GitHub handle; the project has none
attributes:
  action:
    support: full
  async:
    support: none
  bypass_host_loop:
    support: none
  check_mode:
    support: full
  diff_mode:
    support: none
  platform:
    platforms: posix
"""
