"""The bench's rig: host names, ports and paths, the sage config for them, and the project a deploy copies."""
from __future__ import annotations

import random
import time
from pathlib import Path

from tests.rig import DEFAULT_ENV, Rig, rig_root
from tests.rig.config import sage_config

REPO = Path(__file__).resolve().parent.parent
ROOT = rig_root("bench")  # beside $SAGE_RIG_ROOT (tests/rig/isolated sets it per checkout)
FIRST_IP = 120
HEAD, WORKERS = "b-head", ["b-w1", "b-w2", "b-w3"]
CLUSTER = [HEAD, *WORKERS]
HEAD_PORT, DASHBOARD_PORT = 6395, 8295
ENV = DEFAULT_ENV
REMOTE_HOME = "/home/sage"
DEST = f"{REMOTE_HOME}/bench-proj"
HEAD_TEMP, WORKER_TEMP = "/tmp/ray_head", "/tmp/ray_worker"


def make_project(path: Path, files: int = 200, blob_mib: int = 4) -> Path:
    rnd = random.Random(6)
    for i in range(files):
        f = path / f"pkg{i // 20}" / f"mod{i % 20}.py"
        f.parent.mkdir(parents=True, exist_ok=True)
        body = "".join(f"VALUE_{j} = {rnd.randint(0, 10**9)}  # line {j} of module {i}\n" for j in range(30))
        f.write_text(f'"""Module {i} of the bench project."""\n' + body)
    # A pip project: every deploy ends in the install check, and the first one installs it (editable).
    for i in range(files // 20):
        (path / f"pkg{i}" / "__init__.py").write_text("")
    (path / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=70.1"]\nbuild-backend = "setuptools.build_meta"\n\n'
        f'[project]\nname = "benchproj"\nversion = "0.1.0"\n\n[tool.setuptools]\n'
        f'packages = [{", ".join(repr(f"pkg{i}") for i in range(files // 20))}]\n'.replace("'", '"'))
    (path / "data").mkdir()
    for i in range(blob_mib):
        (path / "data" / f"blob{i}.bin").write_bytes(rnd.randbytes(1 << 20))
    (path / ".git").mkdir()  # excluded by sage and by the floor's rsync
    (path / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (path / "pkg0" / "__pycache__").mkdir()
    (path / "pkg0" / "__pycache__" / "mod0.cpython-311.pyc").write_bytes(b"\0" * 512)
    return path


def change_one_file(project: Path) -> None:
    f = project / "pkg0" / "mod0.py"
    f.write_text(f.read_text() + f"CHANGED = {time.time_ns()}\n")


def write_config(path: Path, rig: Rig, project: Path, head: str, workers: list[str]) -> Path:
    path.write_text(sage_config(
        rig, head, workers, head_port=HEAD_PORT, dashboard_port=DASHBOARD_PORT,
        comment=f"Written by bench/bench.py for one run; the rig is at {rig.root}.",
        head={"temp_dir": HEAD_TEMP}, worker={"temp_dir": WORKER_TEMP},
        ssh={"connect_timeout": 10, "strict_host_key_checking": "yes", "known_hosts": str(rig.known_hosts_path)},
        remote={"sage_home": DEST, "conda_env": ""},
        # The rig has no internet: build with the env's own setuptools.
        deploy={"source": str(project), "pip_args": ["--no-build-isolation", "--no-index"]}))
    return path
