"""Deploy leaves the project usable: installed on every node (the head too), imported by Ray tasks everywhere,
updated in place, and each node's revision known. 1 head + 2 workers on the rig, sharing one env (as over NFS).

The tests run in file order and share one cluster.
"""
from __future__ import annotations

import json
import os
import subprocess
import textwrap

import pytest

from tests.conftest import Sage
from tests.rig import DEFAULT_ENV
from tests.rig.config import sage_config

pytestmark = pytest.mark.rig

HEAD, WORKERS = "sage-head", ["sage-w1", "sage-w2"]
ALL = [HEAD, *WORKERS]
PY = f"{DEFAULT_ENV}/bin/python"
HOME = "/home/sage"
PROJ = f"{HOME}/proj"

CONFIG = """\
head:
  host: "sage-head"
  dashboard_host: "127.0.0.1"
workers_ssh_hosts: "sage-w1:22,sage-w2:22"
ssh:
  user: "sage"
  key_path: "{key}"
remote:
  sage_home: "{proj}"
  python_path: "{env}/bin/python"
  ray_command: "{env}/bin/ray"
  conda_env: "sage"
deploy:
  source: "{project}"
  # The nodes have no internet: build with the env's own setuptools.
  pip_args: ["--no-build-isolation", "--no-index"]
"""

# Runs on the head: one task pinned to each alive node imports the project and says where and which version.
IMPORT_ON_EVERY_NODE = textwrap.dedent("""
    import json, socket, sys, ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
    ray.init(address=sys.argv[1], log_to_driver=False)

    @ray.remote
    def where():
        import sagedemo
        return socket.gethostname(), sagedemo.VERSION

    nodes = [n["NodeID"] for n in ray.nodes() if n["Alive"]]
    refs = [where.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n, soft=False)).remote() for n in nodes]
    print(json.dumps(sorted(ray.get(refs, timeout=120))))
""")


def write_project(root, version: str) -> None:
    (root / "src" / "sagedemo").mkdir(parents=True, exist_ok=True)
    (root / "pyproject.toml").write_text(textwrap.dedent("""\
        [build-system]
        requires = ["setuptools>=70.1"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "sagedemo"
        version = "0.1.0"
    """))
    (root / "src" / "sagedemo" / "__init__.py").write_text(f"VERSION = {version!r}\n")


def uninstall_demo() -> None:
    """The env outlives the rig: leave no trace of the demo project in it, before or after."""
    subprocess.run([f"{DEFAULT_ENV}/bin/pip", "uninstall", "-qq", "-y", "sagedemo"], capture_output=True)
    for name in os.listdir(DEFAULT_ENV):
        if name.startswith(".sage-install"):
            os.unlink(os.path.join(DEFAULT_ENV, name))


@pytest.fixture(scope="module")
def cluster(rig, tmp_path_factory):
    # A user's own env: the SSH user may install into it (on the rig every host sees this one directory).
    subprocess.run(["chown", "-R", f"{rig.user}:", DEFAULT_ENV], check=True)
    uninstall_demo()
    home = tmp_path_factory.mktemp("home")
    project = tmp_path_factory.mktemp("project")
    write_project(project, "v1")
    config = home / "cluster.yaml"
    config.write_text(CONFIG.format(key=rig.key_path, project=project, proj=PROJ, env=DEFAULT_ENV))
    s = Sage(home=home, config=config, cwd=project)
    yield s, project, rig
    s("cluster", "stop", timeout=300)
    uninstall_demo()


