"""Shared fixtures: run the real `sage` CLI as a user would, with its own HOME (so its own ~/.sage)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

import sage_cluster  # noqa: F401  (puts the collection sage.cluster on sys.path, for the tests' imports of it)
from tests.conftest_rig import *  # noqa: F401,F403  (the `rig` fixture)


def user_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment of a user whose HOME is `home`: this process's, without the tester's own sage and Ansible
    settings (SAGE_*, ANSIBLE_*: $SAGE_CONFIG may name the tester's cluster), then `extra`. Every command a test
    runs gets its environment from here, so it acts on the test's own config and cluster only."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SAGE_", "ANSIBLE_"))}
    return {**env, "HOME": str(home), **extra}


@dataclass
class Sage:
    home: Path
    config: Path | None = None
    cwd: Path | None = None

    def env(self, **extra: str) -> dict[str, str]:
        return user_env(self.home, **({"SAGE_CONFIG": str(self.config)} if self.config else {}), **extra)

    def __call__(self, *args: str, timeout: float = 600, check: bool | None = None,
                 env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        """Run `sage ARGS` as this user (env: variables to add, e.g. SAGE_LOCK_WAIT)."""
        # No terminal (what a script sees), whoever runs the tests: a start on a terminal may ask questions.
        proc = subprocess.run([sys.executable, "-m", "sage_cluster", *args], capture_output=True, text=True,
                              env=self.env(**(env or {})), cwd=self.cwd or self.home, timeout=timeout,
                              stdin=subprocess.DEVNULL)
        if check is not None and (proc.returncode == 0) != check:
            raise AssertionError(f"sage {' '.join(args)} exited {proc.returncode}\n"
                                 f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
        return proc

    def json(self, *args: str, **kw) -> tuple[int, dict]:
        proc = self(*args, "--json", **kw)
        try:
            return proc.returncode, json.loads(proc.stdout)
        except json.JSONDecodeError:
            raise AssertionError(f"not JSON from sage {' '.join(args)} --json:\n{proc.stdout}\n{proc.stderr}") from None


@pytest.fixture
def sage(tmp_path: Path) -> Sage:
    home = tmp_path / "home"
    home.mkdir()
    return Sage(home=home)
