"""sage-cluster: a Ray cluster on your own machines, over SSH, with Ansible."""
from pathlib import Path

__version__ = "0.1.0"


def ansible_root() -> Path:
    """Where playbooks/, roles/, inventory_templates/ and ansible.cfg live: the source tree, or the wheel's copy."""
    here = Path(__file__).resolve().parent
    for root in (here.parent, here / "_ansible"):
        if (root / "playbooks").is_dir() and (root / "roles").is_dir():
            return root
    raise RuntimeError(f"sage-cluster is installed without its playbooks (looked in {here.parent} and {here / '_ansible'})")
