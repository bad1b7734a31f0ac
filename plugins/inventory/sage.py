# Copyright: sage-cluster developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The inventory plugin sage.cluster.sage: a sage config as an Ansible inventory."""
from __future__ import annotations

DOCUMENTATION = r"""
name: sage
short_description: A sage cluster's hosts, groups and variables, read from its sage config
version_added: 0.1.0
author: sage-cluster developers (!UNKNOWN)  # validate-modules asks for a GitHub handle; the project has none
description:
  - Reads a sage config (the file the C(sage) CLI reads) and gives Ansible the inventory C(sage) itself runs the
    playbooks with, through the same code. The group C(sage_cluster) holds the groups C(sage_head) (the head) and
    C(sage_workers) (every worker); the roles' variables come from the config's keys.
  - The inventory file's name (or that of the file it links to) must end in C(sage.yml) or C(sage.yaml).
  - Reading the inventory writes nothing. The Ray auth token file it names (C(~/.sage/ray_auth_token) of the user
    running Ansible) is made by the playbook run that needs it, on the controller.
  - A config that sage refuses fails the inventory with sage's own one-line message (what, where, how to fix).
    Set C(unparsed_is_failed = True) in the C([inventory]) section of C(ansible.cfg) (or
    C(ANSIBLE_INVENTORY_UNPARSED_FAILED=true)), so that the run then stops instead of matching no hosts.
requirements:
  - ruamel.yaml >= 0.18 (on the controller)
options:
  plugin:
    description: The name of this plugin, so that Ansible hands the file to it.
    required: true
    type: str
    choices: [sage.cluster.sage]
  config:
    description:
      - The sage config file. A relative path is relative to the directory of the inventory file.
      - Unset, the file C(sage) would read is used. In that order, C($SAGE_CONFIG), else the first that exists of
        the project's C(config/cluster.yaml) (the nearest directory up from the current one with C(.git) or
        C(pyproject.toml)), C(./config/cluster.yaml), C(~/.sage/cluster.yaml) and C(~/.sage/config.yaml); with none
        of them, this machine alone, as a one-node cluster.
    type: str
"""

EXAMPLES = r"""
# my.sage.yml: the cluster of one config file
plugin: sage.cluster.sage
config: ~/.sage/config.yaml

# Then, with the collection installed:
#   ansible-inventory -i my.sage.yml --graph
#   ansible-playbook -i my.sage.yml sage.cluster.cluster -e sage_action=start
#   ansible-playbook -i my.sage.yml sage.cluster.status
# Without config: the file $SAGE_CONFIG names, else the one sage finds (inventory/sage.yml in the repository).
"""

import os
from pathlib import Path

from ansible.errors import AnsibleParserError
from ansible.plugins.inventory import BaseInventoryPlugin
from ansible_collections.sage.cluster.plugins.plugin_utils import config, security
from ansible_collections.sage.cluster.plugins.plugin_utils import inventory as rendering


class InventoryModule(BaseInventoryPlugin):
    NAME = "sage.cluster.sage"
    # The variables are the config author's, as in the inventory file sage renders and Ansible's yaml plugin reads:
    # templates in them are meant (a local head's ansible_python_interpreter is "{{ ansible_playbook_python }}").
    trusted_by_default = True

    def verify_file(self, path):
        # Or a link to such a file, under any name (molecule links its inventory in as `hosts`).
        names = (path, os.path.realpath(path))
        return super().verify_file(path) and any(p.endswith(("sage.yml", "sage.yaml")) for p in names)

    def parse(self, inventory, loader, path, cache=True):
        super().parse(inventory, loader, path, cache)
        self._read_config_data(path)
        named = self.get_option("config")
        if named:
            named = Path(path).parent / Path(named).expanduser()
        try:
            cfg = config.load(named, named_by=f"config: in {path}")
            # The run would fail on it later, on the first node: say so now, as sage does before a run.
            security.check_redis_password_file(cfg)
        except config.ConfigError as exc:
            raise AnsibleParserError(str(exc)) from None
        for line in cfg.warnings:
            self.display.warning(f"sage config: {line}")
        self._add_group("all", rendering.build(cfg)["all"], None)

    def _add_group(self, name, group, parent):
        """One group of the rendered inventory, with its variables, hosts and child groups."""
        group = group or {}
        self.inventory.add_group(name)
        if parent:
            self.inventory.add_child(parent, name)
        for key, value in (group.get("vars") or {}).items():
            self.inventory.set_variable(name, key, value)
        for host, hostvars in (group.get("hosts") or {}).items():
            self.inventory.add_host(host, group=name)
            for key, value in (hostvars or {}).items():
                self.inventory.set_variable(host, key, value)
        for child, sub in (group.get("children") or {}).items():
            self._add_group(child, sub, name)
