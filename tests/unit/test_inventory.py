"""The Ansible inventory the config renders to: groups, per-host and group variables, formats, and what the real
ansible-inventory makes of it."""
from __future__ import annotations

import configparser
import json
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from ansible_collections.sage.cluster.plugins.plugin_utils import config, inventory

from tests.conftest import user_env
from tests.unit.helpers import GUIDE_CONFIG, SAGE, run_many, without_others_warnings

HOSTILE_PYTHON = "/opt/my env/it's/python"
HOSTILE_RAY = '/opt/"quoted" dir/ray $HOME;`x`'
HOSTILE_CONFIG = f"""\
head:
  host: base-sage
  head_port: 7000
  dashboard_port: 9000
  dashboard_host: 127.0.0.1
  temp_dir: /var/tmp/ray head
  log_dir: /var/log/sage head
worker:
  temp_dir: /var/tmp/ray worker
  log_dir: /var/log/sage worker
workers_ssh_hosts: "sage2:22,sage4:2222"
ssh:
  user: ops
  key_path: ~/keys/id ed25519
  connect_timeout: 7
  strict_host_key_checking: "yes"
  known_hosts: ~/.sage/hosts.known
remote:
  sage_home: /srv/sage home
  python_path: "{HOSTILE_PYTHON}"
  ray_command: '{HOSTILE_RAY}'
  conda_env: ""
  python_version_match: patch
deploy:
  exclude: ["data/", "*.log"]
"""


def cfg_from(text: str, home: Path) -> config.Config:
    path = home / "c.yaml"
    path.write_text(text)
    return config.load(path)


def groups(inv: dict) -> dict:
    return inv["all"]["children"]["sage_cluster"]["children"]


def test_groups_hosts_and_vars_of_the_guides_config(home: Path) -> None:
    inv = inventory.build(cfg_from(GUIDE_CONFIG, home))
    cluster = inv["all"]["children"]["sage_cluster"]
    assert set(cluster["children"]) == {"sage_head", "sage_workers"}
    head, workers = groups(inv)["sage_head"], groups(inv)["sage_workers"]
    assert head["hosts"] == {"base-sage": {"ansible_host": "base-sage", "ansible_port": 22,
                                           "ray_node_node_ip": "base-sage"}}
    assert workers["hosts"]["sage2"]["ansible_host"] == "sage2"
    assert workers["hosts"]["sage2"]["ansible_port"] == 22
    assert workers["hosts"]["sage4"]["ansible_port"] == 22
    assert list(workers["hosts"]) == ["sage2", "sage4"]
    v = cluster["vars"]
    assert v["ansible_user"] == "sage"
    assert v["ansible_ssh_private_key_file"] == str(home / ".ssh" / "id_rsa")
    assert v["ansible_ssh_timeout"] == 10
    args = shlex.split(v["ansible_ssh_common_args"])
    assert "StrictHostKeyChecking=accept-new" in args
    assert f"UserKnownHostsFile={home / '.sage' / 'known_hosts'}" in args
    assert v["ray_node_head_host"] == "base-sage"
    assert v["ray_node_head_port"] == 6379
    assert v["ray_node_dashboard_port"] == 8265
    assert v["ray_node_dashboard_host"] == "0.0.0.0"
    assert v["ray_node_python_path"] == v["ansible_python_interpreter"] == "/opt/conda/envs/sage/bin/python"
    assert v["ray_node_ray_command"] == "/opt/conda/envs/sage/bin/ray"
    assert v["ray_node_conda_env"] == "sage"
    assert v["sage_deploy_dest"] == "/home/sage"
    # Resources the guide leaves to Ray: null, so the role passes no resource flag to `ray start`.
    no_resources = {"ray_node_num_cpus": None, "ray_node_num_gpus": None, "ray_node_memory": None,
                    "ray_node_object_store_memory": None, "ray_node_resources": {}, "ray_node_labels": {}}
    assert head["vars"] == {"ray_node_type": "head", "ray_node_temp_dir": "/tmp/ray_head",
                            "ray_node_log_dir": "/tmp/sage_head_logs", **no_resources}
    assert workers["vars"] == {"ray_node_type": "worker", "ray_node_temp_dir": "/tmp/ray_worker",
                               "ray_node_log_dir": "/tmp/sage_worker_logs", **no_resources}