def versions_seen(s: Sage, rig) -> list[list[str]]:
    run = rig.ssh(HEAD, ["env", "RAY_AUTH_MODE=token", PY, "-c", IMPORT_ON_EVERY_NODE,
                         f"{rig.host(HEAD).ip}:6379"], timeout=300, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


def hosts(result: dict) -> dict:
    return result["hosts"]


def test_deploy_installs_the_project_on_every_node(cluster):
    s, _, rig = cluster
    code, result = s.json("cluster", "deploy")
    assert code == 0, result
    assert {n: h["result"] for n, h in hosts(result).items()} == {n: "changed" for n in ALL}
    # The nodes share one env: one of them installed, the others found the same install there.
    installs = sorted(h["deploy"]["install"] for h in hosts(result).values())
    assert "ran" in installs and set(installs) <= {"ran", "shared env"}, installs
    for name in ALL:
        assert (rig.host(name).home / "proj" / "src" / "sagedemo" / "__init__.py").exists(), name

    s("cluster", "start", check=True)
    assert versions_seen(s, rig) == [[n, "v1"] for n in ALL]


def test_second_deploy_changes_nothing_and_installs_nothing(cluster):
    s, _, rig = cluster
    log = rig.host("sage-w1").home / ".sage" / "deploy.log"
    before = log.stat().st_mtime_ns if log.exists() else None
    code, result = s.json("cluster", "deploy")
    assert code == 0, result
    assert {n: (h["result"], h["deploy"]["install"]) for n, h in hosts(result).items()} == {
        n: ("ok", "skipped") for n in ALL}
    assert (log.stat().st_mtime_ns if log.exists() else None) == before


def test_status_and_doctor_flag_a_stale_node(cluster):
    s, project, _ = cluster
    code, status = s.json("cluster", "status")
    assert code == 0, status
    revisions = {n: h["deploy"]["revision"] for n, h in hosts(status).items()}
    assert len(set(revisions.values())) == 1 and None not in revisions.values(), revisions
    assert not any(h["deploy"]["stale"] for h in hosts(status).values())

    write_project(project, "v2")  # the source moves on; the nodes still hold v1
    code, status = s.json("cluster", "status")
    assert code == 0, status  # stale code is not a dead node
    assert {n: h["deploy"]["stale"] for n, h in hosts(status).items()} == {n: True for n in ALL}
    table = s("cluster", "status").stdout
    assert table.count("(stale: deploy again)") == 3, table
    code, doctor = s.json("cluster", "doctor")
    rows = [r for r in doctor["checks"] if r["check"] == "deploy"]
    assert code == 1 and len(rows) == 3 and not any(r["ok"] for r in rows), doctor
    assert all("sage cluster deploy" in r["fix"] for r in rows)


def test_update_scenario_runs_the_new_code_everywhere(cluster):
    s, _, rig = cluster
    s("cluster", "stop", check=True)
    code, result = s.json("cluster", "deploy")
    assert code == 0, result
    # Only code changed: the editable install already points at it, so no node installs again.
    assert {n: (h["result"], h["deploy"]["install"]) for n, h in hosts(result).items()} == {
        n: ("changed", "skipped") for n in ALL}
    for name in ("sage-w1", "sage-w2"):  # the record of the new revision: private, whole, no temp file left
        state = rig.host(name).home / ".sage"
        assert json.loads((state / "deploy.json").read_text())["revision"] == hosts(result)[name]["deploy"]["revision"]
        assert (state.stat().st_mode & 0o777, (state / "deploy.json").stat().st_mode & 0o777) == (0o700, 0o600)
        assert not list(state.glob(".deploy.*")), name
    s("cluster", "start", check=True)
    assert versions_seen(s, rig) == [[n, "v2"] for n in ALL]
    code, status = s.json("cluster", "status")
    assert not any(h["deploy"]["stale"] for h in hosts(status).values()), status


def test_check_mode_says_which_nodes_would_install(cluster):
    s, project, rig = cluster
    pyproject = project / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('version = "0.1.0"', 'version = "0.2.0"'))
    code, result = s.json("cluster", "deploy", "--check")
    assert code == 0, result
    assert {n: (h["result"], h["deploy"]["install"]) for n, h in hosts(result).items()} == {
        n: ("changed", "would run") for n in ALL}
    table = s("cluster", "deploy", "--check", check=True).stdout
    assert "INSTALL" in table and table.count("would run") == 3, table
    assert 'version = "0.1.0"' in (rig.host("sage-w1").home / "proj" / "pyproject.toml").read_text()
    code, result = s.json("cluster", "deploy")  # the packaging changed: install again
    assert code == 0 and "ran" in {h["deploy"]["install"] for h in hosts(result).values()}, result


def test_a_failing_install_names_the_node_its_reason_and_log(cluster):
    s, project, rig = cluster
    installer = project / "install.sh"
    installer.write_text('#!/bin/sh\necho "building..."\n'
                         'if [ "$(hostname)" = sage-w2 ]; then echo "ERROR: no compiler on this node"; exit 3; fi\n'
                         'echo done\n')
    installer.chmod(0o755)
    config = s.config.read_text()
    s.config.write_text(config.replace('  pip_args:', '  install: ["./install.sh", "--yes"]\n  pip_args:'))
    try:
        code, result = s.json("cluster", "deploy")
        assert code == 1, result
        w2 = hosts(result)["sage-w2"]
        assert w2["result"] == "failed"
        assert "ERROR: no compiler on this node" in w2["error"], w2
        assert f"{HOME}/.sage/deploy.log" in w2["error"], w2
        assert "ERROR: no compiler" in (rig.host("sage-w2").home / ".sage" / "deploy.log").read_text()
        for name in (HEAD, "sage-w1"):
            assert hosts(result)[name]["result"] == "changed" and hosts(result)[name]["deploy"]["install"] == "ran"
        code, status = s.json("cluster", "status")
        assert hosts(status)["sage-w2"]["deploy"]["install_ok"] is False
        assert "(install failed)" in s("cluster", "status").stdout

        # Fixed on the controller: the next deploy installs again where it failed, and succeeds.
        installer.write_text('#!/bin/sh\necho done\n')
        code, result = s.json("cluster", "deploy")
        assert code == 0 and hosts(result)["sage-w2"]["deploy"]["install"] == "ran", result
    finally:
        s.config.write_text(config)


