"""Each default is written once: config.py's SCHEMA for what the config sets, a role's defaults/main.yml for its
own variables. `python -m sage_cluster.roledoc` writes them where the roles and docs/ops.md repeat them; these
tests fail as soon as a copy drifts, and show that the generator mends it."""
from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest
import yaml

from ansible_collections.sage.cluster.plugins.plugin_utils import config

from sage_cluster import roledoc


REPO = Path(__file__).resolve().parents[2]


def test_roles_and_docs_hold_the_generated_defaults() -> None:
    assert roledoc.drift(REPO) == [], "run `python -m sage_cluster.roledoc`"


def test_both_roles_name_one_deploy_record() -> None:
    """sage_deploy writes the node's deploy record where ray_node's status and doctor read it."""
    defaults = {role: yaml.safe_load((REPO / "roles" / role / "defaults" / "main.yml").read_text())
                for role in roledoc.ROLES}
    assert defaults["sage_deploy"]["sage_deploy_record"] == defaults["ray_node"]["ray_node_deploy_record"]


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    """The roles, provision.yml and docs/ops.md as a checkout has them, to change."""
    shutil.copytree(REPO / "roles", tmp_path / "roles")
    (tmp_path / "playbooks").mkdir()
    shutil.copy(REPO / roledoc.PROVISION_PLAYBOOK, tmp_path / roledoc.PROVISION_PLAYBOOK)
    (tmp_path / "docs").mkdir()
    shutil.copy(REPO / roledoc.DOC, tmp_path / roledoc.DOC)
    return tmp_path


def specs(root: Path, role: str) -> dict:
    return roledoc.options((root / "roles" / role / "meta" / "argument_specs.yml").read_text())


def doc_row(root: Path, name: str) -> str:
    return next(line for line in (root / roledoc.DOC).read_text().splitlines() if line.startswith(f"| `{name}` |"))


def test_a_new_schema_default_reaches_every_copy(copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    schema = tuple(dataclasses.replace(k, default=6390) if k.dotted == "head.head_port" else k for k in config.SCHEMA)
    monkeypatch.setattr(config, "SCHEMA", schema)
    assert sorted(roledoc.drift(copy)) == [f"{roledoc.DOC} differs from what the schema gives",
                                           "roles/ray_node/defaults/main.yml differs from what the schema gives",
                                           "roles/ray_node/meta/argument_specs.yml differs from what the schema gives"]
    assert roledoc.write(copy) == []
    assert roledoc.drift(copy) == []
    defaults = (copy / "roles" / "ray_node" / "defaults" / "main.yml").read_text()
    assert "ray_node_head_port: 6390\n" in defaults
    assert specs(copy, "ray_node")["ray_node_head_port"]["default"] == 6390
    assert "| `6390` |" in doc_row(copy, "ray_node_head_port")
    # Only the value changed: the comments stand as their authors wrote them.
    before = (REPO / "roles" / "ray_node" / "defaults" / "main.yml").read_text()
    assert defaults == before.replace("ray_node_head_port: 6379\n", "ray_node_head_port: 6390\n")


def test_a_copy_edited_by_hand_is_found_and_mended(copy: Path) -> None:
    role = copy / "roles" / "sage_deploy"
    defaults = role / "defaults" / "main.yml"
    defaults.write_text(defaults.read_text().replace("sage_deploy_install_timeout: 1200",
                                                     "sage_deploy_install_timeout: 5"))
    spec_file = role / "meta" / "argument_specs.yml"
    spec_file.write_text(spec_file.read_text().replace("        default: true\n", "        default: false\n"))
    doc = copy / roledoc.DOC
    doc.write_text(doc.read_text().replace('| `sage_deploy_record` | str | `"~/.sage/deploy.json"` |',
                                           '| `sage_deploy_record` | list | `"~/old.json"` |'))
    assert len(roledoc.drift(copy)) == 3
    roledoc.write(copy)
    assert roledoc.drift(copy) == []
    assert yaml.safe_load(defaults.read_text())["sage_deploy_install_timeout"] == 1200  # the schema's
    assert specs(copy, "sage_deploy")["sage_deploy_strict"]["default"] is True  # the role's own default
    assert '| `sage_deploy_record` | str | `"~/.sage/deploy.json"` |' in doc_row(copy, "sage_deploy_record")


def test_sage_provision_takes_the_defaults_of_the_variables_provision_yml_hands_it(
        copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """provision.yml sets sage_provision_python_path from ray_node_python_path (remote.python_path), and so on: a
    new default of such a config key reaches sage_provision's three copies too; its own variables stay its own."""
    assert roledoc.provision_sources(copy)["sage_provision_timeout"] == "sage_deploy_install_timeout"
    schema = tuple(dataclasses.replace(k, default=600) if k.dotted == "deploy.install_timeout" else k
                   for k in config.SCHEMA)
    monkeypatch.setattr(config, "SCHEMA", schema)
    assert "roles/sage_provision/defaults/main.yml differs from what the schema gives" in roledoc.drift(copy)
    roledoc.write(copy)
    assert roledoc.drift(copy) == []
    assert yaml.safe_load((copy / "roles" / "sage_provision" / "defaults" / "main.yml").read_text())[
        "sage_provision_timeout"] == 600
    assert specs(copy, "sage_provision")["sage_provision_timeout"]["default"] == 600
    assert "| `600` |" in doc_row(copy, "sage_provision_timeout")
    # The ssh entry point's option is covered as main's are; a variable of its own keeps its own default.
    assert specs(copy, "sage_provision")["sage_provision_ssh_password"]["default"] == ""
    assert specs(copy, "sage_provision")["sage_provision_wheelhouse"]["default"] is False


def test_a_variable_with_no_place_is_named(copy: Path) -> None:
    defaults = copy / "roles" / "ray_node" / "defaults" / "main.yml"
    defaults.write_text(defaults.read_text().replace("ray_node_head_port: 6379\n", ""))
    problems = roledoc.drift(copy)
    assert "roles/ray_node/defaults/main.yml: no ray_node_head_port (the config sets it): add it with a comment " \
           "saying what it is" in problems


def test_check_exits_1_and_says_how_to_fix(copy: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setattr(roledoc, "ansible_root", lambda: copy)
    assert roledoc.main(["--check"]) == 0
    spec_file = copy / "roles" / "ray_node" / "meta" / "argument_specs.yml"
    spec_file.write_text(spec_file.read_text().replace("        default: 90\n", "        default: 9\n"))
    assert roledoc.main(["--check"]) == 1
    err = capsys.readouterr().err
    assert "roles/ray_node/meta/argument_specs.yml differs" in err and "python -m sage_cluster.roledoc" in err
