"""The config file as a user meets it: the guide's example, the template, defaults, mistakes, and edits."""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from ansible_collections.sage.cluster.plugins.plugin_utils import config
from ansible_collections.sage.cluster.plugins.plugin_utils.config import ConfigError, Endpoint

from sage_cluster import config_edit

from tests.unit.helpers import GUIDE_CONFIG, PY_SAGE, SAGE, run_many, stderr_lines

DEFAULTS = {s: {k.name: k.default for k in config.SCHEMA if k.section == s} for s in config.SECTIONS}


def write(path: Path, text: str) -> Path:
    path.write_bytes(text.encode())
    return path


# ---------------------------------------------------------------- the guide's config and the template

def test_guide_example_loads_with_the_guides_values(home: Path) -> None:
    cfg = config.load(write(home / "guide.yaml", GUIDE_CONFIG))
    assert cfg.warnings == []
    # The guide's keys, and Ray's resources left to Ray (the guide sets none).
    no_resources = {"num_cpus": None, "num_gpus": None, "memory": None, "object_store_memory": None,
                    "resources": {}, "labels": {}}
    # The head's own env keys are null: the head takes remote.*'s. Fault tolerance is off.
    no_fault_tolerance = {"fault_tolerance": "none", "gcs_storage_dir": "~/.sage/gcs", "redis_address": None,
                          "redis_password_file": None, "gcs_reconnect_timeout": 600}
    assert cfg["head"] == {"host": "base-sage", "head_port": 6379, "dashboard_port": 8265,
                           "dashboard_host": "0.0.0.0", "temp_dir": "/tmp/ray_head",
                           "log_dir": "/tmp/sage_head_logs", "conda_env": None, "python_path": None,
                           "ray_command": None, **no_resources, **no_fault_tolerance}
    assert cfg["worker"] == {"bind_host": "localhost", "temp_dir": "/tmp/ray_worker",
                             "log_dir": "/tmp/sage_worker_logs", **no_resources}
    assert cfg.workers == [Endpoint("sage2", 22), Endpoint("sage4", 22)]
    assert cfg["ssh"]["user"] == "sage"
    assert cfg["ssh"]["key_path"] == "~/.ssh/id_rsa"
    assert cfg["ssh"]["connect_timeout"] == 10
    assert cfg["remote"] == {**DEFAULTS["remote"], "sage_home": "/home/sage",
                             "python_path": "/opt/conda/envs/sage/bin/python",
                             "ray_command": "/opt/conda/envs/sage/bin/ray", "conda_env": "sage"}
    # Values come back as plain Python types (not ruamel's quoted-string wrappers).
    assert type(cfg["head"]["host"]) is str and type(cfg["head"]["head_port"]) is int


def test_guide_example_values_are_the_defaults() -> None:
    guide = config.parse(GUIDE_CONFIG, Path("guide.yaml"))
    empty = config.parse("", Path("empty.yaml"))
    assert guide.values == empty.values == DEFAULTS
    # The guide's workers are its own example; a file that names none has none.
    assert guide.workers == [Endpoint("sage2", 22), Endpoint("sage4", 22)] and empty.workers == []


def test_template_parses_and_equals_the_defaults() -> None:
    text = config.template_text()
    cfg = config.parse(text, Path("template.yaml"))
    assert cfg.values == DEFAULTS
    assert cfg.workers == [Endpoint("sage2", 22), Endpoint("sage4", 22)]
    assert cfg.warnings == []
    # Every key of the schema is in the template, each with a comment.
    for key in config.SCHEMA:
        line = next(ln for ln in text.splitlines() if ln.strip().startswith(f"{key.name}:"))
        assert "#" in line, line
    assert any(ln.startswith(f"{config.WORKERS_KEY}:") for ln in text.splitlines())


def test_workers_as_string_or_list_are_the_same() -> None:
    as_string = config.parse('workers_ssh_hosts: "sage2:22,sage4:2222"\n', Path("s.yaml"))
    as_list = config.parse("workers_ssh_hosts:\n  - sage2:22\n  - 'sage4:2222'\n", Path("l.yaml"))
    as_flow = config.parse("workers_ssh_hosts: [sage2:22, sage4:2222]\n", Path("f.yaml"))
    assert as_string.workers == as_list.workers == as_flow.workers == [Endpoint("sage2", 22),
                                                                       Endpoint("sage4", 2222)]
    spaced = config.parse('workers_ssh_hosts: " sage2:22 , sage4:2222 ,"\n', Path("sp.yaml"))
    assert spaced.workers == as_string.workers


def test_worker_port_defaults_to_22() -> None:
    cfg = config.parse('workers_ssh_hosts: "sage2,sage4:2200"\n', Path("c.yaml"))
    assert cfg.workers == [Endpoint("sage2", 22), Endpoint("sage4", 2200)]
    assert config.parse_endpoint("sage9", "arg") == Endpoint("sage9", 22)
    assert str(config.parse_endpoint("10.0.0.5:2222", "arg")) == "10.0.0.5:2222"


