"""`python -m sage_cluster.roledoc [--check]`: the roles' default values, generated from the config's schema.

Each default is a fact in one place: a role variable that the config sets (through the inventory) takes the
default of its config key in config.py's SCHEMA; a variable of the role's own takes the value in its
defaults/main.yml. This writes those values where the roles and the docs repeat them, and nothing else:

    SCHEMA --(inventory)--> roles/*/defaults/main.yml      the values of the variables the config sets
           --(provision.yml)-->                           sage_provision's, given another role's variable
    defaults/main.yml   --> roles/*/meta/argument_specs.yml  `default:` of every variable
    argument_specs.yml  --> docs/ops.md, Role variables     the type and default cells of every variable

Each value is written in place, found by its variable's name; comments, descriptions and order stay as their
authors wrote them. A variable missing from a file is an error to fix by hand (it needs a description).
--check writes nothing, prints what differs and exits 1 (tests/unit/test_defaults.py runs it).
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml

from ansible_collections.sage.cluster.plugins.plugin_utils import config, inventory

from sage_cluster import ansible_root


ROLES = ("ray_node", "sage_deploy", "sage_provision")
# The playbook that hands sage_provision other roles' variables (its python_path is ray_node's, ...): those
# variables' defaults are its defaults.
PROVISION_PLAYBOOK = Path("playbooks") / "provision.yml"
# Variables the inventory sets that are not the schema's defaults: the node type is the group's, and the role's
# own defaults of these two differ on purpose (the role alone runs without a token file, and copies its own
# checkout; the config turns token auth on, and its deploy.source "." resolves where sage runs).
NOT_FROM_THE_SCHEMA = ("ray_node_type", "ray_node_auth_token_file", "sage_deploy_source")
DOC = Path("docs") / "ops.md"


def schema_defaults(root: Path) -> dict[str, Any]:
    """The role variables of the config with every key at its default, as the inventory gives them to a worker,
    and as provision.yml passes them on to sage_provision."""
    rendered = inventory.build(config.parse("", Path("defaults.yaml")))["all"]["children"]["sage_cluster"]
    variables = {**rendered["vars"], **rendered["children"]["sage_workers"]["vars"]}
    variables.update({name: variables[source] for name, source in provision_sources(root).items()})
    return {k: v for k, v in variables.items() if k.startswith(tuple(f"{r}_" for r in ROLES))
            and k not in NOT_FROM_THE_SCHEMA}


def provision_sources(root: Path) -> dict[str, str]:
    """sage_provision's variables that provision.yml sets to another variable ("{{ ray_node_python_path }}"):
    name -> that variable."""
    plays = yaml.safe_load((root / PROVISION_PLAYBOOK).read_text())
    sources = {}
    for play in plays:
        for task in play.get("tasks") or []:
            for name, value in (task.get("vars") or {}).items():
                if m := re.fullmatch(r"\{\{\s*(\w+)\s*\}\}", str(value)):
                    sources[name] = m.group(1)
    return sources


def yaml_value(value: Any) -> str:
    """A value as one line of YAML: plain where YAML reads it back as itself, else JSON (which YAML reads)."""
    if isinstance(value, str) and re.fullmatch(r"[A-Za-z0-9_./~+-]+", value) and yaml.safe_load(value) == value:
        return value
    return "null" if value is None else json.dumps(value)


def doc_value(value: Any) -> str:
    return f'"{value}"' if isinstance(value, str) else json.dumps(value)


def doc_type(spec: dict[str, Any]) -> str:
    kind = spec.get("type", "str")
    if kind == "list":
        return f"list of {spec.get('elements', 'str')}"
    choices = " \\| ".join(spec.get("choices") or ())
    return f"{kind} ({choices})" if choices else kind


def _block(lines: list[str], start: int) -> int:
    """The end of the YAML entry that begins at lines[start]: the next line indented no deeper (or the end)."""
    indent = len(lines[start]) - len(lines[start].lstrip())
    end = start + 1
    while end < len(lines) and (not lines[end].strip() or len(lines[end]) - len(lines[end].lstrip()) > indent):
        end += 1
    while end > start + 1 and not lines[end - 1].strip():
        end -= 1
    return end


def _find(lines: list[str], pattern: str, start: int = 0, stop: int | None = None) -> int | None:
    regex = re.compile(pattern)
    return next((i for i in range(start, len(lines) if stop is None else stop) if regex.match(lines[i])), None)


def set_defaults(text: str, values: dict[str, Any], errors: list[str], where: str) -> str:
    """defaults/main.yml with each top-level `name: value` of `values` written anew where its value differs."""
    lines, current = text.splitlines(), yaml.safe_load(text) or {}
    for name, value in values.items():
        at = _find(lines, rf"{name}:")
        if at is None:
            errors.append(f"{where}: no {name} (the config sets it): add it with a comment saying what it is")
        elif current.get(name) != value:
            lines[at:_block(lines, at)] = [f"{name}: {yaml_value(value)}"]
    return "\n".join(lines) + "\n"


def set_spec_defaults(text: str, values: dict[str, Any], errors: list[str], where: str) -> str:
    """argument_specs.yml with the `default:` of each option of every entry point set to `values`' (none for null,
    as Ansible takes a missing default)."""
    lines = text.splitlines()
    specs = options(text)
    for name, value in values.items():
        at = _find(lines, rf"\s+{name}:\s*$")
        if at is None or name not in specs:
            errors.append(f"{where}: no option {name}: add it with its type and a description")
            continue
        if specs[name].get("default") == value and (value is not None or "default" not in specs[name]):
            continue
        end = _block(lines, at)
        indent = " " * (len(lines[at + 1]) - len(lines[at + 1].lstrip()))
        default = _find(lines, rf"{indent}default:", at + 1, end)
        new = [] if value is None else [f"{indent}default: {yaml_value(value)}"]
        if default is None:
            kind = _find(lines, rf"{indent}type:", at + 1, end)
            lines[(kind if kind is not None else at) + 1:(kind if kind is not None else at) + 1] = new
        else:
            lines[default:_block(lines, default)] = new
    return "\n".join(lines) + "\n"


def options(specs_text: str) -> dict[str, dict[str, Any]]:
    """Every entry point's options (main's, and sage_provision's ssh), by name."""
    return {name: spec for entry in yaml.safe_load(specs_text)["argument_specs"].values()
            for name, spec in (entry.get("options") or {}).items()}


