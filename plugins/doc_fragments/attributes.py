"""What every module of sage.cluster is, as Ansible's attributes say it; each module adds its own details.
The descriptions are ansible.builtin.action_common_attributes' (and its .flow part's) words, here so that a module
names one fragment, not three."""
from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
author: sage-cluster developers (!UNKNOWN)  # validate-modules asks for a GitHub handle; the project has none
attributes:
  action:
    description: Indicates this has a corresponding action plugin so some parts of the options can be executed on the
      controller.
    support: full
  async:
    description: Supports being used with the C(async) keyword.
    support: none
  bypass_host_loop:
    description: Forces a 'global' task that does not execute per host.
    support: none
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: none
  platform:
    description: Target OS/families that can be operated against.
    support: N/A
    platforms: posix
"""
