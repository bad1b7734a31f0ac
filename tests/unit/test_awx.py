"""AWX/Tower as code: the execution environment, the job templates and the inventory source agree with the repository.

What an AWX admin loads (awx/sage.yml through awx/configure.yml, execution-environment.yml) must name playbooks that
exist, set only variables the playbooks or their roles declare, offer only values the playbooks accept, and import
an inventory the real `ansible-inventory` can read. No AWX, no container engine and no network are needed.
"""
from __future__ import annotations

import importlib.metadata as md
import importlib.util
import json
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.conftest import user_env

REPO = Path(__file__).resolve().parents[2]
PLAYBOOKS = REPO / "playbooks"
AWX = REPO / "awx"
EE_FILE = REPO / "execution-environment.yml"
INVENTORY_FILE = REPO / "inventory" / "sage.yml"
# Where AWX checks the project out, in inventory updates and jobs alike (awx/sage.yml uses it in SAGE_CONFIG).
AWX_PROJECT_ROOT = "/runner/project"
INCLUDE_ROLE = ("ansible.builtin.include_role", "include_role", "ansible.builtin.import_role", "import_role")
IMPORT_PLAYBOOK = ("ansible.builtin.import_playbook", "import_playbook")
VALIDATE = ("ansible.builtin.validate_argument_spec", "validate_argument_spec")
# The types an AWX survey question may have, with the Python type of its default (AWX's JobTemplateSurveySpec).
SURVEY_TYPES = {"text": str, "textarea": str, "password": str, "multiplechoice": str, "multiselect": str,
                "integer": int, "float": float}
SURVEY_TO_SPEC_TYPE = {"integer": "int", "float": "float"}
# Role variables the playbooks set step by step: as extra vars (which a template's are) they would override every
# step, e.g. ray_node_action=stop turns the head's status into a stop. Declared by the role, yet never a template's.
SET_BY_PLAYBOOKS = {"ray_node_action", "ray_node_type", "ray_node_wait_for", "ray_node_blocked_by"}


# ---------------------------------------------------------------- reading the files


class _AnsibleYamlLoader(yaml.SafeLoader):
    """Reads awx/sage.yml as Ansible would, with !unsafe strings as plain strings."""


_AnsibleYamlLoader.add_constructor("!unsafe", lambda loader, node: loader.construct_scalar(node))


def load_awx() -> dict[str, Any]:
    return yaml.load((AWX / "sage.yml").read_text(), Loader=_AnsibleYamlLoader)


def load_playbook(path: Path) -> list[dict[str, Any]]:
    return yaml.safe_load(path.read_text())


def walk_tasks(tasks: list[dict[str, Any]] | None):
    for task in tasks or []:
        yield task
        for key in ("block", "rescue", "always"):
            yield from walk_tasks(task.get(key))


def play_tasks(play: dict[str, Any]):
    for key in ("pre_tasks", "tasks", "post_tasks", "handlers"):
        yield from walk_tasks(play.get(key))


def playbook_specs(path: Path) -> dict[str, dict[str, Any]]:
    """The variables a playbook itself declares: the sage_inputs it passes to check_inputs.yml (which checks them
    with validate_argument_spec), or a validate_argument_spec of its own (not those of what it imports)."""
    specs: dict[str, dict[str, Any]] = {}
    for play in load_playbook(path):
        declared = [task[key]["argument_spec"] for task in play_tasks(play) for key in VALIDATE
                    if key in task and isinstance(task[key]["argument_spec"], dict)]  # check_inputs.yml's: a template
        if any(play.get(key) == "check_inputs.yml" for key in IMPORT_PLAYBOOK):
            declared.append(play["vars"]["sage_inputs"])
        for argument_spec in declared:
            for name, spec in argument_spec.items():
                assert name not in specs, f"{path.name} declares {name} twice"
                specs[name] = spec
    return specs


def role_specs(role: str) -> dict[str, dict[str, Any]]:
    """A role's variables, by its short name or its FQCN in this collection (sage.cluster.ray_node)."""
    role = role.removeprefix("sage.cluster.")
    data = yaml.safe_load((REPO / "roles" / role / "meta" / "argument_specs.yml").read_text())
    return data["argument_specs"]["main"]["options"]


