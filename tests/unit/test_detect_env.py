"""python_path / ray_command `auto` (module_utils/detect_env.py): the finding on a fake node tree under tmp_path,
the cache, and the login shell's PATH as a real shell gives it."""
from __future__ import annotations

import json
import os
import shlex
import stat
import subprocess
import sys
from pathlib import Path

import pytest

import sage_cluster  # noqa: F401  (puts the collection on sys.path)
from ansible_collections.sage.cluster.plugins.module_utils import detect_env, ray_node

HOME = "/home/u"


def exe(root: Path, path: str) -> None:
    f = root / path.lstrip("/")
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_text("#!/bin/sh\n")
    f.chmod(f.stat().st_mode | stat.S_IXUSR)


def conda_env(root: Path, env_dir: str) -> None:
    for name in ("python", "python3", "ray"):
        exe(root, f"{env_dir}/bin/{name}")


def find(root: Path, name: str, path: str = "/usr/bin:/bin", environ: dict | None = None,
         with_ray: tuple[str, ...] = ()) -> dict:
    return detect_env.find(name, HOME, path, environ or {}, lambda python: python in with_ray, root=str(root))


def test_the_usual_bases_in_order(tmp_path: Path) -> None:
    conda_env(tmp_path, "/opt/conda/envs/sage")
    conda_env(tmp_path, "/home/u/miniforge3/envs/sage")
    found = find(tmp_path, "sage")
    assert found == {"python_path": "/home/u/miniforge3/envs/sage/bin/python",
                     "ray_command": "/home/u/miniforge3/envs/sage/bin/ray", "conda_env": "sage",
                     "found": "conda env sage at /home/u/miniforge3/envs/sage"}


def test_conda_on_path_or_conda_exe_comes_first(tmp_path: Path) -> None:
    conda_env(tmp_path, "/home/u/miniconda3/envs/sage")
    conda_env(tmp_path, "/srv/conda/envs/sage")
    exe(tmp_path, "/srv/conda/condabin/conda")
    os.makedirs(tmp_path / "usr/local/bin")
    os.symlink(tmp_path / "srv/conda/condabin/conda", tmp_path / "usr/local/bin/conda")
    assert find(tmp_path, "sage", "/usr/local/bin:/usr/bin")["python_path"] == "/srv/conda/envs/sage/bin/python"
    environ = {"CONDA_EXE": "/srv/conda/bin/conda"}
    assert find(tmp_path, "sage", environ=environ)["python_path"] == "/srv/conda/envs/sage/bin/python"
    assert find(tmp_path, "sage")["python_path"] == "/home/u/miniconda3/envs/sage/bin/python"


def test_base_is_the_base_env_itself(tmp_path: Path) -> None:
    conda_env(tmp_path, "/opt/miniconda3")
    assert find(tmp_path, "base")["python_path"] == "/opt/miniconda3/bin/python"


def test_without_a_conda_env_the_first_python3_on_path_that_imports_ray(tmp_path: Path) -> None:
    exe(tmp_path, "/usr/bin/python3")
    exe(tmp_path, "/home/u/.venv/bin/python3")
    path = "/home/u/.venv/bin:/usr/bin"
    found = find(tmp_path, "sage", path, with_ray=("/usr/bin/python3",))
    assert found == {"python_path": "/usr/bin/python3", "ray_command": "/usr/bin/ray", "conda_env": "",
                     "found": "python3 on PATH with Ray at /usr/bin"}
    assert find(tmp_path, "", path, with_ray=("/home/u/.venv/bin/python3", "/usr/bin/python3"))[
        "python_path"] == "/home/u/.venv/bin/python3"


def test_nothing_found_is_one_line_naming_where_it_looked(tmp_path: Path) -> None:
    exe(tmp_path, "/usr/bin/python3")
    with pytest.raises(detect_env.NotFound) as err:
        find(tmp_path, "sage")
    msg = str(err.value)
    assert "\n" not in msg
    for looked in ("/home/u/miniconda3/envs/sage", "/home/u/mambaforge/envs/sage", "/opt/anaconda3/envs/sage",
                   "/usr/bin:/bin"):
        assert looked in msg
    with pytest.raises(detect_env.NotFound, match="no python3 that imports Ray on the login PATH /usr/bin"):
        find(tmp_path, "", "/usr/bin")


