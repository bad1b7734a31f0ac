"""The execution environment builds: the Python ansible-builder installs into can install what it is asked to,
and it is the image's `python3`.

No container engine can run here and no base image can be pulled, so the test reads what `ansible-builder create`
generates (the Containerfile's PYCMD and base image, the pip requirements) and judges it with pip's own rule
(Requires-Python against the target Python). The base images' `python3` versions are facts recorded below.
"""
from __future__ import annotations

import importlib.metadata as md
import re
import shutil
import socket
import subprocess
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

REPO = Path(__file__).resolve().parents[2]
EE_FILE = REPO / "execution-environment.yml"

# `python3` on PATH in each base image, as `podman run --rm IMAGE python3 --version` reports it. A base image not
# listed here fails the test until its version is checked and added.
BASE_PYTHON3 = {
    "quay.io/ansible/awx-ee:24.6.1": "3.9",  # measured: ansible-core 2.15 on 3.9 (3.11 beside it, not python3)
    "quay.io/centos/centos:stream9": "3.9",  # EL9's platform Python; python3.11 installs beside it
    "quay.io/centos/centos:stream10": "3.12",  # EL10's platform Python
}

# The definition this repository shipped before issue 12 (it could not be built), with today's ansible-core pin
# (the installed ansible-core must fall in the pin for the test to judge it, on 2.19 and on the newest pair).
OLD_DEFINITION = """\
version: 3
images:
  base_image:
    name: quay.io/ansible/awx-ee:24.6.1
dependencies:
  ansible_core:
    package_pip: ansible-core>=2.19,<2.22
  ansible_runner:
    package_pip: ansible-runner>=2.4,<3
  galaxy: collections/requirements.yml
  python:
    - ruamel.yaml>=0.18
    - jinja2>=3.1
    - pyyaml>=6
"""


def create(definition: Path, context: Path) -> dict[str, object]:
    """`ansible-builder create`, then what the build would do: base image, PYCMD, the pip requirements."""
    proc = subprocess.run(["ansible-builder", "create", "--file", str(definition), "--context", str(context),
                           "--output-filename", "Containerfile"], cwd=definition.parent, capture_output=True,
                          text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
    containerfile = (context / "Containerfile").read_text()
    args = dict(re.findall(r'^ARG (\w+)="([^"]*)"', containerfile, re.M))
    refs = args.get("ANSIBLE_INSTALL_REFS", "")
    # The refs are one unquoted shell word list: "ansible-core>=2.19,<2.22 ansible-runner>=2.4,<3".
    pip = refs.split() + (context / "_build" / "requirements.txt").read_text().split()
    return {"base": args["EE_BASE_IMAGE"], "pycmd": args.get("PYCMD", "/usr/bin/python3"), "pip": pip,
            "containerfile": containerfile}


def python_version(pycmd: str, base_python3: str | None) -> str | None:
    """The version of PYCMD: from its name (python3.12), else it is the base image's python3."""
    m = re.search(r"python(\d+\.\d+)$", pycmd)
    if m:
        return m.group(1)
    return base_python3 if Path(pycmd).name == "python3" else None


def requires_python(requirement: str) -> SpecifierSet:
    """The Requires-Python of the distribution pip would pick, read from the one installed here.

    The installed version must satisfy the requirement, or it says nothing about the pinned one.
    """
    req = Requirement(requirement)
    dist = md.distribution(req.name)
    assert req.specifier.contains(dist.version, prereleases=True), (
        f"{req.name} {dist.version} is installed here, outside the EE's pin {requirement}: cannot judge the pin")
    return SpecifierSet(dist.metadata.get("Requires-Python") or "")


def ee_problems(ee: dict[str, object]) -> list[str]:
    """Why an image from this build context would not build or would run `python3` without its packages (empty:
    no reason)."""
    base, pycmd = str(ee["base"]), str(ee["pycmd"])
    base_python3 = BASE_PYTHON3.get(base)
    if base_python3 is None:
        return [f"unknown base image {base}: check its `python3 --version` and add it to BASE_PYTHON3"]
    version = python_version(pycmd, base_python3)
    if version is None:
        return [f"cannot tell the Python version of PYCMD={pycmd}"]
    problems = []
    if version != base_python3:
        problems.append(f"ansible-builder installs into {pycmd} (Python {version}), but `python3` in {base} is "
                        f"{base_python3}: what runs as `python3` would miss its packages")
    for requirement in ee["pip"]:
        allowed = requires_python(requirement)
        if not allowed.contains(version + ".0"):
            problems.append(f"{pycmd} (Python {version}) cannot install {requirement}: it requires Python {allowed}")
    return problems


def test_shipped_definition_builds_with_one_python(tmp_path: Path):
    ee = create(EE_FILE, tmp_path / "context")
    assert ee_problems(ee) == []
    # The packages the inventory plugin and the roles need are installed with that Python.
    names = {Requirement(r).name.lower() for r in ee["pip"]}
    assert {"ansible-core", "ansible-runner", "ruamel.yaml", "jinja2", "pyyaml"} <= names, names


def test_old_definition_is_refused(tmp_path: Path):
    """Today's definition before issue 12: awx-ee 24.6.1's python3 is 3.9, ansible-core 2.19 needs 3.11."""
    definition = tmp_path / "execution-environment.yml"
    definition.write_text(OLD_DEFINITION)
    shutil.copytree(REPO / "collections", tmp_path / "collections")
    ee = create(definition, tmp_path / "context")
    assert ee["pycmd"] == "/usr/bin/python3"
    problems = ee_problems(ee)
    assert any("cannot install ansible-core>=2.19,<2.22" in p and "3.9" in p for p in problems), problems


def test_python3_other_than_pycmd_is_refused(tmp_path: Path):
    """EL9 with python3.12 installed beside 3.9: the build works, its python3 lacks the packages."""
    text = EE_FILE.read_text().replace("quay.io/centos/centos:stream10", "quay.io/centos/centos:stream9")
    text = text.replace("package_system: python3\n", "package_system: python3.12\n")
    text = text.replace("python_path: /usr/bin/python3\n", "python_path: /usr/bin/python3.12\n")
    definition = tmp_path / "execution-environment.yml"
    definition.write_text(text)
    shutil.copytree(REPO / "collections", tmp_path / "collections")
    shutil.copy(REPO / "requirements.txt", tmp_path)
    problems = ee_problems(create(definition, tmp_path / "context"))
    assert len(problems) == 1 and "`python3` in quay.io/centos/centos:stream9 is 3.9" in problems[0], problems


def test_unknown_base_image_is_refused():
    assert "unknown base image" in ee_problems({"base": "example.com/ee:1", "pycmd": "/usr/bin/python3", "pip": []})[0]


def _pypi_reachable() -> bool:
    try:
        socket.create_connection(("pypi.org", 443), timeout=3).close()
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _pypi_reachable(), reason="PyPI is not reachable (the isolated test rig has no network)")
@pytest.mark.parametrize("version,ok", [("3.12", True), ("3.9", False)])
def test_pip_agrees_with_requires_python(tmp_path: Path, version: str, ok: bool):
    """pip itself, asked for the pinned ansible-core as Python <version> would install it."""
    ee = create(EE_FILE, tmp_path / "context")
    core = next(r for r in ee["pip"] if r.startswith("ansible-core"))
    proc = subprocess.run(["pip", "download", "--quiet", "--no-deps", "--only-binary=:all:", "--python-version",
                           version, "--dest", str(tmp_path / "wheels"), core],
                          capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert (proc.returncode == 0) is ok, proc.stderr
    assert requires_python(core).contains(version + ".0") is ok
