"""awx/configure.yml end to end without an AWX server: the real playbook against stand-in awx.awx modules that
validate their arguments with the installed awx.awx collection's own argument specs, and record what they got.

The specs are not copied: each real module's main() is run up to the point where it builds its
ControllerAPIModule, which is replaced by a catcher of the argument_spec it is given. A stand-in then validates
with ansible's AnsibleModule as the real module would (unknown keys, types, choices, required), so a misspelled
key in awx/sage.yml fails here as it would against AWX.
"""
from __future__ import annotations

import importlib
import importlib.util
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MODULES = ["execution_environment", "credential_type", "credential", "project", "inventory", "inventory_source",
           "inventory_source_update", "job_template"]

STANDIN = '''\
#!/usr/bin/python
# Stand-in for awx.awx.{name}, written by tests/unit/test_awx_configure.py: the real module's argument spec,
# no AWX server. It records the parameters it was given (those not left at None) and reports a change.
import json
import os

from ansible.module_utils.basic import AnsibleModule

SPEC = json.loads({spec!r})


def main():
    module = AnsibleModule(argument_spec=SPEC["argument_spec"], **SPEC["kwargs"])
    given = {{k: v for k, v in module.params.items() if v is not None}}
    with open(os.environ["SAGE_AWX_RECORD"], "a") as fh:
        fh.write(json.dumps({{"module": "{name}", "params": given}}) + "\\n")
    module.exit_json(changed=True, id=1)


if __name__ == "__main__":
    main()
'''


class _Caught(Exception):
    def __init__(self, argument_spec: dict, kwargs: dict):
        super().__init__("caught")
        self.argument_spec, self.kwargs = argument_spec, kwargs


def _without_fallbacks(spec: dict) -> dict:
    """The spec as data: `fallback` (environment lookups of the AWX host and token) is code and concerns only the
    connection to AWX, which the stand-ins do not make."""
    out = {}
    for name, option in spec.items():
        option = {k: v for k, v in option.items() if k != "fallback"}
        if isinstance(option.get("options"), dict):
            option["options"] = _without_fallbacks(option["options"])
        out[name] = option
    return out


def real_spec(name: str) -> dict:
    """The argument spec and AnsibleModule keywords the installed awx.awx module `name` runs with."""
    if importlib.util.find_spec("ansible_collections.awx.awx") is None:
        pytest.skip("the awx.awx collection is not installed (it ships with the `ansible` package)")
    module = importlib.import_module(f"ansible_collections.awx.awx.plugins.modules.{name}")
    api = importlib.import_module("ansible_collections.awx.awx.plugins.module_utils.controller_api")

    def catch(argument_spec=None, **kwargs):
        raise _Caught(argument_spec, kwargs)

    real = module.ControllerAPIModule
    module.ControllerAPIModule = catch
    try:
        module.main()
    except _Caught as caught:
        spec = dict(api.ControllerModule.AUTH_ARGSPEC, **caught.argument_spec)  # as ControllerModule.__init__
        kwargs = {k: v for k, v in caught.kwargs.items() if k not in ("direct_params", "error_callback",
                                                                      "warn_callback")}
        kwargs["supports_check_mode"] = True
        return {"argument_spec": _without_fallbacks(spec), "kwargs": kwargs}
    finally:
        module.ControllerAPIModule = real
    raise AssertionError(f"awx.awx.{name} built no ControllerAPIModule")


