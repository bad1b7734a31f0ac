"""Fixtures for the unit tests."""
from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An isolated HOME (so ~/.sage/config.yaml is the test's), for in-process tests too. It is also the current
    directory: a config is looked for in the project around it (config/cluster.yaml), never this checkout's."""
    h = tmp_path / "home"
    h.mkdir()
    monkeypatch.setenv("HOME", str(h))
    monkeypatch.chdir(h)
    monkeypatch.delenv("SAGE_CONFIG", raising=False)
    return h
