"""The AWX door on the rig: inventory updates and jobs run the way AWX 24 runs them, without AWX.

AWX ships every task to an execution node as `ansible-runner transmit | ansible-runner worker | ansible-runner
process` (awx/main/tasks/receptor.py); a container-group pod runs `ansible-runner worker` on a fresh /runner. Here
the three run as one pipe: transmit from a controller-side private data dir built as awx/main/tasks/jobs.py builds
it, the worker in `<base>/runner` (this test's /runner: emptied before each task, as a new pod's would be), process
back into the controller's dir, where AWX reads artifacts/<ident>/status and rc (process itself exits 0 even when
the playbook failed).

- Inventory update (RunInventoryUpdate): the command in the `args` file, `ansible-inventory --list --export
  -i /runner/project/inventory/sage.yml --output /runner/artifacts/<id>/output.json --playbook-dir ...`,
  with the source's source_vars (SAGE_CONFIG) in the environment.
- Job (RunJob): AWX's own inventory script (what AWX stored from that output.json, plus the AWX inventory's
  variables from awx/sage.yml), the job template's extra vars in env/extravars, `-u root` (no Machine credential),
  the credential types of awx/sage.yml injected as AWX injects them (a 0600 file under env/, its extra vars in a
  0400 file passed as `-e @file`), and AWX's environment with ANSIBLE_HOST_KEY_CHECKING=False.

The project is "committed" with the rig's config and the nodes' host keys, as docs/ops.md B.2 tells an admin.
"""
from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import ansible_runner.utils
import jinja2
import pytest
import yaml
from jinja2.sandbox import ImmutableSandboxedEnvironment

from tests.conftest import user_env
from tests.e2e.test_ops_door import ALIVE_NODES
from tests.rig import Rig, ensure_env, rig_root, why_not_available
from tests.rig.config import sage_config
from tests.unit.test_awx import load_awx

pytestmark = pytest.mark.rig

REPO = Path(__file__).resolve().parents[2]
ROOT = rig_root("awx")
FIRST_IP = 70
HEAD, WORKERS = "awx-head", ["awx-w1"]
ALL = [HEAD, *WORKERS]
HEAD_PORT, DASHBOARD_PORT = 6394, 8294
PY = "/opt/conda/envs/sage/bin/python"

CONFIG_IN_PROJECT = "awx/sage-config.rig.yaml"

# AWX's ANSIBLE_* settings (awx/settings/defaults.py), exported to every task.
AWX_ANSIBLE_SETTINGS = {"ANSIBLE_HOST_KEY_CHECKING": "False", "ANSIBLE_PARAMIKO_RECORD_HOST_KEYS": "False",
                        "ANSIBLE_FORCE_COLOR": "True", "ANSIBLE_INVENTORY_UNPARSED_FAILED": "True"}
# RunInventoryUpdate's additions (awx/main/constants.py).
STANDARD_INVENTORY_UPDATE_ENV = {"ANSIBLE_INVENTORY_UNPARSED_FAILED": "True", "ANSIBLE_INVENTORY_EXPORT": "True",
                                 "ANSIBLE_VERBOSE_TO_STDERR": "True"}
# What BaseTask.run writes to env/settings.
RUNNER_SETTINGS = {"job_timeout": 0, "suppress_ansible_output": True, "suppress_output_file": True}

# AWX's transmit: ansible_runner.interface.run(streamer='transmit', ...) with the task's params (receptor.py).
TRANSMIT = "import json, sys, ansible_runner; ansible_runner.interface.run(streamer='transmit', " \
           "_output=sys.stdout.buffer, **json.loads(sys.argv[1]))"


