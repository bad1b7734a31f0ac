"""The collection sage.cluster as Ansible's own tools see it: ansible-doc renders every module and role, from the
checkout and from the tarball `ansible-galaxy collection build` makes, installed where the checkout is out of
sight."""
from __future__ import annotations

import ast
import importlib
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import yaml

import sage_cluster  # noqa: F401  (puts the collection sage.cluster on sys.path)
from tests.conftest import user_env

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent  # the ansible-core of the Python running the tests
MODULES = sorted(p.stem for p in (REPO / "plugins" / "modules").glob("*.py") if p.name != "__init__.py")
FRAGMENTS = "ansible_collections.sage.cluster.plugins.doc_fragments"
ROLES = sorted(p.parent.parent.name for p in (REPO / "roles").glob("*/meta/argument_specs.yml"))


def module_doc(module: str) -> dict:
    tree = ast.parse((REPO / "plugins" / "modules" / f"{module}.py").read_text())
    return next(yaml.safe_load(node.value.value) for node in tree.body
                if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "DOCUMENTATION")


def documented_options(module: str) -> set[str]:
    """The option names a module documents: its DOCUMENTATION's and those of the collection's doc fragments it
    extends, read from the source: an option ansible-doc leaves out fails the test."""
    doc = module_doc(module)
    names = set(doc.get("options") or {})
    for fragment in doc.get("extends_documentation_fragment") or []:
        if fragment.startswith("sage.cluster."):
            name = fragment.split(".")[2]
            fragment_doc = importlib.import_module(f"{FRAGMENTS}.{name}").ModuleDocFragment.DOCUMENTATION
            names |= set(yaml.safe_load(fragment_doc).get("options") or {})
    return names


def role_options(role: str) -> set[str]:
    specs = yaml.safe_load((REPO / "roles" / role / "meta" / "argument_specs.yml").read_text())["argument_specs"]
    return {name for entry in specs.values() for name in entry.get("options") or {}}


def ansible_doc(args: list[str], home: Path, collections: Path, cwd: Path) -> dict[str, str]:
    """Run ansible-doc on several plugins at once; {plugin name: its rendered text, header line included}."""
    env = user_env(home, ANSIBLE_COLLECTIONS_PATH=str(collections), ANSIBLE_COLLECTIONS_SCAN_SYS_PATH="false",
                   ANSIBLE_NOCOLOR="1")
    proc = subprocess.run([str(BIN / "ansible-doc"), *args], capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=300, stdin=subprocess.DEVNULL)
    # (A module or fragment of ours not found is a warning naming it, not a failure; ansible-core 2.21 warns of
    # its own too, e.g. of a collection of its own under a path that may have "sage" in it.)
    warnings = re.findall(r"^\[WARNING\].*", proc.stderr, re.M)
    assert proc.returncode == 0 and not [w for w in warnings if "sage.cluster" in w], proc.stderr
    sections = re.split(r"^> (?:MODULE|ROLE:) ", proc.stdout, flags=re.M)[1:]
    return {section.split()[0].strip("*"): section for section in sections}  # no colour: bold is *name*


def assert_renders(home: Path, collections: Path, cwd: Path, root: Path) -> None:
    """Every module and role of the collection renders from `collections`, found at `root`, with every option."""
    modules = ansible_doc([f"sage.cluster.{m}" for m in MODULES], home, collections, cwd)
    assert sorted(modules) == [f"sage.cluster.{m}" for m in MODULES]
    for module in MODULES:
        text = modules[f"sage.cluster.{module}"]
        assert f"({root}/plugins/modules/{module}.py)" in text.splitlines()[0], text.splitlines()[0]
        options = re.search(r"^OPTIONS.*?(?=^[A-Z][A-Z ]+:)", text, re.S | re.M).group(0)
        for option in documented_options(module):
            assert re.search(rf"^[-=] {option}\b", options, re.M), f"{module}: option {option} is not shown"
        assert "EXAMPLES:" in text and "RETURN VALUES:" in text and "AUTHOR:" in text, module
    roles = ansible_doc(["-t", "role", *[f"sage.cluster.{r}" for r in ROLES]], home, collections, cwd)
    assert sorted(roles) == [f"sage.cluster.{r}" for r in ROLES]
    for role in ROLES:
        text = roles[f"sage.cluster.{role}"]
        assert f"({root})" in text.splitlines()[0], text.splitlines()[0]
        for option in role_options(role):
            assert re.search(rf"^[-=] {option}\b", text, re.M), f"role {role}: option {option} is not shown"


