"""Each default is written in Python once (config.py's SCHEMA, source.EXCLUDES); the roles keep theirs
as plain YAML for ops staff to read. These tests fail as soon as the copies drift apart:

    SCHEMA --(inventory.role_vars)--> roles/*/defaults/main.yml == roles/*/meta/argument_specs.yml
                                      == docs/ops.md's role variable tables (tests/unit/test_awx.py checks those)

The node module takes no default for what the role passes (tests/unit/test_ray_node.py checks that).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from sage_cluster import config, inventory

REPO = Path(__file__).resolve().parents[2]
ROLES = ("ray_node", "sage_deploy")

# Role variables whose default differs from what the default config renders to, on purpose.
BY_DESIGN = {
    # The role alone runs without a token file (auth off); the config turns token auth on and names the file.
    "ray_node_auth_token_file",
    # The role copies its own checkout; the config's deploy.source "." resolves where sage runs.
    "sage_deploy_source",
}


def role_defaults(role: str) -> dict[str, Any]:
    return yaml.safe_load((REPO / "roles" / role / "defaults" / "main.yml").read_text())


def role_specs(role: str) -> dict[str, dict[str, Any]]:
    data = yaml.safe_load((REPO / "roles" / role / "meta" / "argument_specs.yml").read_text())
    return data["argument_specs"]["main"]["options"]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The role variables of the config with every key at its default, as the inventory gives them to a worker."""
    cfg = config.parse("", Path("defaults.yaml"))
    inv = inventory.build(cfg)["all"]["children"]["sage_cluster"]
    return {**inv["vars"], **inv["children"]["sage_workers"]["vars"]}


@pytest.mark.parametrize("role", ROLES)
def test_role_defaults_are_the_configs_defaults(rendered: dict[str, Any], role: str) -> None:
    defaults = role_defaults(role)
    from_config = {k: v for k, v in rendered.items() if k.startswith(f"{role}_") and k not in BY_DESIGN}
    assert from_config, "the inventory sets none of the role's variables"
    assert {k: defaults.get(k, "(not in defaults/main.yml)") for k in from_config} == from_config


@pytest.mark.parametrize("role", ROLES)
def test_argument_specs_declare_the_role_defaults(role: str) -> None:
    defaults, specs = role_defaults(role), role_specs(role)
    assert sorted(specs) == sorted(defaults), "defaults/main.yml and argument_specs.yml name other variables"
    assert {k: spec.get("default") for k, spec in specs.items()} == defaults


def test_both_roles_name_one_deploy_record() -> None:
    """sage_deploy writes the node's deploy record where ray_node's status and doctor read it."""
    assert role_defaults("sage_deploy")["sage_deploy_record"] == role_defaults("ray_node")["ray_node_deploy_record"]