def roles_of(path: Path, seen: set[Path] | None = None) -> set[str]:
    """Every role a playbook runs: roles:, include_role/import_role, and those of the playbooks it imports."""
    seen = seen if seen is not None else set()
    if path in seen:
        return set()
    seen.add(path)
    roles: set[str] = set()
    for play in load_playbook(path):
        for key in IMPORT_PLAYBOOK:
            if key in play:
                roles |= roles_of((path.parent / play[key]).resolve(), seen)
        for entry in play.get("roles") or []:
            roles.add(entry if isinstance(entry, str) else entry.get("role") or entry["name"])
        for task in play_tasks(play):
            for key in INCLUDE_ROLE:
                if key in task:
                    roles.add(task[key]["name"])
    return roles


def declared(path: Path) -> dict[str, dict[str, Any]]:
    """What a job template may set for a playbook: its own declared inputs, then its roles' variables."""
    out: dict[str, dict[str, Any]] = {}
    for role in sorted(roles_of(path)):
        out.update(role_specs(role))
    out.update(playbook_specs(path))
    return out


def survey_choices(question: dict[str, Any]) -> list[str]:
    choices = question.get("choices", [])
    return [c for c in choices.splitlines() if c.strip()] if isinstance(choices, str) else list(choices)


def template_problems(template: dict[str, Any]) -> list[str]:
    """Everything wrong between one job template and the playbook it runs (empty: nothing)."""
    problems: list[str] = []
    playbook = REPO / template["playbook"]
    if not playbook.is_file():
        return [f"{template['name']}: playbook {template['playbook']} does not exist"]
    known = declared(playbook)
    own = playbook_specs(playbook)
    values = dict(template.get("extra_vars") or {})
    questions = (template.get("survey_spec") or {}).get("spec", [])
    for name in [*values, *(q["variable"] for q in questions)]:
        if name in SET_BY_PLAYBOOKS:
            problems.append(f"{template['name']}: sets {name}, which {playbook.name} sets for each step itself")
        elif name not in known:
            problems.append(f"{template['name']}: sets {name}, which neither {playbook.name} "
                            f"(validate_argument_spec) nor its roles ({', '.join(sorted(roles_of(playbook)))}) declare")
    for name, value in values.items():
        choices = known.get(name, {}).get("choices")
        if choices and value not in choices:
            problems.append(f"{template['name']}: {name}={value!r} is not one of {playbook.name}'s {choices}")
    if "sage_action" in own and own["sage_action"].get("required") and "sage_action" not in values and not any(
            q["variable"] == "sage_action" for q in questions):
        problems.append(f"{template['name']}: {playbook.name} requires sage_action and the template sets none")
    for q in questions:
        spec = known.get(q["variable"])
        if spec is None:
            continue
        if spec.get("choices"):
            extra = [c for c in survey_choices(q) if c not in spec["choices"]]
            if extra or q["type"] not in ("multiplechoice", "multiselect"):
                problems.append(f"{template['name']}: survey {q['variable']} offers {extra or q['type']}, "
                                f"{playbook.name} accepts only {spec['choices']}")
        want = SURVEY_TO_SPEC_TYPE.get(q["type"], "str")
        if spec.get("type", "str") not in (want, "raw"):
            problems.append(f"{template['name']}: survey {q['variable']} is {q['type']}, "
                            f"declared as {spec.get('type', 'str')}")
    return problems


def awx_module_options(module: str) -> set[str]:
    """The parameters of an awx.awx module, from its DOCUMENTATION (the collection ships with `ansible`)."""
    spec = importlib.util.find_spec("ansible_collections.awx.awx")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("the awx.awx collection is not installed")
    source = (Path(list(spec.submodule_search_locations)[0]) / "plugins" / "modules" / f"{module}.py").read_text()
    doc = re.search(r"DOCUMENTATION\s*=\s*r?'''(.*?)'''", source, re.S)
    assert doc, f"no DOCUMENTATION in awx.awx.{module}"
    return set(yaml.safe_load(doc.group(1))["options"])


def example_config(tmp_path: Path) -> tuple[Path, Path]:
    """awx/sage-config.example.yaml with AWX's /runner/project moved under tmp_path: (config, project root).

    Rendering the config touches its paths (the known_hosts directory), and nothing here may write outside tmp_path.
    """
    project = tmp_path / "runner" / "project"
    project.mkdir(parents=True)
    config = tmp_path / "sage-config.yaml"
    config.write_text((AWX / "sage-config.example.yaml").read_text().replace(AWX_PROJECT_ROOT, str(project)))
    return config, project