def test_ipv6_workers_in_brackets(tmp_path: Path) -> None:
    cfg = config.parse("workers_ssh_hosts: '[2001:db8::1]:2222,[::2]'\n", Path("c.yaml"))
    assert cfg.workers == [Endpoint("2001:db8::1", 2222), Endpoint("::2", 22)]
    assert [str(w) for w in cfg.workers] == ["[2001:db8::1]:2222", "[::2]:22"]
    path = write(tmp_path / "c.yaml", "workers_ssh_hosts: '[::2]'\n")
    config_edit.edit_workers(path, add=Endpoint("fd00::5", 22))
    assert path.read_text() == "workers_ssh_hosts: '[::2]:22,[fd00::5]:22'\n"
    assert config.load(path).workers == [Endpoint("::2", 22), Endpoint("fd00::5", 22)]


def test_empty_worker_list_means_no_workers() -> None:
    for text in ('workers_ssh_hosts: ""\n', "workers_ssh_hosts: []\n", "workers_ssh_hosts:\n"):
        assert config.parse(text, Path("c.yaml")).workers == []


def test_missing_sections_take_defaults() -> None:
    cfg = config.parse("head:\n  host: h1\nssh:\n", Path("c.yaml"))
    assert cfg["head"] == {**DEFAULTS["head"], "host": "h1"}
    assert cfg["ssh"] == DEFAULTS["ssh"]
    assert cfg["remote"] == DEFAULTS["remote"]


def test_conda_env_may_be_empty() -> None:
    for text in ('remote:\n  conda_env: ""\n', "remote:\n  conda_env:\n"):
        assert config.parse(text, Path("c.yaml"))["remote"]["conda_env"] == ""


def test_crlf_file_loads(home: Path) -> None:
    cfg = config.load(write(home / "c.yaml", GUIDE_CONFIG.replace("\n", "\r\n")))
    assert cfg["head"]["host"] == "base-sage" and len(cfg.workers) == 2


# ---------------------------------------------------------------- where the config comes from