def test_every_value_reaches_the_inventory(home: Path) -> None:
    inv = inventory.build(cfg_from(HOSTILE_CONFIG, home))
    v = inv["all"]["children"]["sage_cluster"]["vars"]
    assert v["ansible_user"] == "ops"
    assert v["ansible_ssh_private_key_file"] == str(home / "keys" / "id ed25519")
    assert v["ansible_ssh_timeout"] == 7
    args = shlex.split(v["ansible_ssh_common_args"])  # one argument each, even with a space in the path
    assert "StrictHostKeyChecking=yes" in args
    assert f"UserKnownHostsFile={home / '.sage' / 'hosts.known'}" in args
    assert (v["ray_node_head_port"], v["ray_node_dashboard_port"], v["ray_node_dashboard_host"]) == \
        (7000, 9000, "127.0.0.1")
    assert v["ray_node_python_path"] == HOSTILE_PYTHON
    assert v["ray_node_ray_command"] == HOSTILE_RAY
    assert v["ray_node_conda_env"] == ""
    assert v["ray_node_python_version_match"] == "patch"
    assert v["sage_deploy_dest"] == "/srv/sage home"
    assert v["sage_deploy_exclude"][-2:] == ["data/", "*.log"]
    assert groups(inv)["sage_head"]["vars"]["ray_node_temp_dir"] == "/var/tmp/ray head"
    assert groups(inv)["sage_workers"]["vars"]["ray_node_log_dir"] == "/var/log/sage worker"
    assert groups(inv)["sage_workers"]["hosts"]["sage4"]["ansible_port"] == 2222


def test_no_workers_renders_an_empty_worker_group(home: Path) -> None:
    inv = inventory.build(cfg_from('head: {host: h1}\nworkers_ssh_hosts: ""\n', home))
    assert not (groups(inv)["sage_workers"] or {}).get("hosts")
    assert list(groups(inv)["sage_head"]["hosts"]) == ["h1"]


def test_bind_host_is_the_workers_node_ip(home: Path) -> None:
    inv = inventory.build(cfg_from('worker: {bind_host: 10.1.2.3}\nworkers_ssh_hosts: "sage2"\n', home))
    assert groups(inv)["sage_workers"]["hosts"]["sage2"]["ray_node_node_ip"] == "10.1.2.3"


@pytest.mark.parametrize("head", ["localhost", "127.0.0.1", socket.gethostname()])
def test_head_on_this_machine_uses_a_local_connection(home: Path, head: str) -> None:
    if not config.is_valid_host(head):
        pytest.skip(f"this machine's name {head!r} is not a valid host name")
    inv = inventory.build(cfg_from(f'head: {{host: "{head}"}}\nworkers_ssh_hosts: "sage2:22"\n', home))
    hostvars = groups(inv)["sage_head"]["hosts"][head]
    assert hostvars["ansible_connection"] == "local"
    assert "ansible_host" not in hostvars
    assert groups(inv)["sage_workers"]["hosts"]["sage2"].get("ansible_connection") is None


def test_builtin_default_is_a_local_one_node_cluster(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config, "DEFAULT_PATH", home / "none.yaml")
    inv = inventory.build(config.load())
    assert groups(inv)["sage_head"]["hosts"]["localhost"]["ansible_connection"] == "local"
    assert not (groups(inv)["sage_workers"] or {}).get("hosts")
    v = inv["all"]["children"]["sage_cluster"]["vars"]
    assert v["ray_node_dashboard_host"] == "127.0.0.1"
    assert v["ray_node_python_path"] == sys.executable


# ---------------------------------------------------------------- through the CLI and the real ansible-inventory