@dataclass
class Task:
    """One finished AWX task, read as AWX reads it: from the controller's private data dir."""
    pdd: Path
    ident: int
    process_rc: int

    @property
    def artifacts(self) -> Path:
        return self.pdd / "artifacts" / str(self.ident)

    @property
    def status(self) -> str:
        return (self.artifacts / "status").read_text().strip()

    @property
    def rc(self) -> int:
        return int((self.artifacts / "rc").read_text())

    def events(self) -> list[dict]:
        files = sorted((self.artifacts / "job_events").glob("*.json"), key=lambda p: int(p.name.split("-")[0]))
        return [json.loads(p.read_text()) for p in files]

    def output(self) -> str:
        return "".join(e.get("stdout", "") + "\n" for e in self.events())

    def stats(self) -> dict[str, dict[str, int]]:
        """The PLAY RECAP AWX shows: {host: {ok, changed, failures, dark}}."""
        data = [e["event_data"] for e in self.events() if e.get("event") == "playbook_on_stats"][-1]
        return {h: {k: data.get(k, {}).get(h, 0) for k in ("ok", "changed", "failures", "dark")}
                for h in set().union(*(data.get(k, {}) for k in ("ok", "changed", "failures", "dark")))}

    def results(self) -> dict[str, dict]:
        """Each host's last `sage` result (the ray_node role's per-host report)."""
        out = {}
        for e in self.events():
            res = e.get("event_data", {}).get("res")
            if e.get("event") == "runner_on_ok" and isinstance(res, dict) and "sage" in res:
                out[e["event_data"]["host"]] = res["sage"]
        return out

    def why(self) -> str:
        return f"status={self.status} rc={self.rc}\n{self.output()}"