@pytest.mark.parametrize("install,timeout,words", [
    (["./no-such-installer.sh"], 60, "install command './no-such-installer.sh' not found"),
    (["sleep", "30"], 2, "install failed (timed out after 2 s)"),
])
def test_a_missing_installer_or_a_timeout_fails_each_node_in_one_line(cluster, install, timeout, words):
    s, _, _ = cluster
    config = s.config.read_text()
    s.config.write_text(config.replace(
        "  pip_args:", f"  install: {json.dumps(install)}\n  install_timeout: {timeout}\n  pip_args:"))
    try:
        code, result = s.json("cluster", "deploy")
        assert code == 1, result
        for name in ALL:
            assert hosts(result)[name]["result"] == "failed" and words in hosts(result)[name]["error"], result
    finally:
        s.config.write_text(config)


@pytest.mark.parametrize("command", [["cluster", "deploy"], ["cluster", "scale", "add", "sage-w3:22"]])
def test_the_home_directory_is_never_sent(cluster, command):
    s, _, rig = cluster
    config = s.config.read_text()
    s.config.write_text(config.replace(f'source: "{cluster[1]}"', 'source: "."'))
    try:
        home_user = Sage(home=s.home, config=s.config, cwd=s.home)  # run from the home directory
        (s.home / ".ssh").mkdir(exist_ok=True)
        before = s.config.read_text()
        proc = home_user(*command)
        assert proc.returncode == 2, proc.stderr
        lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error")]
        assert len(lines) == 1 and "'deploy.source'" in lines[0] and "home directory" in lines[0], proc.stderr
        assert s.config.read_text() == before
        assert not (rig.host("sage-w3").home / "proj").exists()
        assert "home directory" in home_user("cluster", "info", check=True).stdout
    finally:
        s.config.write_text(config)


def test_a_local_head_installs_the_source_itself(sage, tmp_path):
    """The head is this machine: nothing is copied, the source is installed into the configured env in place."""
    from tests.rig import ensure_env
    ensure_env()
    project = tmp_path / "localproj"
    (project / "src" / "sagelocal").mkdir(parents=True)
    (project / "pyproject.toml").write_text('[build-system]\nrequires = ["setuptools>=70.1"]\n'
                                            'build-backend = "setuptools.build_meta"\n'
                                            '[project]\nname = "sagelocal"\nversion = "0.1.0"\n')
    (project / "src" / "sagelocal" / "__init__.py").write_text("WHERE = 'local head'\n")
    sage.config = tmp_path / "local.yaml"
    sage.config.write_text(f"""\
head:
  host: localhost
  dashboard_host: 127.0.0.1
workers_ssh_hosts: []
remote:
  python_path: {PY}
  ray_command: {DEFAULT_ENV}/bin/ray
  conda_env: ""
deploy:
  source: {project}
  pip_args: ["--no-build-isolation", "--no-index"]
""")
    try:
        code, result = sage.json("cluster", "deploy")
        assert code == 0, result
        assert hosts(result)["localhost"]["deploy"]["install"] == "ran", result
        imported = subprocess.run([PY, "-c", "import sagelocal; print(sagelocal.WHERE, sagelocal.__file__)"],
                                  capture_output=True, text=True, cwd=tmp_path)
        assert imported.stdout.split() == ["local", "head", str(project / "src" / "sagelocal" / "__init__.py")]
        record = json.loads((sage.home / ".sage" / "deploy.json").read_text())
        assert record["dest"] == f"{project}/" and record["install"]["ok"] is True
        code, again = sage.json("cluster", "deploy")
        assert code == 0 and hosts(again)["localhost"]["result"] == "ok", again
        assert hosts(again)["localhost"]["deploy"]["install"] == "skipped"
    finally:
        subprocess.run([f"{DEFAULT_ENV}/bin/pip", "uninstall", "-qq", "-y", "sagelocal"], capture_output=True)
        uninstall_demo()


@pytest.mark.oldest_pair
def test_a_cluster_starts_reports_its_nodes_and_stops(rig, sage, tmp_path):
    """The rig start/stop that .ci/run also runs on Python 3.11 + ansible-core 2.19 (-m oldest_pair): every
    door's shared code (the collection sage.cluster) on a real run. Its own hosts and ports, beside `cluster`."""
    head, worker = "sage-w3", "sage-w4"
    project = tmp_path / "smoke"  # a source that is not the home directory (which deploy refuses)
    project.mkdir()
    sage.config = tmp_path / "smoke.yaml"
    sage.config.write_text(sage_config(rig, head, [worker], head_port=6391, dashboard_port=8291, comment="smoke",
                                       remote={"sage_home": f"{HOME}/smoke"},
                                       deploy={"source": str(project), "install": "none"}))
    try:
        sage("cluster", "start", check=True, timeout=600)
        code, status = sage.json("cluster", "status")
        assert code == 0 and status["cluster"]["alive"] == 2, status
    finally:
        stopped = sage("cluster", "stop", timeout=300)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    for name in (head, worker):
        assert not rig.ssh(name, ["pgrep", "-u", rig.user, "-x", "raylet"], check=False).stdout.split(), name