@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict:
    home = tmp_path_factory.mktemp("inv")
    cfg_path = home / "c.yaml"
    cfg_path.write_text(HOSTILE_CONFIG)
    out = run_many({fmt: [*SAGE, "inventory", "--format", fmt, "--config", str(cfg_path)]
                    for fmt in ("yaml", "json", "ini")} | {"default": [*SAGE, "inventory", "--config", str(cfg_path)]},
                   home)
    files = {}
    for fmt, ext in (("yaml", "yml"), ("ini", "ini")):
        files[fmt] = home / f"hosts.{ext}"
        files[fmt].write_text(out[fmt].stdout)
    ansible_inventory = str(Path(sys.executable).parent / "ansible-inventory")
    listed = run_many({fmt: [ansible_inventory, "-i", str(path), "--list"] for fmt, path in files.items()}, home)
    return {"home": home, "sage": out, "ansible": listed}


@pytest.mark.parametrize("fmt", ["yaml", "json", "ini", "default"])
def test_sage_inventory_formats_work(rendered: dict, fmt: str) -> None:
    proc = rendered["sage"][fmt]
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "sage2" in proc.stdout and "sage4" in proc.stdout and "base-sage" in proc.stdout


def test_default_format_is_yaml(rendered: dict) -> None:
    assert rendered["sage"]["default"].stdout == rendered["sage"]["yaml"].stdout


def test_json_is_an_inventory_scripts_list(rendered: dict) -> None:
    data = json.loads(rendered["sage"]["json"].stdout)
    hostvars = data["_meta"]["hostvars"]
    assert set(hostvars) == {"base-sage", "sage2", "sage4"}
    assert hostvars["sage4"]["ansible_port"] == 2222
    assert data["sage_cluster"]["children"] == ["sage_head", "sage_workers"]
    assert data["sage_head"]["hosts"] == ["base-sage"]
    assert data["sage_workers"]["hosts"] == ["sage2", "sage4"]
    assert data["sage_cluster"]["vars"]["ray_node_python_path"] == HOSTILE_PYTHON


def test_ini_has_the_groups(rendered: dict) -> None:
    text = rendered["sage"]["ini"].stdout
    parser = configparser.ConfigParser(allow_no_value=True, delimiters=("=",), interpolation=None, strict=False)
    parser.optionxform = str  # type: ignore[assignment]
    parser.read_string(text)
    assert {"sage_head", "sage_workers", "sage_cluster:children", "sage_cluster:vars"} <= set(parser.sections())


@pytest.mark.parametrize("fmt", ["yaml", "ini"])
def test_ansible_inventory_parses_it_and_values_survive(rendered: dict, fmt: str) -> None:
    proc = rendered["ansible"][fmt]
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert "sage_cluster" in data["all"]["children"]
    assert data["sage_cluster"]["children"] == ["sage_head", "sage_workers"]
    assert data["sage_head"]["hosts"] == ["base-sage"]
    assert sorted(data["sage_workers"]["hosts"]) == ["sage2", "sage4"]
    home = rendered["home"]
    for host in ("base-sage", "sage2", "sage4"):
        hv = data["_meta"]["hostvars"][host]
        assert hv["ray_node_python_path"] == HOSTILE_PYTHON
        # Ansible would put the path into a shell command unquoted: such a path is discovered instead.
        assert hv["ansible_python_interpreter"] == "auto_silent"
        assert hv["ray_node_ray_command"] == HOSTILE_RAY
        assert hv["sage_deploy_dest"] == "/srv/sage home"
        assert hv["ansible_user"] == "ops"
        assert hv["ansible_ssh_private_key_file"] == str(home / "keys" / "id ed25519")
        assert int(hv["ansible_ssh_timeout"]) == 7
        assert "UserKnownHostsFile=" in hv["ansible_ssh_common_args"]
        assert shlex.split(hv["ansible_ssh_common_args"])[3] == f"UserKnownHostsFile={home}/.sage/hosts.known"
        assert hv["ray_node_conda_env"] == ""
    assert int(data["_meta"]["hostvars"]["sage4"]["ansible_port"]) == 2222
    assert data["_meta"]["hostvars"]["base-sage"]["ray_node_type"] == "head"
    assert data["_meta"]["hostvars"]["sage2"]["ray_node_temp_dir"] == "/var/tmp/ray worker"