class Awx:
    """Runs inventory updates and jobs of awx/sage.yml's objects as AWX's task system would, on the rig."""

    def __init__(self, rig: Rig, base: Path, secrets: dict[str, str]):
        self.rig, self.base = rig, base
        self.runner = base / "runner"  # the worker's /runner
        self.scm = base / "scm"  # the project as committed in git
        self.secrets = secrets  # credential inputs: {"ssh_private_key": ..., "ray_auth_token": ...}
        self.awx = load_awx()
        self.next_id = 1
        self.stored_inventory: dict | None = None

    def _pdd(self) -> tuple[Path, int]:
        ident = self.next_id
        self.next_id += 1
        pdd = self.base / f"awx_{ident}"
        shutil.copytree(self.scm, pdd / "project", symlinks=True)  # build_project_dir: the synced project
        (pdd / "env").mkdir(mode=0o700)
        (pdd / "env" / "settings").write_text(json.dumps(RUNNER_SETTINGS))
        return pdd, ident

    def _run(self, pdd: Path, ident: int, params: dict) -> Task:
        params = dict(params, private_data_dir=str(pdd), ident=ident, suppress_env_files=True)
        # A new pod: nothing of the last task is left, in /runner or in the image's HOME (AWX pops HOME).
        home = self.base / "ee-home"
        for path in (self.runner, home):
            shutil.rmtree(path, ignore_errors=True)
        home.mkdir()
        env = user_env(home)
        transmit = subprocess.Popen([sys.executable, "-c", TRANSMIT, json.dumps(params)], stdout=subprocess.PIPE,
                                    stdin=subprocess.DEVNULL, env=env)
        worker = subprocess.Popen(["ansible-runner", "worker", f"--private-data-dir={self.runner}"],
                                  stdin=transmit.stdout, stdout=subprocess.PIPE, env=env)
        transmit.stdout.close()
        process = subprocess.run(["ansible-runner", "process", str(pdd), "--ident", str(ident)],
                                 stdin=worker.stdout, capture_output=True, text=True, env=env, timeout=600)
        worker.stdout.close()
        worker.wait(timeout=60)  # its exit code is the playbook's; AWX reads the status from the stream instead
        assert transmit.wait(timeout=60) == 0, process.stderr
        return Task(pdd, ident, process.returncode)

    def inventory_update(self) -> Task:
        """RunInventoryUpdate for awx/sage.yml's inventory source; stores the output as AWX's inventory."""
        source = self.awx["sage_awx_inventory_source"]
        pdd, ident = self._pdd()
        runner = self.runner
        args = ["ansible-inventory", "--list", "--export", "-i", f"{runner}/project/{source['source_path']}",
                "--output", f"{runner}/artifacts/{ident}/output.json",
                "--playbook-dir", str(Path(f"{runner}/project/{source['source_path']}").parent)]
        (pdd / "args").write_text(" ".join(args))
        envvars = dict(AWX_ANSIBLE_SETTINGS, AWX_PRIVATE_DATA_DIR=str(pdd), INVENTORY_SOURCE_ID="1",
                       INVENTORY_UPDATE_ID=str(ident), **STANDARD_INVENTORY_UPDATE_ENV)
        # The source's source_vars become environment variables; the admin set sage_awx_sage_config to the
        # committed config (under this test's /runner).
        config_path = f"{runner}/project/{CONFIG_IN_PROJECT}"
        for name, value in source["source_vars"].items():
            envvars[name] = jinja2.Template(value).render(sage_awx_sage_config=config_path)
        assert envvars["SAGE_CONFIG"] == config_path
        task = self._run(pdd, ident, {"envvars": envvars})
        if task.status == "successful":
            imported = json.loads((task.artifacts / "output.json").read_text())
            self.stored_inventory = self._as_awx_stores_it(imported)
        return task

    def _as_awx_stores_it(self, imported: dict) -> dict:
        """What a job's inventory script prints (Inventory.get_script_data) after AWX imported `imported`: the
        groups, hosts and variables as imported, and the AWX inventory's own variables under `all`."""
        script = json.loads(json.dumps(imported))
        script.setdefault("all", {})["vars"] = dict(self.awx["sage_awx_inventory"]["variables"],
                                                    **script.get("all", {}).get("vars", {}))
        script["_meta"].pop("profile", None)
        return script

    def _inject(self, pdd: Path, ctype: dict, inputs: dict[str, str], args: list[str]) -> None:
        """CredentialType.inject_credential for a custom type: file injector, then extra_vars as `-e @file`."""
        sandbox = ImmutableSandboxedEnvironment()
        namespace: dict = dict(inputs)
        for field in ctype["inputs"]["fields"]:
            if field.get("format") == "ssh_private_key" and not namespace[field["id"]].endswith("\n"):
                namespace[field["id"]] += "\n"

        class Tower:
            pass
        namespace["tower"] = Tower()
        # One unnamed file per type here (`template`), so its path is tower.filename.
        for template in ctype["injectors"].get("file", {}).values():
            fd, path = tempfile.mkstemp(dir=pdd / "env")
            with os.fdopen(fd, "w") as fh:
                fh.write(sandbox.from_string(template).render(**namespace))
            os.chmod(path, stat.S_IRUSR | stat.S_IWUSR)
            namespace["tower"].filename = str(self.runner / "env" / Path(path).name)  # get_incontainer_path
        extra = {k: sandbox.from_string(v).render(**namespace) for k, v in ctype["injectors"]["extra_vars"].items()}
        fd, path = tempfile.mkstemp(dir=pdd / "env")
        with os.fdopen(fd, "w") as fh:
            fh.write(yaml.safe_dump(extra))
        os.chmod(path, stat.S_IRUSR)
        args += ["-e", f"@{self.runner / 'env' / Path(path).name}"]

    def job(self, template_name: str, credentials: list[str] | None = None) -> Task:
        """RunJob for one of awx/sage.yml's job templates, with its credentials (default: the template's)."""
        template = next(t for t in self.awx["sage_awx_job_templates"] if t["name"] == template_name)
        assert self.stored_inventory is not None, "no inventory update has succeeded yet"
        pdd, ident = self._pdd()
        inventory = pdd / "inventory" / "hosts"
        inventory.parent.mkdir()
        inventory.write_text("#! /usr/bin/env python3\n# -*- coding: utf-8 -*-\nprint(%r)\n"
                             % json.dumps(self.stored_inventory))
        inventory.chmod(0o700)
        extravars = dict(template.get("extra_vars") or {}, awx_job_id=ident, tower_job_id=ident)
        (pdd / "env" / "extravars").write_text(yaml.safe_dump(extravars))
        (pdd / "env" / "extravars").chmod(0o600)
        args = ["-u", "root"]  # no Machine credential: AWX's default user
        types = {c["name"]: c for c in self.awx["sage_awx_credential_types"]}
        inputs = {"sage SSH key": {"ssh_private_key": self.secrets["ssh_private_key"]},
                  "sage Ray token": {"ray_auth_token": self.secrets["ray_auth_token"]}}
        for name in self.awx["sage_awx_job_credentials"] if credentials is None else credentials:
            self._inject(pdd, types[name], inputs[name], args)
        (pdd / "env" / "cmdline").write_text(ansible_runner.utils.args2cmdline(*args))
        (pdd / "cp").mkdir(mode=0o700)
        runner = self.runner
        envvars = dict(AWX_ANSIBLE_SETTINGS, AWX_PRIVATE_DATA_DIR=str(pdd), JOB_ID=str(ident), INVENTORY_ID="1",
                       PROJECT_REVISION="0" * 40, ANSIBLE_RETRY_FILES_ENABLED="False", MAX_EVENT_RES="700000",
                       AWX_HOST="https://awx.example.com", ANSIBLE_SSH_CONTROL_PATH_DIR=f"{runner}/cp",
                       ANSIBLE_COLLECTIONS_PATHS=f"{runner}/requirements_collections:~/.ansible/collections:"
                                                 "/usr/share/ansible/collections",
                       # read_ansible_config puts the project's roles_path (./roles) after requirements_roles.
                       ANSIBLE_ROLES_PATH=f"{runner}/requirements_roles:./roles:~/.ansible/roles:"
                                          "/usr/share/ansible/roles:/etc/ansible/roles")
        envvars["ANSIBLE_COLLECTIONS_PATH"] = envvars["ANSIBLE_COLLECTIONS_PATHS"]
        # No inventory kwarg: the worker then uses /runner/inventory, as ansible-runner does in a container.
        return self._run(pdd, ident, {"playbook": template["playbook"], "envvars": envvars})

    def ray_alive(self) -> int:
        out = self.rig.ssh(HEAD, ["env", "RAY_AUTH_MODE=token", PY, "-c", ALIVE_NODES,
                                  f"{self.rig.host(HEAD).ip}:{HEAD_PORT}"], timeout=120).stdout
        return int([line.split()[1] for line in out.splitlines() if line.startswith("ALIVE ")][-1])

    def raylets(self, name: str) -> list[str]:
        return self.rig.ssh(name, ["pgrep", "-u", "sage", "raylet"], check=False).stdout.split()