@pytest.fixture(scope="module")
def standins(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A collections path whose awx.awx has the stand-ins."""
    root = tmp_path_factory.mktemp("collections")
    modules = root / "ansible_collections" / "awx" / "awx" / "plugins" / "modules"
    modules.mkdir(parents=True)
    for name in MODULES:
        (modules / f"{name}.py").write_text(STANDIN.format(name=name, spec=json.dumps(real_spec(name))))
    return root


def configure(standins: Path, tmp_path: Path, sage_yml: str | None = None, *extra: str
              ) -> tuple[subprocess.CompletedProcess, list[dict]]:
    """Run awx/configure.yml (a copy of awx/ with `sage_yml` as sage.yml, if given); what each module got."""
    awx = tmp_path / "awx"
    shutil.copytree(REPO / "awx", awx)
    if sage_yml is not None:
        (awx / "sage.yml").write_text(sage_yml)
    key, token = tmp_path / "id_ed25519", tmp_path / "ray_auth_token"
    key.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nnot a real key\n-----END OPENSSH PRIVATE KEY-----\n")
    token.write_text("f" * 64 + "\n")
    record = tmp_path / "record.jsonl"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SAGE_", "ANSIBLE_", "CONTROLLER_"))}
    # ANSIBLE_REMOTE_TMP: the local connection expands `~root`, not $HOME, for the modules' temp dir.
    env.update(HOME=str(tmp_path), ANSIBLE_REMOTE_TMP=str(tmp_path / "remote_tmp"), SAGE_AWX_RECORD=str(record),
               # The stand-ins, and the checkout's sage.cluster (the repository's ansible.cfg enables its inventory
               # plugin); only them: the real awx.awx in site-packages must not be found.
               ANSIBLE_COLLECTIONS_PATH=f"{standins}:{REPO / 'playbooks' / 'collections'}",
               ANSIBLE_COLLECTIONS_SCAN_SYS_PATH="False", ANSIBLE_CONFIG=str(REPO / "ansible.cfg"),
               CONTROLLER_HOST="https://awx.invalid", CONTROLLER_OAUTH_TOKEN="unused")
    proc = subprocess.run(["ansible-playbook", "-i", "localhost,", str(awx / "configure.yml"),
                           "-e", f"sage_awx_ssh_private_key_file={key}", "-e", f"sage_awx_ray_token_file={token}",
                           *extra], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
                          stdin=subprocess.DEVNULL)
    calls = [json.loads(line) for line in record.read_text().splitlines()] if record.exists() else []
    return proc, calls


def of(calls: list[dict], module: str) -> list[dict]:
    return [c["params"] for c in calls if c["module"] == module]


def test_example_loads_every_object(standins: Path, tmp_path: Path):
    proc, calls = configure(standins, tmp_path)
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
    assert "WARNING" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    counts = {m: len(of(calls, m)) for m in MODULES}
    assert counts == {"execution_environment": 1, "credential_type": 3, "credential": 2, "project": 1,
                      "inventory": 1, "inventory_source": 1, "inventory_source_update": 1, "job_template": 18}
    ee, = of(calls, "execution_environment")
    assert (ee["name"], ee["image"], ee["organization"]) == ("sage-ee", "registry.example.com/ops/sage-ee:latest",
                                                             "Default")
    source, = of(calls, "inventory_source")
    assert source["inventory"] == "sage" and source["source_path"] == "inventory/sage.yml"
    assert source["source_vars"] == {"SAGE_CONFIG": "/runner/project/awx/sage-config.example.yaml"}
    project, = of(calls, "project")
    assert project["wait"] is True and project["scm_type"] == "git"
    # Injector templates are AWX's to render, at job time: they arrive as written.
    ssh_type = next(c for c in of(calls, "credential_type") if c["name"] == "sage SSH key")
    assert ssh_type["injectors"]["extra_vars"] == {"ansible_ssh_private_key_file": "{{ tower.filename }}"}
    start = next(t for t in of(calls, "job_template") if t["name"] == "sage cluster start")
    assert (start["project"], start["inventory"], start["execution_environment"]) == ("sage", "sage", "sage-ee")
    assert start["credentials"] == ["sage SSH key", "sage Ray token"]
    assert start["extra_vars"] == {"sage_action": "start"}
    # The secrets are not in the output.
    assert "not a real key" not in proc.stdout and "f" * 64 not in proc.stdout


def test_the_tls_ca_credential_is_made_from_the_cas_files_when_named(standins: Path, tmp_path: Path):
    from ansible_collections.sage.cluster.plugins.plugin_utils import tls

    ca = tls.ensure_ca(tmp_path / "tls")
    key = (tmp_path / "tls" / "ca.key").read_text()
    proc, calls = configure(standins, tmp_path, None, "-e", f"sage_awx_tls_ca_dir={tmp_path / 'tls'}")
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
    credential = next(c for c in of(calls, "credential") if c["name"] == "sage TLS CA")
    assert credential["inputs"] == {"ca_cert": ca.cert_pem.strip(), "ca_key": key.strip()}
    kind = next(c for c in of(calls, "credential_type") if c["name"] == "sage TLS CA")
    assert kind["injectors"]["extra_vars"] == {"ray_node_tls_ca_dir": "{{ tower.filename }}"}
    # What the injector writes is a CA the role reads.
    bundle = tmp_path / "bundle.pem"
    bundle.write_text(kind["injectors"]["file"]["template"].replace("{{ ca_cert }}", credential["inputs"]["ca_cert"])
                      .replace("{{ ca_key }}", credential["inputs"]["ca_key"]))
    assert tls.ensure_ca(bundle, make=False).cert_pem == ca.cert_pem
    assert "PRIVATE KEY" not in proc.stdout + proc.stderr


def test_admin_keys_reach_the_modules(standins: Path, tmp_path: Path):
    """What docs/ops.md B.3 tells an admin to add: a git and a registry credential, timeouts, instance groups,
    another EE for one template."""
    text = (REPO / "awx" / "sage.yml").read_text()
    edits = {
        "  # credential: registry.example.com pull\n": "  credential: registry.example.com pull\n",
        "  # credential: sage-cluster git\n": "  credential: sage-cluster git\n  timeout: 600\n",
        "sage_awx_job_template_defaults: {}\n":
            "sage_awx_job_template_defaults: {timeout: 1800, instance_groups: [sage-nodes]}\n",
        "    playbook: playbooks/doctor.yml\n":
            "    playbook: playbooks/doctor.yml\n    execution_environment: other-ee\n",
        "  update_cache_timeout: 0\n": "  update_cache_timeout: 0\n  timeout: 300\n",
    }
    for old, new in edits.items():
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    proc, calls = configure(standins, tmp_path, text)
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
    assert of(calls, "execution_environment")[0]["credential"] == "registry.example.com pull"
    project, = of(calls, "project")
    assert (project["credential"], project["timeout"]) == ("sage-cluster git", 600)
    assert of(calls, "inventory_source")[0]["timeout"] == 300
    templates = {t["name"]: t for t in of(calls, "job_template")}
    assert all(t["timeout"] == 1800 and t["instance_groups"] == ["sage-nodes"] for t in templates.values())
    assert templates["sage doctor"]["execution_environment"] == "other-ee"
    assert templates["sage cluster start"]["execution_environment"] == "sage-ee"


@pytest.mark.parametrize("old,new,module,key", [
    ("  scm_branch: \"{{ sage_awx_scm_branch }}\"\n", "  scm_brnach: main\n", "project", "scm_brnach"),
    ("sage_awx_job_template_defaults: {}\n", "sage_awx_job_template_defaults: {time_out: 60}\n", "job_template",
     "time_out"),
])
def test_a_misspelled_key_is_refused(standins: Path, tmp_path: Path, old: str, new: str, module: str, key: str):
    text = (REPO / "awx" / "sage.yml").read_text()
    assert text.count(old) == 1, old
    proc, calls = configure(standins, tmp_path, text.replace(old, new))
    assert proc.returncode != 0
    assert f"Unsupported parameters for (awx.awx.{module}) module: {key}" in proc.stdout, proc.stdout
    assert of(calls, module) == []


def test_a_wrong_type_is_refused(standins: Path, tmp_path: Path):
    text = (REPO / "awx" / "sage.yml").read_text()
    old = "  scm_update_cache_timeout: 0\n"
    assert text.count(old) == 1
    proc, _ = configure(standins, tmp_path, text.replace(old, "  scm_update_cache_timeout: soon\n"))
    assert proc.returncode != 0
    assert "scm_update_cache_timeout" in proc.stdout and "int" in proc.stdout, proc.stdout
