#!/usr/bin/env python3
"""Ansible inventory source: the sage config ($SAGE_CONFIG, else the file `sage` would find) as an inventory.

For ops staff and AWX, through the same Python code as the `sage` CLI:
    SAGE_CONFIG=~/.sage/config.yaml ansible-inventory -i inventory/sage_inventory.py --graph
    ansible-playbook -i inventory/sage_inventory.py playbooks/cluster.yml -e sage_action=start
"""
import json
import sys
from pathlib import Path

# Run from a checkout (AWX project, ops staff) without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sage_cluster import config, inventory, security  # noqa: E402


def main(argv: list[str]) -> int:
    try:
        cfg = config.load()
        # ansible-playbook runs this source before it acts: make the token and known_hosts dir the run needs.
        security.prepare_controller(cfg)
    except config.ConfigError as exc:
        print(f"sage inventory: {exc}", file=sys.stderr)
        return 2
    for line in cfg.warnings:
        print(f"sage inventory: warning: {line}", file=sys.stderr)
    data = inventory.as_script_json(inventory.build(cfg))
    if len(argv) > 1 and argv[1] == "--host":
        print(json.dumps(data["_meta"]["hostvars"].get(argv[2] if len(argv) > 2 else "", {})))
    else:
        print(json.dumps(data, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