def project_files() -> list[str]:
    """The files a git checkout of this branch has (tracked, and new ones not ignored), with its symlinks (the
    collection sage.cluster's link back to the root, playbooks/collections/ansible_collections/sage/cluster)."""
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout
    return [f for f in out.split("\0") if f and ((REPO / f).is_file() or (REPO / f).is_symlink())]


@pytest.fixture(scope="module")
def awx():
    reason = why_not_available()
    if reason:
        pytest.skip(reason)
    with Rig(ALL, root=ROOT, first_ip=FIRST_IP) as rig:  # tears down on failure, Ctrl-C and SIGTERM too
        ensure_env()
        rig.write_known_hosts()
        # Short: the ssh ControlPath under /runner/cp must fit the 107 bytes of a Unix socket path.
        base = Path(tempfile.mkdtemp(prefix="awx-", dir="/tmp"))
        try:
            scm = base / "scm"
            for f in project_files():
                (scm / f).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(REPO / f, scm / f, follow_symlinks=False)  # the link to the collection stays one
            # The admin's config, committed in the project (docs/ops.md B.2): paths under /runner/project.
            project = base / "runner" / "project"
            (scm / CONFIG_IN_PROJECT).write_text(sage_config(
                rig, HEAD, WORKERS, head_port=HEAD_PORT, dashboard_port=DASHBOARD_PORT,
                comment="The admin's config, committed in the project.",
                ssh={"key_path": "~/.ssh/id_rsa", "strict_host_key_checking": "yes",
                     "known_hosts": f"{project}/awx/known_hosts"},
                remote={"sage_home": "/home/sage/awx"}, deploy={"source": str(project), "install": "none"},
                security={"ray_auth": "token"}))
            # The nodes' public host keys, committed (docs/ops.md B.2).
            shutil.copy(rig.known_hosts_path, scm / "awx" / "known_hosts")
            secrets = {"ssh_private_key": rig.key_path.read_text(), "ray_auth_token": os.urandom(32).hex()}
            a = Awx(rig, base, secrets)
            try:
                yield a
            finally:
                if a.stored_inventory is not None:
                    a.job("sage cluster stop")
        finally:
            shutil.rmtree(base, ignore_errors=True)


