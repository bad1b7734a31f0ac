"""The collection's one-way dependency, kept: sage_cluster may use the collection sage.cluster, never the reverse,
and the code modules carry to the nodes (module_utils) needs nothing a node lacks."""
from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FORBIDDEN = ("sys.path", "import sage_cluster", "from sage_cluster")
# What module_utils may import: it runs inside AnsiballZ on nodes that have Python and nothing else.
ALLOWED_PREFIXES = ("ansible.module_utils", "ansible_collections.sage.cluster.plugins.module_utils")


def collection_files() -> list[Path]:
    return sorted(p for top in ("plugins", "roles") for p in (REPO / top).rglob("*")
                  if p.is_file() and "__pycache__" not in p.parts)


def test_nothing_in_plugins_or_roles_imports_sage_cluster_or_touches_sys_path() -> None:
    files = collection_files()
    assert len(files) > 20  # the tree was found
    found = [f"{p.relative_to(REPO)}:{n}: {line.strip()}" for p in files
             for n, line in enumerate(p.read_text(errors="replace").splitlines(), 1)
             if any(word in line for word in FORBIDDEN)]
    assert found == [], "the collection must not depend on sage_cluster:\n" + "\n".join(found)


def imports(path: Path) -> list[str]:
    """Every module a file imports, at any depth (an import inside a function counts too)."""
    names = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names.append("." * node.level + (node.module or ""))
    return names


def allowed(name: str) -> bool:
    return (name == "__future__" or name.split(".")[0] in sys.stdlib_module_names
            or any(name == p or name.startswith(p + ".") for p in ALLOWED_PREFIXES))


@pytest.mark.parametrize("path", sorted((REPO / "plugins" / "module_utils").glob("*.py")), ids=lambda p: p.name)
def test_module_utils_import_only_the_standard_library_and_ansibles_module_utils(path: Path) -> None:
    assert [name for name in imports(path) if not allowed(name)] == []


def test_the_import_rule_can_fail(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import json\nfrom ansible.module_utils.basic import AnsibleModule\n\ndef f():\n    import yaml\n"
                   "    from ansible.plugins.action import ActionBase\n    from . import sibling\n")
    assert [name for name in imports(bad) if not allowed(name)] == ["yaml", "ansible.plugins.action", "."]