# ---------------------------------------------------------------- execution environment


def test_execution_environment_build_context(tmp_path: Path):
    context = tmp_path / "context"
    proc = subprocess.run(["ansible-builder", "create", "--file", str(EE_FILE), "--context", str(context),
                           "--output-filename", "Containerfile"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
    containerfile = (context / "Containerfile").read_text()
    ee = yaml.safe_load(EE_FILE.read_text())
    assert ee["version"] == 3
    assert f'EE_BASE_IMAGE="{ee["images"]["base_image"]["name"]}"' in containerfile
    pip = (context / "_build" / "requirements.txt").read_text().split()
    assert {canonicalize_name(Requirement(r).name) for r in pip} >= {"ruamel-yaml", "jinja2", "pyyaml"}, pip
    bindep = (context / "_build" / "bindep.txt").read_text()
    assert re.search(r"^rsync\b", bindep, re.M) and re.search(r"^openssh-clients\b", bindep, re.M), bindep
    galaxy = yaml.safe_load((context / "_build" / "requirements.yml").read_text())
    listed = yaml.safe_load((REPO / "collections" / "requirements.yml").read_text())
    assert galaxy["collections"] == listed["collections"], galaxy


def _closure(requirements: list[str]) -> set[str]:
    """The distributions pip installs for these requirements (as installed here, markers evaluated)."""
    todo = [Requirement(r) for r in requirements]
    seen: set[str] = set()
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if name in seen:
            continue
        seen.add(name)
        try:
            for sub in md.requires(req.name) or []:
                r = Requirement(sub)
                if r.marker is None or r.marker.evaluate({"extra": ""}):
                    todo.append(r)
        except md.PackageNotFoundError:
            pass
    return seen


def _top_level(file: Path) -> str:
    """The importable top-level name a file belongs to (its first directory below a sys.path entry)."""
    for entry in sorted((Path(p) for p in sys.path if p), key=lambda p: len(p.parts), reverse=True):
        if file.is_relative_to(entry):
            return file.relative_to(entry).parts[0].split(".")[0]  # a package, or a module: x.py, x.cpython-*.so
    return file.name.split(".")[0]


def test_execution_environment_has_what_the_inventory_plugin_imports(tmp_path: Path):
    """Run ansible-inventory on the inventory file, list the third-party distributions the plugin imported: the EE
    must install each."""
    home = tmp_path / "home"
    home.mkdir()
    probe = (
        "import contextlib, io, json, sys\n"
        "from ansible.cli.inventory import InventoryCLI\n"
        "before = set(sys.modules)\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    try:\n"
        f"        InventoryCLI.cli_executor(['ansible-inventory', '-i', {str(INVENTORY_FILE)!r}, '--list'])\n"
        "    except SystemExit as exc:\n"
        "        assert not exc.code, exc.code\n"
        "new = {m: getattr(sys.modules[m], '__file__', None) for m in set(sys.modules) - before}\n"
        "print(json.dumps(new))\n"
    )
    config, _ = example_config(tmp_path)
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, cwd=REPO,
                          env=user_env(home, SAGE_CONFIG=str(config)))
    assert proc.returncode == 0, proc.stderr
    # Modules without a file (Cython's runtime entries, built-ins) come from no distribution; the project's own
    # (sage_cluster, the collection sage.cluster) come with the project.
    # Named by the file's top directory in site-packages, not the module's name: Ansible's collection loader names
    # ansible-core's own plugins ansible_collections.ansible.builtin.*, and its synthetic packages have no file.
    tops = {_top_level(Path(file)) for file in json.loads(proc.stdout).values()
            if file and Path(file).is_file() and not Path(file).resolve().is_relative_to(REPO)}
    tops -= set(sys.stdlib_module_names) | set(sys.builtin_module_names)
    owners = md.packages_distributions()
    ee = yaml.safe_load(EE_FILE.read_text())
    python = (EE_FILE.parent / ee["dependencies"]["python"]).read_text().split("\n")
    requirements = [ee["dependencies"]["ansible_core"]["package_pip"],
                    *(line for line in python if line.strip() and not line.startswith("#"))]
    installed = _closure(requirements)
    # A name several distributions install into (`ansible`: ansible-core's package, and the ansible package's
    # files beside it) is there when any of them is.
    missing = {top for top in tops if not {canonicalize_name(d) for d in owners.get(top, [top])} & installed}
    assert not missing, f"the inventory plugin imports {sorted(missing)}, which execution-environment.yml lacks"


# ---------------------------------------------------------------- job templates


def test_collections_requirements_cover_the_collections_in_use():
    used = set()
    for path in [*PLAYBOOKS.glob("*.yml"), *(REPO / "roles").glob("*/tasks/*.yml")]:
        used |= set(re.findall(r"^\s*-?\s*([a-z0-9_]+\.[a-z0-9_]+)\.[a-z0-9_]+:", path.read_text(), re.M))
    assert "ansible.builtin" in used, "the pattern finds no module names"
    used -= {"ansible.builtin", "sage.cluster"}  # sage.cluster: this repository itself
    listed = {c["name"] for c in yaml.safe_load((REPO / "collections" / "requirements.yml").read_text())["collections"]}
    assert used <= listed, f"collections used but not in collections/requirements.yml: {sorted(used - listed)}"


def test_one_job_template_per_action():
    got = {(t["playbook"], (t.get("extra_vars") or {}).get("sage_action"), t.get("limit"))
           for t in load_awx()["sage_awx_job_templates"]}
    want = {("playbooks/deploy.yml", "deploy", None), ("playbooks/doctor.yml", "doctor", None),
            ("playbooks/scale.yml", "add", None), ("playbooks/scale.yml", "remove", None)}
    # One status path for every door: status.yml, limited to a group for the head's and the workers'.
    want |= {("playbooks/status.yml", "status", limit) for limit in (None, "sage_head", "sage_workers")}
    want |= {("playbooks/cluster.yml", a, None) for a in ("start", "stop", "restart")}
    want |= {(f"playbooks/{p}.yml", a, None) for p in ("head", "worker") for a in ("start", "stop", "restart", "logs")}
    assert got == want
    names = [t["name"] for t in load_awx()["sage_awx_job_templates"]]
    assert len(names) == len(set(names)), names


def test_job_templates_run_existing_playbooks_with_declared_variables():
    problems = [p for t in load_awx()["sage_awx_job_templates"] for p in template_problems(t)]
    assert problems == []


def test_the_template_check_catches_mistakes():
    """The checker itself: an undeclared variable, a value or a survey choice a playbook refuses, a missing playbook."""
    bad_survey = {"name": "x", "description": "", "spec": [
        {"question_name": "Action", "variable": "sage_action", "type": "multiplechoice", "required": True,
         "choices": ["start", "explode"]}]}
    assert template_problems({"name": "t", "playbook": "playbooks/head.yml", "survey_spec": bad_survey})
    assert template_problems({"name": "t", "playbook": "playbooks/head.yml", "extra_vars": {"sage_action": "add"}})
    assert template_problems({"name": "t", "playbook": "playbooks/head.yml", "extra_vars": {"sage_scale_host": "a"}})
    assert template_problems({"name": "t", "playbook": "playbooks/cluster.yml"})
    assert template_problems({"name": "t", "playbook": "playbooks/head.yml",
                              "extra_vars": {"sage_action": "status", "ray_node_action": "stop"}})
    assert template_problems({"name": "t", "playbook": "playbooks/nope.yml"})
    good_survey = dict(bad_survey, spec=[dict(bad_survey["spec"][0], choices="start\nstop")])
    assert template_problems({"name": "t", "playbook": "playbooks/head.yml", "survey_spec": good_survey}) == []


def test_every_playbook_with_a_template_validates_sage_action():
    """A job template fixes sage_action; the playbook must check it (a typo fails, never runs something else)."""
    for template in load_awx()["sage_awx_job_templates"]:
        spec = playbook_specs(REPO / template["playbook"])
        assert "sage_action" in spec and spec["sage_action"].get("choices"), template["playbook"]


def test_surveys_are_valid_for_awx():
    for t in load_awx()["sage_awx_job_templates"]:
        survey = t.get("survey_spec")
        assert bool(t.get("survey_enabled")) == bool(survey), t["name"]
        if not survey:
            continue
        assert isinstance(survey["name"], str) and isinstance(survey["description"], str), t["name"]
        assert survey["spec"], t["name"]
        variables = [q["variable"] for q in survey["spec"]]
        assert len(variables) == len(set(variables)), t["name"]
        for q in survey["spec"]:
            assert {"type", "question_name", "variable", "required"} <= set(q), (t["name"], q)
            assert q["type"] in SURVEY_TYPES and isinstance(q["required"], bool), (t["name"], q)
            if q.get("default", "") != "":
                assert isinstance(q["default"], SURVEY_TYPES[q["type"]]), (t["name"], q)
            assert all(isinstance(q[k], int) for k in ("min", "max") if q.get(k) is not None), (t["name"], q)
            if q["type"] in ("multiplechoice", "multiselect"):
                assert survey_choices(q), (t["name"], q)


def test_awx_objects_use_only_awx_module_parameters():
    awx = load_awx()
    pairs = [("job_template", t) for t in [*awx["sage_awx_job_templates"], awx["sage_awx_job_template_defaults"]]]
    pairs += [("credential_type", c) for c in awx["sage_awx_credential_types"]]
    pairs += [("execution_environment", awx["sage_awx_execution_environment"]), ("project", awx["sage_awx_project"]),
              ("inventory", awx["sage_awx_inventory"]), ("inventory_source", awx["sage_awx_inventory_source"])]
    for module, obj in pairs:
        unknown = set(obj) - awx_module_options(module)
        assert not unknown, f"awx.awx.{module} {obj.get('name')}: no such parameter {sorted(unknown)}"


def test_credentials_inject_only_declared_or_connection_variables():
    roles = {r.name: role_specs(r.name) for r in (REPO / "roles").iterdir() if (r / "meta").is_dir()}
    role_vars = {name for spec in roles.values() for name in spec}
    for ctype in load_awx()["sage_awx_credential_types"]:
        assert ctype["kind"] in ("cloud", "net"), ctype["name"]  # the kinds AWX lets a job template attach
        for name in ctype["injectors"].get("extra_vars", {}):
            assert name.startswith("ansible_") or name in role_vars, (ctype["name"], name)
        assert not [e for e in ctype["injectors"].get("env", {}) if e.startswith("ANSIBLE_")], ctype["name"]


def test_configure_playbook_parses(tmp_path: Path):
    awx_collection = importlib.util.find_spec("ansible_collections.awx.awx")
    if awx_collection is None:
        pytest.skip("the awx.awx collection is not installed")
    proc = subprocess.run(["ansible-playbook", "--syntax-check", "-i", "localhost,", "awx/configure.yml"],
                          cwd=REPO, capture_output=True, text=True, timeout=120,
                          env=user_env(tmp_path), stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"


# ---------------------------------------------------------------- the inventory source


def test_inventory_source_imports_with_ansible_inventory(tmp_path: Path):
    awx = load_awx()
    source = awx["sage_awx_inventory_source"]
    assert source["source"] == "scm" and (REPO / source["source_path"]).is_file()
    assert source["source_vars"]["SAGE_CONFIG"] == "{{ sage_awx_sage_config }}"
    in_awx = awx["sage_awx_sage_config"]
    assert in_awx.startswith(AWX_PROJECT_ROOT + "/"), in_awx
    in_repo = REPO / in_awx[len(AWX_PROJECT_ROOT) + 1:]
    assert in_repo.is_file(), f"SAGE_CONFIG in AWX names {in_awx}; the repository has no {in_repo}"
    config, project = example_config(tmp_path)
    home = tmp_path / "home"
    home.mkdir()
    proc = subprocess.run(["ansible-inventory", "-i", source["source_path"], "--list"], cwd=REPO,
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
                          env=user_env(home, SAGE_CONFIG=str(config)))
    assert proc.returncode == 0, proc.stderr
    assert "warning" not in proc.stderr.lower(), proc.stderr
    inv = json.loads(proc.stdout)
    assert inv["sage_head"]["hosts"] == ["sage-head.example.com"]
    assert inv["sage_workers"]["hosts"] == ["sage-w1.example.com", "sage-w2.example.com"]
    assert set(inv["sage_cluster"]["children"]) == {"sage_head", "sage_workers"}
    hostvars = inv["_meta"]["hostvars"]
    roles = {"ray_node": role_specs("ray_node"), "sage_deploy": role_specs("sage_deploy")}
    for host, hv in hostvars.items():
        assert hv["ansible_ssh_common_args"].split()[:2] == ["-o", "StrictHostKeyChecking=yes"], host
        assert hv["sage_deploy_source"] == f"{project}/", host
        for name in hv:
            role = next((r for r in roles if name.startswith(r + "_")), None)
            assert role is None or name in roles[role], f"the inventory sets {name}, which {role} does not declare"


# ---------------------------------------------------------------- the playbooks' own checks


def test_playbooks_refuse_a_bad_sage_action(tmp_path: Path):
    """-e sage_action=explode fails at the first task with the validation message, before any Ray step.

    The config's head is this machine and it has no workers; nothing gets past the check, so Ray is never touched.
    """
    home = tmp_path / "home"
    home.mkdir()
    config = tmp_path / "cluster.yaml"
    config.write_text('head:\n  host: "localhost"\n  head_port: 6431\n  dashboard_port: 8331\n'
                      '  dashboard_host: "127.0.0.1"\nworkers_ssh_hosts: ""\n'
                      f'remote:\n  python_path: "{sys.executable}"\n  ray_command: "/nonexistent/ray"\n'
                      '  conda_env: ""\nsecurity:\n  ray_auth: "off"\n')
    env = user_env(home, SAGE_CONFIG=str(config))
    books = sorted(p.name for p in PLAYBOOKS.glob("*.yml") if "sage_action" in playbook_specs(p))
    assert set(books) >= {"cluster.yml", "head.yml", "worker.yml", "scale.yml", "deploy.yml", "status.yml"}

    def run(book: str) -> tuple[str, subprocess.CompletedProcess]:
        return book, subprocess.run(
            ["ansible-playbook", "-i", "inventory/sage.yml", f"playbooks/{book}", "-e", "sage_action=explode",
             "-e", "sage_scale_host=localhost"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
            stdin=subprocess.DEVNULL)

    with ThreadPoolExecutor(max_workers=4) as pool:
        for book, proc in pool.map(run, books):
            out = proc.stdout + proc.stderr
            assert proc.returncode != 0, f"{book} accepted sage_action=explode:\n{out}"
            assert "value of sage_action must be one of" in out and "got: explode" in out, f"{book}:\n{out}"
            assert "ray_node : " not in out, f"{book} went past the check:\n{out}"


def test_roles_check_their_variables_unless_sage_says_it_did(tmp_path: Path):
    """ansible-playbook and AWX runs get each role's argument-spec task; sage's (-e sage_rolespec_validate=false)
    do not. Every role import has to read the variable: one that does not still lists its check below."""
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(yaml.safe_dump({"sage_cluster": {"children": {
        "sage_head": {"hosts": {"h": None}}, "sage_workers": {"hosts": {"w": None}}}}}))
    books = sorted(p.name for p in PLAYBOOKS.glob("*.yml")
                   if roles_of(p) and not any(INCLUDE_ROLE[0] in t for play in load_playbook(p)
                                              for t in play_tasks(play)))  # a dynamic include lists no tasks
    assert {"cluster.yml", "status.yml", "deploy.yml", "doctor.yml", "provision.yml"} <= set(books)

    def checks(job: tuple[str, list[str]]) -> tuple[str, int]:
        book, extra = job
        proc = subprocess.run(["ansible-playbook", "-i", str(inventory), "--list-tasks", f"playbooks/{book}",
                               "-e", "sage_action=start", *extra], cwd=REPO, capture_output=True, text=True,
                              env=user_env(tmp_path, ANSIBLE_CONFIG=str(REPO / "ansible.cfg")), timeout=120,
                              stdin=subprocess.DEVNULL)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return book, proc.stdout.count("Validating arguments against arg spec")

    jobs = [(book, extra) for book in books for extra in ([], ["-e", "sage_rolespec_validate=false"])]
    with ThreadPoolExecutor(max_workers=4) as pool:
        counts = list(pool.map(checks, jobs))
    for (book, extra), (_, count) in zip(jobs, counts):
        assert (count == 0) == bool(extra), f"{book} {' '.join(extra)}: {count} argument-spec tasks"


def test_ansible_lint_production_profile(tmp_path: Path):
    """`ansible-lint` with no arguments, as anyone runs it in the checkout: .ansible-lint holds the profile, offline
    mode and what is left out. The ansible-lint of the Python running the tests, so of its ansible-core."""
    lint = shutil.which("ansible-lint", path=str(Path(sys.executable).parent)) or shutil.which("ansible-lint")
    if lint is None:
        pytest.fail("ansible-lint is not installed (pip install '.[test]')")
    proc = subprocess.run([lint], cwd=REPO, capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL,
                          env=user_env(tmp_path))
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
    assert "Profile 'production' was required, and it passed" in proc.stderr, proc.stderr
