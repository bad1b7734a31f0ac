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


def node_logic():
    """roles/ray_node/module_utils/ray_node.py, the node module's pure logic (standard library only), as a module:
    the controller applies the node's own rules (the dashboard's URL) instead of a copy of them."""
    import importlib.util

    path = ansible_root() / "roles" / "ray_node" / "module_utils" / "ray_node.py"
    spec = importlib.util.spec_from_file_location("sage_ray_node_logic", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# What the package shares with the roles is the collection sage.cluster, in playbooks/collections (its README.md):
# Ansible finds it next to the playbooks; this package puts that collections root on sys.path, the one place
# it does, so `ansible_collections.sage.cluster` imports the same in a checkout and in an installed wheel.
_COLLECTIONS = str(ansible_root() / "playbooks" / "collections")
if _COLLECTIONS not in sys.path:
    sys.path.insert(0, _COLLECTIONS)

from ansible_collections.sage.cluster.plugins.module_utils import source  # noqa: E402  (after the path above)
