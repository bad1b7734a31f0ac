"""sage-cluster: a Ray cluster on your own machines, over SSH, with Ansible."""
import sys
from pathlib import Path

__version__ = "0.1.0"

_HERE = Path(__file__).resolve().parent
# The collection sage.cluster, where everything a playbook runs lives: in a checkout the repository root is the
# collection root, and playbooks/collections/ansible_collections/sage/cluster links back to it; a wheel carries a
# copy under _ansible/ (pyproject.toml).
_CANDIDATES = ((_HERE.parent, _HERE.parent / "playbooks" / "collections"),
               (_HERE / "_ansible" / "ansible_collections" / "sage" / "cluster", _HERE / "_ansible"))


def _find() -> tuple[Path, Path]:
    for root, collections in _CANDIDATES:
        if (root / "galaxy.yml").is_file() and (collections / "ansible_collections").is_dir():
            return root, collections
    raise RuntimeError(f"sage-cluster is installed without its collection (looked in {_HERE.parent} and "
                       f"{_HERE / '_ansible'})")


def ansible_root() -> Path:
    """The collection's root: playbooks/, roles/, plugins/, inventory_templates/ and ansible.cfg."""
    return _find()[0]


def collections_path() -> Path:
    """The directory that holds ansible_collections/sage/cluster: what sage gives Ansible as its collections path."""
    return _find()[1]


# The one sys.path entry of the project: this package uses the collection's shared code (the collection never
# imports this package), as `ansible_collections.sage.cluster...`, the same in a checkout and an installed wheel.
if str(collections_path()) not in sys.path:
    sys.path.insert(0, str(collections_path()))

# ray_node: the node module's pure logic, so the controller applies the node's own rules (the dashboard's URL)
# instead of a copy of them; source: what a deploy sends.
from ansible_collections.sage.cluster.plugins.module_utils import ray_node, source  # noqa: E402,F401  (after the path above)