def set_doc_cells(text: str, role: str, specs: dict[str, dict[str, Any]], errors: list[str]) -> str:
    """docs/ops.md's table of a role's variables (under `### ROLE`) with each row's type and default cells
    written from the argument specs."""
    lines = text.splitlines()
    section = _find(lines, rf"### {role}\s*$")
    if section is None:
        errors.append(f"{DOC}: no '### {role}' section in the role variables reference")
        return text
    stop = _find(lines, r"#{1,3} ", section + 1)
    for name, spec in specs.items():
        at = _find(lines, rf"\| `{name}` \|", section, stop)
        if at is None:
            errors.append(f"{DOC}: no row for {name} under '### {role}': add one with where it comes from")
            continue
        cells = re.split(r"(?<!\\)\|", lines[at])  # "", name, type, default, from, description, ""
        cells[2], cells[3] = f" {doc_type(spec)} ", f" `{doc_value(spec.get('default'))}` "
        lines[at] = "|".join(cells)
    for at in range(section, stop or len(lines)):
        if (m := re.match(r"\| `(\w+)` \|", lines[at])) and m.group(1) not in specs:
            errors.append(f"{DOC}: the row for {m.group(1)} names no variable of {role}: remove it")
    return "\n".join(lines) + "\n"


def generate(root: Path) -> tuple[dict[Path, str], list[str]]:
    """Every generated file's new text (path -> text), and what cannot be generated (a variable with no place)."""
    out: dict[Path, str] = {}
    errors: list[str] = []
    from_schema = schema_defaults(root)
    doc = root / DOC
    doc_text = doc.read_text()
    for role in ROLES:
        defaults_path = root / "roles" / role / "defaults" / "main.yml"
        specs_path = root / "roles" / role / "meta" / "argument_specs.yml"
        mine = {k: v for k, v in from_schema.items() if k.startswith(f"{role}_")}
        defaults_text = set_defaults(defaults_path.read_text(), mine, errors, str(defaults_path.relative_to(root)))
        defaults = yaml.safe_load(defaults_text)
        specs_text = set_spec_defaults(specs_path.read_text(), defaults, errors, str(specs_path.relative_to(root)))
        specs = options(specs_text)
        for name in set(specs) - set(defaults):
            errors.append(f"{specs_path.relative_to(root)}: option {name} has no default in defaults/main.yml")
        doc_text = set_doc_cells(doc_text, role, specs, errors)
        out[defaults_path], out[specs_path] = defaults_text, specs_text
    out[doc] = doc_text
    return out, errors


def drift(root: Path | None = None) -> list[str]:
    """What differs from the generated text, one line per file (and what cannot be generated); empty: nothing."""
    root = root or ansible_root()
    files, errors = generate(root)
    return errors + [f"{path.relative_to(root)} differs from what the schema gives"
                     for path, text in files.items() if path.read_text() != text]


def main(argv: list[str]) -> int:
    root = ansible_root()
    if "--check" in argv:
        problems = drift(root)
        for line in problems:
            print(line, file=sys.stderr)
        if problems:
            print("Fix: run `python -m sage_cluster.roledoc` (and fix what it cannot).", file=sys.stderr)
        return 1 if problems else 0
    errors = write(root)
    for line in errors:
        print(f"error: {line}", file=sys.stderr)
    return 1 if errors else 0


def write(root: Path) -> list[str]:
    """Write every generated file that differs; returns what cannot be generated."""
    files, errors = generate(root)
    for path, text in files.items():
        if path.read_text() != text:
            path.write_text(text)
            print(f"wrote {path.relative_to(root)}")
    return errors


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