RICH_CONFIG = """\
head:
  host: h1
  num_cpus: 0
  fault_tolerance: redis
  redis_address: rediss://r1:6380
  redis_password_file: {secret}
worker:
  resources: {{slot: 1}}
  labels: {{zone: a}}
workers_ssh_hosts:
  - w1:22
  - {{host: gpu1, port: 2222, ssh: {{user: ops, key_path: /keys/ops}}, num_gpus: 4, memory: 1000000000}}
  - {{host: odd1, remote: {{python_path: /opt/x/bin/python, ray_command: /opt/x/bin/ray, conda_env: "",
                           python_version_match: patch}}}}
deploy:
  install: none
"""


def host_vars(inv: dict) -> dict[str, dict]:
    """Each host's variables as Ansible merges them: the cluster's, then its group's, then its own."""
    cluster = inv["all"]["children"]["sage_cluster"]
    return {host: {**cluster.get("vars", {}), **group.get("vars", {}), **own}
            for group in groups(inv).values() for host, own in (group.get("hosts") or {}).items()}


def role_problems(variables: dict) -> list[str]:
    """What each role's argument-spec task would say of these variables (the role's defaults fill the rest)."""
    import yaml
    from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

    problems = []
    for spec_file in sorted((Path(inventory.__file__).parents[2] / "roles").glob("*/meta/argument_specs.yml")):
        for entry in yaml.safe_load(spec_file.read_text())["argument_specs"].values():
            options = entry.get("options", {})
            given = {name: value for name, value in variables.items() if name in options}
            result = ArgumentSpecValidator(options).validate(given, validate_role_argument_spec=True)
            problems += [f"{spec_file.parts[-3]}: {message}" for message in result.error_messages]
    return problems


def config_text(name: str, home: Path) -> str:
    """The guide's config, the hostile one or the rich one (with its Redis password file, 0600, in home)."""
    secret = home / "redis.secret"
    secret.write_text("pw")
    secret.chmod(0o600)
    return {"guide": GUIDE_CONFIG, "hostile": HOSTILE_CONFIG, "rich": RICH_CONFIG.format(secret=secret)}[name]


@pytest.mark.parametrize("text", ["guide", "hostile", "rich"])
def test_what_sage_renders_passes_the_roles_argument_specs(home: Path, text: str) -> None:
    """sage's own runs skip the roles' argument-spec task (sage_rolespec_validate=false): sage checked the config.
    This is that promise: every host's variables as sage renders them pass every role's spec, as they would there."""
    hosts = host_vars(inventory.build(cfg_from(config_text(text, home), home)))
    assert len(hosts) >= 3
    actions = {"ray_node_action": "status", "sage_provision_ssh_password": ""}  # the playbooks' own
    for host, variables in hosts.items():
        assert role_problems({**variables, **actions}) == [], host
    broken = {**next(iter(hosts.values())), **actions, "ray_node_head_port": "six", "ray_node_type": "boss"}
    assert len(role_problems(broken)) == 2  # the check this test stands for does fail on a bad value


# ---------------------------------------------------------------- the inventory plugin sage.cluster.sage

REPO = Path(__file__).resolve().parents[2]


def ansible_inventory(source: Path, home: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    """The real ansible-inventory with the repository's ansible.cfg, as `home`'s user, in `home`."""
    return subprocess.run([str(Path(sys.executable).parent / "ansible-inventory"), "-i", str(source), *args],
                          cwd=home, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
                          env=user_env(home, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), **env))