def test_find_precedence_of_named_files(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    found = config.find(None)
    assert found.path is None and not found.named and str(home / ".sage" / "config.yaml") in found.why
    assert config.write_path(None) == home / ".sage" / "config.yaml"
    monkeypatch.setenv("SAGE_CONFIG", str(home / "env.yaml"))
    assert config.find(None) == config.Found(home / "env.yaml", "named by $SAGE_CONFIG", True)
    assert config.write_path(None) == home / "env.yaml"
    assert config.find(str(home / "flag.yaml")) == config.Found(home / "flag.yaml", "named by --config", True)
    assert config.find("~/x.yaml").path == home / "x.yaml"
    assert config.write_path("~/x.yaml") == home / "x.yaml"
    monkeypatch.setenv("SAGE_CONFIG", "")
    assert config.find(None).path is None


def test_load_uses_env_then_flag(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env_file = write(home / "env.yaml", "head:\n  host: from-env\nworkers_ssh_hosts: ''\n")
    flag_file = write(home / "flag.yaml", "head:\n  host: from-flag\nworkers_ssh_hosts: ''\n")
    monkeypatch.setenv("SAGE_CONFIG", str(env_file))
    assert config.load()["head"]["host"] == "from-env"
    assert config.load(flag_file)["head"]["host"] == "from-flag"


@pytest.mark.parametrize("how", ["flag", "env"])
def test_missing_named_file_is_an_error(home: Path, monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    missing = home / "nope.yaml"
    if how == "env":
        monkeypatch.setenv("SAGE_CONFIG", str(missing))
    with pytest.raises(ConfigError) as err:
        config.load(missing if how == "flag" else None)
    msg = str(err.value)
    assert str(missing) in msg and "Fix:" in msg and "\n" not in msg
    assert not missing.exists()


def test_missing_default_file_is_the_builtin_default(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config, "DEFAULT_PATH", home / "nowhere" / "config.yaml")
    cfg = config.load()
    assert cfg.is_builtin and cfg.path is None
    assert cfg["head"]["host"] == "localhost"
    assert cfg.workers == []
    assert cfg["head"]["dashboard_host"] == "127.0.0.1"
    assert config.is_this_machine(cfg["head"]["host"])
    assert not (home / "nowhere").exists()  # loading never writes


def test_default_file_under_home_is_used(home: Path) -> None:
    write_path = home / ".sage" / "config.yaml"
    write_path.parent.mkdir()
    write(write_path, "head:\n  host: from-home\nworkers_ssh_hosts: ''\n")
    cfg = config.load()
    assert cfg.path == write_path and cfg["head"]["host"] == "from-home"


# ---------------------------------------------------------------- broken configs, through the real CLI

# (id, file text, the line the message must name or None, text the message must name (the key))
BROKEN = [
    ("yaml-unclosed-flow", "head: [1\n", 1, "head"),
    ("yaml-bad-indent", "head:\n  host: a\n bad: x\n", 3, "bad"),
    ("yaml-colon-in-value", "head:\n  host: a: b\n", 2, "host"),
    ("yaml-tab-indent", "head:\n\thost: sage1\n", 2, "host"),
    ("yaml-two-documents", "head:\n  host: a\n---\nhead:\n  host: b\n", 3, "document"),
    ("duplicate-key", "head:\n  host: a\n  host: b\n", 3, "host"),
    ("duplicate-section", "head:\n  host: a\nssh:\n  user: x\nhead:\n  host: b\n", 5, "head"),
    ("top-level-list", "- head\n- ssh\n", 1, "mapping"),
    ("section-is-list", "head: [1]\n", 1, "head"),
    ("section-is-string", 'head: "x"\n', 1, "head"),
    ("section-is-block-list", "ssh:\n  - user\n", 1, "ssh"),
    ("port-quoted", 'head:\n  head_port: "6379"\n', 2, "head.head_port"),
    ("port-float", "head:\n  head_port: 6379.5\n", 2, "head.head_port"),
    ("port-bool", "head:\n  host: h\n  dashboard_port: true\n", 3, "head.dashboard_port"),
    ("port-zero", "head:\n  head_port: 0\n", 2, "head.head_port"),
    ("port-negative", "head:\n  dashboard_port: -1\n", 2, "head.dashboard_port"),
    ("port-too-big", "head:\n  head_port: 70000\n", 2, "head.head_port"),
    ("timeout-quoted", 'ssh:\n  connect_timeout: "10"\n', 2, "ssh.connect_timeout"),
    ("timeout-zero", "ssh:\n  user: sage\n  connect_timeout: 0\n", 3, "ssh.connect_timeout"),
    ("worker-port-not-a-number", 'workers_ssh_hosts: "sage2:22,sage3:abc"\n', 1, "workers_ssh_hosts"),
    ("worker-port-not-a-number-list", "head:\n  host: h\nworkers_ssh_hosts:\n  - sage2:22\n  - sage3:abc\n", 5,
     "workers_ssh_hosts"),
    ("worker-port-superscript", 'workers_ssh_hosts: "sage2:\u00b2"\n', 1, "workers_ssh_hosts"),
    ("worker-port-zero", 'workers_ssh_hosts: "sage2:0"\n', 1, "workers_ssh_hosts"),
    ("worker-port-too-big", "\nworkers_ssh_hosts: sage2:70000\n", 2, "workers_ssh_hosts"),
    ("worker-host-port-extra", 'workers_ssh_hosts: "sage2:22:extra"\n', 1, "workers_ssh_hosts"),
    ("worker-empty-host", 'workers_ssh_hosts: ":22"\n', 1, "workers_ssh_hosts"),
    ("worker-host-with-space", 'workers_ssh_hosts: "bad host:22"\n', 1, "workers_ssh_hosts"),
    ("worker-host-with-semicolon", 'workers_ssh_hosts: "sage2;reboot:22"\n', 1, "workers_ssh_hosts"),
    ("worker-host-command-subst", "workers_ssh_hosts:\n  - \"$(touch pwned):22\"\n", 2, "workers_ssh_hosts"),
    ("worker-host-leading-dash", 'workers_ssh_hosts: "-oProxyCommand=sh:22"\n', 1, "workers_ssh_hosts"),
    ("worker-listed-twice", 'workers_ssh_hosts: "sage2:22,sage2:2222"\n', 1, "workers_ssh_hosts"),
    ("worker-listed-twice-other-case", "workers_ssh_hosts:\n  - sage2:22\n  - SAGE2:22\n", 3,
     "workers_ssh_hosts"),
    ("worker-item-empty", "workers_ssh_hosts:\n  - sage2:22\n  -\n", 3, "workers_ssh_hosts"),
    ("workers-is-integer", "workers_ssh_hosts: 5\n", 1, "workers_ssh_hosts"),
    ("workers-is-mapping", "workers_ssh_hosts:\n  sage2: 22\n", 1, "workers_ssh_hosts"),
    ("head-host-empty", 'head: {host: ""}\n', 1, "head.host"),
    ("ssh-user-empty", "ssh: {user: }\n", 1, "ssh.user"),
    ("ssh-user-with-space", 'ssh:\n  user: "a b"\n', 2, "ssh.user"),
    ("head-host-with-space", 'head:\n  host: "base sage"\n', 2, "head.host"),
    ("head-host-with-semicolon", 'head:\n  host: "h;rm -rf /"\n', 2, "head.host"),
    ("head-host-command-subst", 'head:\n  host: "$(id)"\n', 2, "head.host"),
    ("head-host-leading-dash", 'head:\n  host: "-oProxyCommand=x"\n', 2, "head.host"),
    ("head-host-is-list", "head:\n  host: [a, b]\n", 2, "head.host"),
    ("dashboard-host-bad", 'head:\n  dashboard_host: "0.0.0.0 "\n', 2, "head.dashboard_host"),
    ("bind-host-bad", 'worker:\n  bind_host: "not a host"\n', 2, "worker.bind_host"),
    ("remote-path-relative", 'remote:\n  sage_home: "home/sage"\n', 2, "remote.sage_home"),
    ("python-path-relative", "remote:\n  python_path: python3\n", 2, "remote.python_path"),
    ("temp-dir-relative", "worker:\n  temp_dir: tmp/ray\n", 2, "worker.temp_dir"),
    ("host-key-policy-unknown", "ssh:\n  strict_host_key_checking: maybe\n", 2,
     "ssh.strict_host_key_checking"),
    ("key-path-integer", "ssh:\n  key_path: 5\n", 2, "ssh.key_path"),
    ("python-path-jinja", 'remote:\n  python_path: "/opt/{{ lookup(\'pipe\', \'id\') }}/python"\n', 2,
     "remote.python_path"),
    ("known-hosts-with-space", "ssh:\n  known_hosts: ~/my known_hosts\n", 2, "ssh.known_hosts"),
    ("yaml-nul-character", "head:\n  temp_dir: /tmp/\x00x\n", 2, "#x0000"),
    ("worker-ipv6-without-brackets", "workers_ssh_hosts: 2001:db8::1\n", 1, "[2001:db8::1]:22"),
    ("worker-brackets-not-ipv6", "workers_ssh_hosts: '[sage2]:22'\n", 1, "workers_ssh_hosts"),
    ("exclude-not-a-list", 'deploy:\n  exclude: "*.log"\n', 2, "deploy.exclude"),
    ("install-unknown-word", 'deploy:\n  install: sometimes\n', 2, "deploy.install"),
    ("install-integer", "deploy:\n  source: /srv/p\n  install: 5\n", 3, "deploy.install"),
    ("install-empty-command", "deploy:\n  install: []\n", 2, "deploy.install"),
    ("install-command-with-empty-arg", 'deploy:\n  install: ["./setup.sh", ""]\n', 2, "deploy.install"),
    ("install-shell-string", 'deploy:\n  install: "./quickstart.sh --yes"\n', 2, "deploy.install"),
    ("pip-args-not-a-list", 'deploy:\n  pip_args: "--no-index"\n', 2, "deploy.pip_args"),
    ("install-timeout-too-big", "deploy:\n  install_timeout: 99999\n", 2, "deploy.install_timeout"),
    ("head-is-also-worker", 'head:\n  host: sage2\nworkers_ssh_hosts: "sage2:22,sage4:22"\n', 3,
     "workers_ssh_hosts"),
    ("head-is-also-worker-list", "head:\n  host: sage2\nworkers_ssh_hosts:\n  - sage4:22\n  - sage2:2222\n", 5,
     "workers_ssh_hosts"),
    # SAGE's forms (issue 19): ssh.workers, the head's own env, detected paths.
    ("ssh-workers-port-bad", "ssh:\n  workers:\n    - host: w1\n      port: 0\n", 3, "ssh.workers"),
    ("ssh-workers-not-a-list", "ssh:\n  user: sage\n  workers: 5\n", 3, "ssh.workers"),
    ("ssh-workers-item-bad-host", "ssh:\n  workers:\n    - w1:22\n    - 'bad host:22'\n", 4, "ssh.workers"),
    ("ssh-workers-unknown-own-key", "ssh:\n  workers:\n    - {host: w1, num_gpu: 1}\n", 3, "num_gpus"),
    ("ssh-workers-own-value-bad", "ssh:\n  workers:\n    - host: w1\n      num_gpus: -1\n", 4,
     "ssh.workers[w1].worker.num_gpus"),
    ("ssh-workers-head-too", "head:\n  host: w1\nssh:\n  workers:\n    - host: w1\n", 5, "ssh.workers"),
    ("both-worker-lists-differ", "workers_ssh_hosts: a:22\nssh:\n  workers:\n    - host: b\n", 3,
     "workers_ssh_hosts"),
    ("head-python-path-relative", "head:\n  python_path: bin/python\n", 2, "head.python_path"),
    ("head-ray-command-integer", "head:\n  ray_command: 5\n", 2, "head.ray_command"),
    ("head-conda-env-bad", 'head:\n  conda_env: "my env"\n', 2, "head.conda_env"),
    ("python-path-auto-typo", "remote:\n  python_path: autodetect\n", 2, "remote.python_path"),
    ("fault-tolerance-unknown", "head:\n  fault_tolerance: etcd\n", 2, "head.fault_tolerance"),
    ("fault-tolerance-redis-without-address", "head:\n  fault_tolerance: redis\n", 2, "head.redis_address"),
    ("redis-address-without-port", "head:\n  redis_address: redis://r1\n", 2, "head.redis_address"),
    ("gcs-storage-dir-relative", "head:\n  gcs_storage_dir: gcs\n", 2, "head.gcs_storage_dir"),
    ("gcs-reconnect-timeout-zero", "head:\n  gcs_reconnect_timeout: 0\n", 2, "head.gcs_reconnect_timeout"),
]
assert len(BROKEN) >= 30 and len({case[0] for case in BROKEN}) == len(BROKEN)


# The CLI runs these through `python -m sage_cluster config show`, and the CLI_INFO ones through
# `sage cluster info` too; every case also goes through config.load in-process below (same message, no subprocess).
# Each CLI run is a fresh Python (~0.3 s of CPU), so the CLI sample is one or two cases per kind of mistake.
CLI_SHOW = {
    "yaml-unclosed-flow", "yaml-bad-indent", "yaml-tab-indent", "duplicate-key", "section-is-list",
    "section-is-string", "port-quoted", "port-float", "port-bool", "port-zero", "port-negative", "port-too-big",
    "worker-port-not-a-number", "worker-port-not-a-number-list", "worker-host-port-extra", "worker-empty-host",
    "worker-host-with-space", "worker-host-with-semicolon", "worker-host-command-subst", "worker-host-leading-dash",
    "worker-listed-twice", "workers-is-integer", "head-host-empty", "ssh-user-empty", "head-host-with-semicolon",
    "head-host-command-subst", "head-host-leading-dash", "remote-path-relative", "python-path-relative",
    "head-is-also-worker", "worker-port-superscript", "top-level-list", "install-shell-string",
    "both-worker-lists-differ", "ssh-workers-port-bad", "head-python-path-relative",
}
CLI_INFO = {
    "yaml-unclosed-flow", "yaml-tab-indent", "duplicate-key", "section-is-string", "port-quoted", "port-too-big",
    "worker-port-not-a-number-list", "worker-host-command-subst", "workers-is-integer", "ssh-user-empty",
    "remote-path-relative", "head-is-also-worker", "both-worker-lists-differ",
}
assert CLI_INFO <= CLI_SHOW <= {case[0] for case in BROKEN} and len(CLI_SHOW) >= 30
CLI_CASES = [(c, cmd) for c in BROKEN for cmd in ("config show", "cluster info")
             if c[0] in (CLI_SHOW if cmd == "config show" else CLI_INFO)]

DEFAULTS_CASES = {
    "empty-file": "",
    "comments-only": "# only comments\n",
    "head-only": "head:\n  host: h1\nworkers_ssh_hosts: sage2\n",
    "all-sections-empty": "head:\nworker:\nssh:\nremote:\ndeploy:\n",
}
UNKNOWN_KEYS = "head:\n  host: h1\n  dashbord_port: 1\nworkres_ssh_hosts: x\n"
SCALE_REFUSED = {
    "space": (["cluster", "scale", "add", "bad host:22"], "bad host"),
    "leading-dash": (["cluster", "scale", "add", "--", "-oProxyCommand=x:22"], "-oProxyCommand=x"),
    "bad-port": (["cluster", "scale", "add", "sage5:99999"], "99999"),
    "duplicate": (["cluster", "scale", "add", "sage2:22"], "sage2"),
    "head": (["cluster", "scale", "add", "base-sage:22"], "base-sage"),
    "scale-remove-unlisted": (["cluster", "scale", "remove", "notlisted:22"], "notlisted"),
    "worker-remove-unlisted": (["worker", "remove", "notlisted:22"], "notlisted"),
    "two-colons": (["worker", "add", "a:b:c"], "a:b:c"),
}


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Every CLI run of this module, started at once (each is a fresh Python), against files in one HOME."""
    home = tmp_path_factory.mktemp("cli")
    files: dict = {}
    jobs: dict = {}
    for name, text, _, _ in BROKEN:
        if name in CLI_SHOW:
            files[name] = path = write(home / f"{name}.yaml", text)
            jobs[("broken", name, "config show")] = [*PY_SAGE, "config", "show", "--config", str(path)]
        if name in CLI_INFO:
            jobs[("broken", name, "cluster info")] = [*SAGE, "cluster", "info", "--config", str(path)]
    for name, text in DEFAULTS_CASES.items():
        files[name] = path = write(home / f"defaults-{name}.yaml", text)
        jobs[("defaults", name)] = [*PY_SAGE, "config", "show", "--json", "--config", str(path)]
    files["unknown"] = path = write(home / "unknown.yaml", UNKNOWN_KEYS)
    jobs[("unknown", "config show")] = [*PY_SAGE, "config", "show", "--config", str(path)]
    jobs[("unknown", "cluster info")] = [*SAGE, "cluster", "info", "--config", str(path)]
    env_file = write(home / "env.yaml", "head:\n  host: from-env\nworkers_ssh_hosts: ''\n")
    flag_file = write(home / "flag.yaml", "head:\n  host: from-flag\nworkers_ssh_hosts: ''\n")
    show = [*PY_SAGE, "config", "show", "--json"]
    jobs[("precedence", "default")] = show
    jobs[("precedence", "env")] = (show, {"SAGE_CONFIG": str(env_file)})
    jobs[("precedence", "flag-beats-env")] = ([*show, "--config", str(flag_file)], {"SAGE_CONFIG": str(env_file)})
    jobs[("precedence", "env-missing")] = (show, {"SAGE_CONFIG": str(home / "missing.yaml")})
    for name, (argv, _) in SCALE_REFUSED.items():
        files[f"scale-{name}"] = path = write(home / f"scale-{name}.yaml", GUIDE_CONFIG)
        dash = argv.index("--") if "--" in argv else len(argv) - 1
        jobs[("scale", name)] = [*SAGE, *argv[:dash], "--config", str(path), *argv[dash:]]
    return {"results": run_many(jobs, home), "files": files, "home": home}


def check_error_line(message: str, path: Path, line: int | None, key: str) -> None:
    assert message.count("\n") == 0
    assert str(path) in message
    if line is not None:
        assert f"{path}:{line}:" in message, message
    assert key in message, message
    assert "Fix:" in message, message
    assert "Traceback" not in message


@pytest.mark.parametrize("case,command", CLI_CASES, ids=[f"{c[0]}-{cmd}" for c, cmd in CLI_CASES])
def test_broken_config_via_cli_is_one_clear_line(cli: dict, case: tuple, command: str) -> None:
    name, text, line, key = case
    proc = cli["results"][("broken", name, command)]
    path = cli["files"][name]
    lines = stderr_lines(proc)
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr
    assert 1 <= len(lines) <= 2, proc.stderr
    assert lines[-1].startswith("error: ")
    check_error_line(lines[-1], path, line, key)
    assert proc.stdout == ""
    assert path.read_bytes() == text.encode(), "the CLI must not touch a broken config"
    assert not (cli["home"] / "pwned").exists()


@pytest.mark.parametrize("name,text,line,key", BROKEN, ids=[case[0] for case in BROKEN])
def test_broken_config_in_process(tmp_path: Path, name: str, text: str, line: int | None, key: str) -> None:
    """Every case through config.load: a one-line ConfigError (never another exception), file untouched."""
    path = write(tmp_path / "c.yaml", text)
    with pytest.raises(ConfigError) as err:
        config.load(path)
    check_error_line(str(err.value), path, line, key)
    assert path.read_bytes() == text.encode()


@pytest.mark.parametrize("name", DEFAULTS_CASES)
def test_missing_sections_apply_defaults_via_cli(cli: dict, name: str) -> None:
    proc, path = cli["results"][("defaults", name)], cli["files"][name]
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    expected = config.parse(DEFAULTS_CASES[name], path)
    assert data["config_file"] == str(path)
    assert {s: data[s] for s in config.SECTIONS} == expected.values
    assert data["ssh"] == DEFAULTS["ssh"] and data["head"]["head_port"] == 6379
    assert data["workers_ssh_hosts"] == [str(w) for w in expected.workers]
    assert path.read_bytes() == DEFAULTS_CASES[name].encode()


@pytest.mark.parametrize("command", ["config show", "cluster info"])
def test_unknown_key_is_a_warning_with_a_suggestion(cli: dict, command: str) -> None:
    proc, path = cli["results"][("unknown", command)], cli["files"]["unknown"]
    assert proc.returncode == 0, proc.stderr
    warning = next(ln for ln in stderr_lines(proc) if "dashbord_port" in ln)
    assert "did you mean 'dashboard_port'" in warning and f"{path}:3:" in warning
    top = next(ln for ln in stderr_lines(proc) if "workres_ssh_hosts" in ln)
    assert "did you mean 'workers_ssh_hosts'" in top and f"{path}:4:" in top
    assert path.read_bytes() == UNKNOWN_KEYS.encode()


def test_unknown_key_in_process() -> None:
    cfg = config.parse("head: {dashbord_port: 1}\n", Path("c.yaml"))
    assert cfg["head"]["dashboard_port"] == 8265
    assert len(cfg.warnings) == 1 and "did you mean 'dashboard_port'" in cfg.warnings[0]
    assert cfg.warnings[0].startswith("c.yaml:1:")


def test_cli_precedence(cli: dict) -> None:
    res = {name: cli["results"][("precedence", name)] for name in ("default", "env", "flag-beats-env")}
    for proc in res.values():
        assert proc.returncode == 0, proc.stderr
    default = json.loads(res["default"].stdout)
    assert default["config_file"] is None and default["head"]["host"] == "localhost"
    assert default["workers_ssh_hosts"] == [] and default["head"]["dashboard_host"] == "127.0.0.1"
    assert "built-in" in res["default"].stderr  # says it is using the built-in default
    assert json.loads(res["env"].stdout)["head"]["host"] == "from-env"
    assert json.loads(res["flag-beats-env"].stdout)["head"]["host"] == "from-flag"
    missing = cli["results"][("precedence", "env-missing")]
    assert missing.returncode == 2 and len(stderr_lines(missing)) == 1
    assert str(cli["home"] / "missing.yaml") in missing.stderr and "Fix:" in missing.stderr
    assert not (cli["home"] / ".sage" / "config.yaml").exists()  # showing the config never writes one


# ---------------------------------------------------------------- edit_workers and write_atomic

def test_add_to_string_form_keeps_string_and_quotes(tmp_path: Path) -> None:
    path = write(tmp_path / "c.yaml", GUIDE_CONFIG)
    updated = config_edit.edit_workers(path, add=Endpoint("sage5", 22))
    assert updated.workers == [Endpoint("sage2", 22), Endpoint("sage4", 22), Endpoint("sage5", 22)]
    expected = GUIDE_CONFIG.replace('workers_ssh_hosts: "sage2:22,sage4:22"',
                                    'workers_ssh_hosts: "sage2:22,sage4:22,sage5:22"')
    assert path.read_text() == expected  # everything else byte for byte, the comment included
    assert config.load(path).workers == updated.workers


@pytest.mark.parametrize("before,after", [
    ("workers_ssh_hosts: 'sage2:22'  # single\n", "workers_ssh_hosts: 'sage2:22,sage5:22'  # single\n"),
    ("workers_ssh_hosts: sage2:22\n", "workers_ssh_hosts: sage2:22,sage5:22\n"),
    ("workers_ssh_hosts: \"\"\n", "workers_ssh_hosts: \"sage5:22\"\n"),
    ("workers_ssh_hosts:\n", "workers_ssh_hosts: \"sage5:22\"\n"),
    ("workers_ssh_hosts: [sage2:22, 'sage4:22']  # flow\n",
     "workers_ssh_hosts: [sage2:22, 'sage4:22', 'sage5:22']  # flow\n"),
], ids=["single-quoted", "plain", "empty-string", "null", "flow-list"])
def test_add_keeps_the_form(tmp_path: Path, before: str, after: str) -> None:
    head = "# my cluster\nhead:\n  host:   base-sage    # aligned oddly on purpose\n"
    path = write(tmp_path / "c.yaml", head + before + "ssh:\n  user: sage\n")
    config_edit.edit_workers(path, add=Endpoint("sage5", 22))
    assert path.read_text() == head + after + "ssh:\n  user: sage\n"


def test_list_form_stays_a_list_with_comments_and_indentation(tmp_path: Path) -> None:
    text = ("# cluster of the lab\n"
            "workers_ssh_hosts:   # the workers\n"
            "    - sage2:22        # rack 1\n"
            "    - 'sage4:22'\n"
            "# after the list\n"
            "head:\n"
            "  host:    base-sage\n"
            "ssh: {user: sage}\n")
    path = write(tmp_path / "c.yaml", text)
    config_edit.edit_workers(path, add=Endpoint("sage5", 2222))
    added = text.replace("    - 'sage4:22'\n", "    - 'sage4:22'\n    - 'sage5:2222'\n")
    assert path.read_text() == added
    data = config.round_trip_yaml().load(path.read_text())
    assert isinstance(data["workers_ssh_hosts"], list)
    assert [str(w) for w in config.load(path).workers] == ["sage2:22", "sage4:22", "sage5:2222"]

    config_edit.edit_workers(path, remove=Endpoint("sage2", 22))
    assert path.read_text() == added.replace("    - sage2:22        # rack 1\n", "")
    config_edit.edit_workers(path, remove=Endpoint("sage5", 2222))
    assert path.read_text() == text.replace("    - sage2:22        # rack 1\n", "")


def test_remove_from_string_form(tmp_path: Path) -> None:
    path = write(tmp_path / "c.yaml", GUIDE_CONFIG)
    updated = config_edit.edit_workers(path, remove=Endpoint("sage2", 22))
    assert updated.workers == [Endpoint("sage4", 22)]
    assert path.read_text() == GUIDE_CONFIG.replace('"sage2:22,sage4:22"', '"sage4:22"')
    config_edit.edit_workers(path, remove=Endpoint("sage4", 22))
    assert config.load(path).workers == []
    config_edit.edit_workers(path, add=Endpoint("sage4", 22))
    config_edit.edit_workers(path, add=Endpoint("sage2", 22))
    assert config.load(path).workers == [Endpoint("sage4", 22), Endpoint("sage2", 22)]


def test_add_then_remove_is_byte_identical(tmp_path: Path) -> None:
    path = write(tmp_path / "c.yaml", GUIDE_CONFIG)
    config_edit.edit_workers(path, add=Endpoint("new-worker", 22))
    config_edit.edit_workers(path, remove=Endpoint("new-worker", 22))
    assert path.read_bytes() == GUIDE_CONFIG.encode()


def test_crlf_file_keeps_its_line_endings(tmp_path: Path) -> None:
    text = "head:\r\n  host: h\r\nworkers_ssh_hosts:\r\n  - a:22\r\n"
    path = write(tmp_path / "c.yaml", text)
    config_edit.edit_workers(path, add=Endpoint("b", 22))
    assert path.read_bytes() == (text + "  - b:22\r\n").encode()


def test_add_when_key_is_absent_writes_a_list_of_one(tmp_path: Path) -> None:
    text = "# mine\nhead:\n  host: h1\n"
    path = write(tmp_path / "c.yaml", text)
    assert config.load(path).workers == []  # no worker list: no workers (never the guide's example hosts)
    config_edit.edit_workers(path, add=Endpoint("sage5", 22))
    assert path.read_text() == text + 'workers_ssh_hosts: "sage5:22"\n'


@pytest.mark.parametrize("change", [
    {"remove": Endpoint("notlisted", 22)},
    {"remove": Endpoint("sage2", 2222)},  # listed, but on another port
    {"add": Endpoint("sage2", 22)},
    {"add": Endpoint("SAGE4", 2200)},  # the same host in other letters
    {"add": Endpoint("base-sage", 22)},  # the head
], ids=["remove-unlisted", "remove-wrong-port", "add-duplicate", "add-duplicate-case", "add-head"])
def test_refused_edit_leaves_the_file_alone(tmp_path: Path, change: dict) -> None:
    path = write(tmp_path / "c.yaml", GUIDE_CONFIG)
    before = os.stat(path)
    with pytest.raises(ConfigError) as err:
        config_edit.edit_workers(path, **change)
    assert "\n" not in str(err.value) and str(path) in str(err.value) and "Fix:" in str(err.value)
    assert path.read_bytes() == GUIDE_CONFIG.encode()
    assert os.stat(path).st_ino == before.st_ino  # not even rewritten
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml"]


def test_edit_keeps_the_file_mode_and_leaves_no_temp_files(tmp_path: Path) -> None:
    path = write(tmp_path / "c.yaml", GUIDE_CONFIG)
    path.chmod(0o640)
    config_edit.edit_workers(path, add=Endpoint("sage5", 22))
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    config_edit.edit_workers(path, remove=Endpoint("sage5", 22))
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml"]


def test_edit_through_a_symlink_keeps_the_symlink(tmp_path: Path) -> None:
    real = write(tmp_path / "real.yaml", GUIDE_CONFIG)
    link = tmp_path / "link.yaml"
    link.symlink_to(real)
    config_edit.edit_workers(link, add=Endpoint("sage5", 22))
    assert link.is_symlink()
    assert [str(w) for w in config.load(real).workers] == ["sage2:22", "sage4:22", "sage5:22"]


def test_write_atomic(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "config.yaml"
    config_edit.write_atomic(target, "a: 1\n")
    assert target.read_text() == "a: 1\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600  # a new config is private
    target.chmod(0o644)
    config_edit.write_atomic(target, "a: 2\r\n")
    assert target.read_bytes() == b"a: 2\r\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert sorted(p.name for p in target.parent.iterdir()) == ["config.yaml"]


def test_write_atomic_failure_leaves_old_file_and_no_temp(tmp_path: Path) -> None:
    target = write(tmp_path / "config.yaml", "old: 1\n")

    with pytest.raises(TypeError):
        config_edit.write_atomic(target, 12345)  # type: ignore[arg-type]
    assert target.read_text() == "old: 1\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml"]


# ---------------------------------------------------------------- scale arguments, refused before any SSH

@pytest.mark.parametrize("name", SCALE_REFUSED)
def test_bad_scale_argument_fails_fast(cli: dict, name: str) -> None:
    proc, path = cli["results"][("scale", name)], cli["files"][f"scale-{name}"]
    mention = SCALE_REFUSED[name][1]
    assert proc.returncode == 2, proc.stderr
    # One error line: sage's own, or (a malformed HOST:PORT) Click's, under Click's usage line.
    errors = [ln for ln in stderr_lines(proc) if not ln.startswith(("Usage: ", "Try '"))]
    assert len(errors) == 1 and errors[0].lower().startswith("error: "), proc.stderr
    assert mention in proc.stderr and "Traceback" not in proc.stderr
    assert path.read_bytes() == GUIDE_CONFIG.encode()
    assert not any(p.name.startswith(".scale") for p in path.parent.iterdir())  # no temp files left
    # Refused before any playbook run: ansible-runner never got a run directory, and the command took no
    # SSH timeout (generous bound: all of this module's runs start at once on a possibly busy machine).
    assert not (cli["home"] / ".sage" / "runs").exists()
    assert proc.duration < 30, f"took {proc.duration:.1f}s"


# ---------------------------------------------------------------- GCS fault tolerance


@pytest.mark.parametrize("address", ["r1:6379", "redis://r1.example.com:6379", "rediss://10.0.0.5:6380",
                                     "[::1]:6379"])
def test_redis_addresses_ray_takes_are_taken(address: str) -> None:
    cfg = config.parse(f"head:\n  fault_tolerance: redis\n  redis_address: \"{address}\"\n", Path("c.yaml"))
    assert cfg["head"]["redis_address"] == address


def test_a_redis_password_file_others_can_read_is_refused(home: Path) -> None:
    from ansible_collections.sage.cluster.plugins.plugin_utils import security
    secret = write(home / "redis_password", "s3cret\n")
    path = write(home / "c.yaml", f"head:\n  fault_tolerance: redis\n  redis_address: r1:6379\n"
                                  f"  redis_password_file: {secret}\n")
    cfg = config.load(path)
    secret.chmod(0o644)
    with pytest.raises(ConfigError) as err:
        security.check_redis_password_file(cfg)
    check_error_line(str(err.value), path, 4, "head.redis_password_file")
    assert "chmod 600" in str(err.value) and "s3cret" not in str(err.value)
    secret.chmod(0o600)
    security.check_redis_password_file(cfg)


def test_the_token_file_is_made_once_0600_in_a_0700_dir(tmp_path: Path) -> None:
    from ansible_collections.sage.cluster.plugins.plugin_utils import ray_token
    path = tmp_path / "state" / "ray_auth_token"
    token = ray_token.read_token(path)
    assert len(token) == 64 and int(token, 16) >= 0
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert ray_token.read_token(path) == token  # made once: every later run reads the same token