def test_explicit_paths_stay_and_ray_auto_is_beside_the_python() -> None:
    def never() -> dict:
        raise AssertionError("nothing to detect")

    assert detect_env.resolve("/e/bin/python", "/x/ray", "e", never)["ray_command"] == "/x/ray"
    assert detect_env.resolve("/e/bin/python", "auto", "e", never)["ray_command"] == "/e/bin/ray"
    found = {"python_path": "/f/bin/python", "ray_command": "/f/bin/ray", "conda_env": "f", "found": "x"}
    assert detect_env.resolve("auto", "/x/ray", "f", lambda: found)["ray_command"] == "/x/ray"
    assert detect_env.resolve("auto", "auto", "f", lambda: found) == found


def test_the_cache_is_kept_until_its_python_stops_existing(tmp_path: Path) -> None:
    cache = str(tmp_path / ".sage" / "env.json")
    python = tmp_path / "env" / "bin" / "python"
    exe(tmp_path, "/env/bin/python")
    found = {"python_path": str(python), "ray_command": str(python.parent / "ray"), "conda_env": "sage",
             "found": "conda env sage at x"}
    detect_env.write_cache("sage", found, cache)
    assert stat.S_IMODE(os.stat(os.path.dirname(cache)).st_mode) == 0o700
    assert json.loads(Path(cache).read_text())["asked"] == "sage"
    assert detect_env.read_cache("sage", cache) == found
    assert detect_env.read_cache("other", cache) is None  # asked for another env: detect again
    python.unlink()
    assert detect_env.read_cache("sage", cache) is None
    Path(cache).write_text("not json")
    assert detect_env.read_cache("sage", cache) is None


def test_resolve_here_detects_once_then_reads_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On this machine: this Python's own bin dir on the login PATH, with Ray importable (the test env has it)."""
    home = tmp_path / "home"
    home.mkdir()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    # A wrapper, not a symlink: a venv's Python reached through a symlink elsewhere is not in its venv any more
    # (no pyvenv.cfg beside the link), and the test env's Ray may live only in that venv.
    (bin_dir / "python3").write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')
    (bin_dir / "python3").chmod(0o755)
    (home / ".profile").write_text(f'echo a chatty profile\nPATH="{bin_dir}:$PATH"\n')
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("SHELL", "/bin/sh")
    monkeypatch.delenv("CONDA_EXE", raising=False)
    cache = str(home / ".sage" / "env.json")
    found = detect_env.resolve_here("auto", "auto", "", cache)
    assert found["python_path"] == str(bin_dir / "python3")
    assert found["ray_command"] == str(bin_dir / "ray")
    monkeypatch.setattr(detect_env, "login_env", lambda: pytest.fail("detected twice"))
    assert detect_env.resolve_here("auto", "auto", "", cache) == found


def test_the_status_probe_reads_the_cache_while_its_python_exists(tmp_path: Path) -> None:
    """The probe (fixed sh text) prints the module's finding while its Python exists."""
    home = tmp_path / "home"
    env_bin = tmp_path / "env" / "bin"
    env_bin.mkdir(parents=True)
    (env_bin / "python").write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')
    (env_bin / "python").chmod(0o755)
    found = {"python_path": str(env_bin / "python"), "ray_command": str(env_bin / "ray"), "conda_env": "sage",
             "found": "conda env sage at x"}
    detect_env.write_cache("sage", found, str(home / ".sage" / "env.json"))

    def probe() -> dict:
        out = subprocess.run(["dash", "-c", ray_node.probe_command("/dev/null", shlex.quote, detected=True)],
                             capture_output=True, text=True, check=True,
                             env={"HOME": str(home), "PATH": "/usr/bin:/bin"})
        # A worker's probe, as Ansible's ssh with a tty gives it back: \r\n line ends.
        assert ray_node.parse_probe(out.stdout.replace("\n", "\r\n"))[2] == ray_node.parse_probe(out.stdout)[2]
        return ray_node.parse_probe(out.stdout)[2]

    cached = probe()
    assert dict(cached, asked=None) == dict(found, asked=None) and cached["asked"] == "sage"
    (env_bin / "python").unlink()
    assert probe() == {}
    assert "env.json" not in ray_node.probe_command("/dev/null", shlex.quote)  # not asked: not read
