"""sage-cluster: a Ray cluster on your own machines, over SSH, with Ansible."""
import sys
from pathlib import Path

__version__ = "0.1.0"


def ansible_root() -> Path:
    """Where playbooks/, roles/, inventory_templates/ and ansible.cfg live: the source tree, or the wheel's copy."""
    here = Path(__file__).resolve().parent
    for root in (here.parent, here / "_ansible"):
        if (root / "playbooks").is_dir() and (root / "roles").is_dir():
            return root
    raise RuntimeError(f"sage-cluster is installed without its playbooks (looked in {here.parent} and {here / '_ansible'})")


# What the package shares with the roles is the collection sage.cluster, in playbooks/collections (its README.md):
# Ansible finds it next to the playbooks; this package puts that collections root on sys.path, the one place
# it does, so `ansible_collections.sage.cluster` imports the same in a checkout and in an installed wheel.
_COLLECTIONS = str(ansible_root() / "playbooks" / "collections")
if _COLLECTIONS not in sys.path:
    sys.path.insert(0, _COLLECTIONS)

# ray_node: the node module's pure logic, so the controller applies the node's own rules (the dashboard's URL)
# instead of a copy of them; source: what a deploy sends.
from ansible_collections.sage.cluster.plugins.module_utils import ray_node, source  # noqa: E402,F401  (after the path above)