def test_inventory_update_imports_the_cluster(awx):
    task = awx.inventory_update()
    assert task.process_rc == 0
    assert (task.status, task.rc) == ("successful", 0), task.why()
    inv = awx.stored_inventory
    assert inv["sage_head"]["hosts"] == [HEAD] and inv["sage_workers"]["hosts"] == WORKERS, inv
    assert inv["all"]["vars"]["ansible_host_key_checking"] is True, inv["all"]


def test_deploy_job_copies_the_project(awx):
    task = awx.job("sage deploy")
    assert (task.status, task.rc) == ("successful", 0), task.why()
    for name in ALL:
        assert (awx.rig.host(name).home / "awx" / "playbooks" / "cluster.yml").is_file(), name


def test_start_job_starts_the_cluster(awx):
    task = awx.job("sage cluster start")
    assert (task.status, task.rc) == ("successful", 0), task.why()
    assert set(task.stats()) == set(ALL) and all(s["changed"] >= 1 for s in task.stats().values()), task.stats()
    assert awx.ray_alive() == len(ALL)
    # The token came from the credential (reading the inventory made none).
    token = (awx.rig.host(HEAD).home / ".ray" / "auth_token").read_text().strip()
    assert token == awx.secrets["ray_auth_token"]


def test_status_job_reports_every_node(awx):
    task = awx.job("sage cluster status")
    assert (task.status, task.rc) == ("successful", 0), task.why()
    results = task.results()
    assert {n: r["running"] for n, r in results.items()} == {n: True for n in ALL}, results


def test_job_fails_on_a_host_key_not_committed(awx):
    """ANSIBLE_HOST_KEY_CHECKING=False is exported, yet a node whose key is not in awx/known_hosts is refused:
    the job fails, and only the artifacts say so (`ansible-runner process` exits 0)."""
    known_hosts = awx.scm / "awx" / "known_hosts"
    committed = known_hosts.read_text()
    known_hosts.write_text("".join(line for line in committed.splitlines(True) if not line.startswith(WORKERS[0])))
    try:
        task = awx.job("sage cluster status")
    finally:
        known_hosts.write_text(committed)
    assert task.process_rc == 0
    assert task.status == "failed" and task.rc != 0, task.why()
    assert task.stats()[WORKERS[0]]["dark"] == 1 and task.stats()[HEAD]["dark"] == 0, task.stats()
    assert "Host key verification failed" in task.output(), task.output()


def test_job_fails_without_the_token_credential(awx):
    """Token auth on and no "sage Ray token" credential: the start fails before Ray is touched (docs/ops.md B.6)."""
    task = awx.job("sage head restart", credentials=["sage SSH key"])
    assert task.process_rc == 0
    assert task.status == "failed" and task.rc != 0, task.why()
    assert task.stats()[HEAD]["failures"] == 1, task.why()
    # No token file in the job's fresh /runner, and the AWX inventory forbids making one.
    assert "ray_auth_token is not on the controller, and this run may not make one" in task.output(), task.why()
    assert awx.ray_alive() == len(ALL)  # the head was not stopped


def test_stop_job_stops_the_cluster(awx):
    task = awx.job("sage cluster stop")
    assert (task.status, task.rc) == ("successful", 0), task.why()
    for name in ALL:
        assert awx.raylets(name) == [], name


def test_no_secret_reaches_the_artifacts(awx):
    """AWX keeps artifacts/<ident>/ (events, command): neither the SSH key nor the Ray token may be in them.
    In the worker's /runner (the last job's), the injected files arrived readable by their owner only."""
    injected = [p for p in (awx.runner / "env").iterdir() if p.name.startswith("tmp")]
    assert len(injected) == 4, injected  # two credentials: a secret file and an extra-vars file each
    assert all(p.stat().st_mode & 0o077 == 0 for p in injected), [oct(p.stat().st_mode) for p in injected]
    key_body = awx.secrets["ssh_private_key"].splitlines()[1]
    leaked = [str(p) for p in awx.base.glob("awx_*/artifacts/**/*") if p.is_file()
              if key_body in (text := p.read_text(errors="replace")) or awx.secrets["ray_auth_token"] in text]
    assert leaked == []
