"""Shared fixtures: run the real `sage` CLI as a user would, with its own HOME (so its own ~/.sage)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest_rig import *  # noqa: F401,F403  (the `rig` fixture)


@dataclass
class Sage:
    home: Path
    config: Path | None = None
    cwd: Path | None = None

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SAGE_", "ANSIBLE_"))}
        env["HOME"] = str(self.home)
        if self.config:
            env["SAGE_CONFIG"] = str(self.config)
        return env

    def __call__(self, *args: str, timeout: float = 600, check: bool | None = None) -> subprocess.CompletedProcess:
        proc = subprocess.run([sys.executable, "-m", "sage_cluster", *args], capture_output=True, text=True,
                              env=self.env(), cwd=self.cwd or self.home, timeout=timeout)
        if check is not None and (proc.returncode == 0) != check:
            raise AssertionError(f"sage {' '.join(args)} exited {proc.returncode}\n"
                                 f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
        return proc

    def json(self, *args: str, **kw) -> tuple[int, dict]:
        proc = self(*args, "--json", **kw)
        try:
            return proc.returncode, json.loads(proc.stdout)
        except json.JSONDecodeError:
            raise AssertionError(f"not JSON from sage {' '.join(args)} --json:\n{proc.stdout}\n{proc.stderr}")


@pytest.fixture
def sage(tmp_path: Path) -> Sage:
    home = tmp_path / "home"
    home.mkdir()
    return Sage(home=home)