def test_every_action_plugin_has_a_documented_module():
    actions = {p.stem for p in (REPO / "plugins" / "action").glob("*.py") if p.name != "__init__.py"}
    assert actions <= set(MODULES), f"action plugins without a module file to document them: {actions - set(MODULES)}"
    assert {"sage_ray_node", "sage_rsync", "sage_key_login"} <= set(MODULES) and ROLES


def test_the_action_only_modules_document_the_options_their_action_plugin_checks():
    """validate-modules compares a real module's docs with its argument spec; an action plugin's ARGS only here."""
    fields = ("type", "required", "default", "elements", "choices")
    checked = 0
    for module in MODULES:
        action = importlib.import_module(f"ansible_collections.sage.cluster.plugins.action.{module}").ActionModule
        if not getattr(action, "ARGS", None):
            continue  # runs the module, whose argument spec validate-modules compares
        checked += 1
        doc = module_doc(module)["options"]
        assert sorted(doc) == sorted(action.ARGS), module
        for name, spec in action.ARGS.items():
            assert {k: doc[name].get(k) for k in fields} == {k: spec.get(k) for k in fields}, f"{module}: {name}"
    assert checked >= 4


def test_ansible_doc_renders_every_module_and_role_from_the_checkout(tmp_path: Path):
    assert_renders(tmp_path, REPO / "playbooks" / "collections", tmp_path,
                   REPO / "playbooks" / "collections" / "ansible_collections" / "sage" / "cluster")


def test_the_built_collection_installs_and_documents_itself_outside_the_checkout(tmp_path: Path):
    """What ops staff do: build the tarball, install it into an empty collections path, read the docs. Every
    command runs outside the checkout (no ansible.cfg of the repo) with only that path to find collections."""
    home, built, installed = tmp_path / "home", tmp_path / "built", tmp_path / "collections"
    home.mkdir()
    installed.mkdir()
    env = user_env(home, ANSIBLE_COLLECTIONS_PATH=str(installed), ANSIBLE_COLLECTIONS_SCAN_SYS_PATH="false")
    proc = subprocess.run([str(BIN / "ansible-galaxy"), "collection", "build", "--output-path", str(built), str(REPO)],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    version = yaml.safe_load((REPO / "galaxy.yml").read_text())["version"]
    tarball = built / f"sage-cluster-{version}.tar.gz"
    with tarfile.open(tarball) as tar:
        names = set(tar.getnames())
    for shipped in ("README.md", "LICENSE", "meta/runtime.yml", "playbooks/cluster.yml", "playbooks/status.yml",
                    "inventory_templates", "roles/ray_node/meta/argument_specs.yml", "plugins/module_utils/ray_node.py",
                    "plugins/action/sage_rsync.py", "plugins/plugin_utils/rsync.py", "plugins/doc_fragments",
                    *[f"plugins/modules/{m}.py" for m in MODULES]):
        assert shipped in names, f"{shipped} is missing from the collection"
    left_out = {"sage_cluster", "tests", "bench", "awx", "molecule", ".ci", "pyproject.toml", "ansible.cfg",
                "collections", "execution-environment.yml"}
    leaked = sorted(n for n in names if n.split("/")[0] in left_out or n.startswith("playbooks/collections")
                    or n.endswith((".png", ".pyc")) or "__pycache__" in n)
    assert not leaked, f"the collection carries what is not its own: {leaked[:20]}"

    proc = subprocess.run([str(BIN / "ansible-galaxy"), "collection", "install", "-p", str(installed), str(tarball)],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    root = installed / "ansible_collections" / "sage" / "cluster"
    assert (root / "MANIFEST.json").is_file(), proc.stdout
    assert_renders(home, installed, tmp_path, root)