@pytest.mark.parametrize("text", ["guide", "hostile", "rich"])
def test_the_plugin_gives_what_sage_renders(home: Path, text: str) -> None:
    """Groups, hosts and every variable, with Ansible's own reading of them (strings left templatable)."""
    (home / "cluster.yaml").write_text(config_text(text, home))
    # config: relative to the inventory file.
    (home / "my.sage.yml").write_text("plugin: sage.cluster.sage\nconfig: cluster.yaml\n")
    proc = ansible_inventory(home / "my.sage.yml", home, "--list", "--export")
    assert proc.returncode == 0, proc.stderr
    assert "warning" not in without_others_warnings(proc.stderr).lower(), proc.stderr
    listed = json.loads(proc.stdout)
    # Ansible's own: the implicit group ungrouped, and the output's format name.
    listed["all"]["children"].remove("ungrouped")
    del listed["_meta"]["profile"]
    assert listed == inventory.as_script_json(inventory.build(config.load(home / "cluster.yaml")))


def test_a_config_sage_refuses_fails_the_plugin_with_sages_line(home: Path) -> None:
    bad = home / "cluster.yaml"
    bad.write_text("head:\n  host: sage-head\n  head_port: 99999\n")
    with pytest.raises(config.ConfigError) as refused:
        config.load(bad)
    proc = ansible_inventory(REPO / "inventory" / "sage.yml", home, "--list", SAGE_CONFIG=str(bad))
    assert proc.returncode != 0, proc.stdout
    assert f" plugin: {refused.value}\n" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_missing_config_says_which_inventory_file_named_it(home: Path) -> None:
    (home / "my.sage.yml").write_text("plugin: sage.cluster.sage\nconfig: nowhere.yaml\n")
    proc = ansible_inventory(home / "my.sage.yml", home, "--list")
    assert proc.returncode != 0, proc.stdout
    assert (f"{home / 'nowhere.yaml'}: no such config file (named by config: in {home / 'my.sage.yml'})"
            in proc.stderr), proc.stderr


def test_reading_the_inventory_writes_nothing(tmp_path: Path) -> None:
    """Token auth is on (the default) and known_hosts is under ~/.sage: the inventory only names them."""
    home = tmp_path / "home"
    home.mkdir()
    cfg = tmp_path / "cluster.yaml"
    cfg.write_text(GUIDE_CONFIG)
    proc = ansible_inventory(REPO / "inventory" / "sage.yml", home, "--list", SAGE_CONFIG=str(cfg))
    assert proc.returncode == 0, proc.stderr
    hostvars = json.loads(proc.stdout)["_meta"]["hostvars"]
    assert hostvars["sage2"]["ray_node_auth_token_file"] == str(home / ".sage" / "ray_auth_token")
    # Ansible keeps its own (empty) ~/.ansible/tmp; no file anywhere, and no ~/.sage.
    assert [p for p in home.rglob("*") if not p.is_dir()] == []
    assert not (home / ".sage").exists()


def test_ansible_doc_renders_the_plugin(tmp_path: Path) -> None:
    proc = subprocess.run([str(Path(sys.executable).parent / "ansible-doc"), "-t", "inventory", "sage.cluster.sage"],
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL, cwd=tmp_path,
                          env=user_env(tmp_path, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1"))
    assert proc.returncode == 0, proc.stderr
    assert "config" in proc.stdout and "plugin: sage.cluster.sage" in proc.stdout, proc.stdout
    assert without_others_warnings(proc.stderr) == "", proc.stderr


def test_only_other_packages_import_warnings_are_left_out() -> None:
    dsa = ("/v/lib/python3.13/site-packages/ansible/_internal/_ssh/_ssh_agent.py:18: CryptographyDeprecationWarning: "
           "DSA is deprecated\n  from cryptography.hazmat.primitives.asymmetric.dsa import (\n")
    ours = "[WARNING]: sage.cluster.sage: something of ours\n"
    assert without_others_warnings(dsa) == ""
    assert without_others_warnings(dsa + ours) == ours
    assert without_others_warnings("/repo/plugins/inventory/sage.py:3: UserWarning: x\n  y\n") != ""
