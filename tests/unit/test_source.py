"""What a deploy sends: the same files as rsync, one revision for one tree, never the controller's secrets."""
from __future__ import annotations

import os
import subprocess

import pytest

from sage_cluster import source

PATTERNS = source.EXCLUDES + ["secret.txt", "/top-only.log", "docs/drafts", "*.tmp"]


def make_tree(root):
    for rel in ["pkg/__init__.py", "pkg/__pycache__/x.pyc", "pkg/build/keep.txt", "build/out.bin", "a.pyc",
                "secret.txt", "pkg/secret.txt", "top-only.log", "pkg/top-only.log", "docs/drafts/d.md",
                "docs/final.md", "x.egg-info/PKG-INFO", "notes.tmp", ".ssh/id_ed25519", ".git/HEAD",
                "sub/.ray/auth_token", "node_modules/m/index.js", "README.md"]:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(rel)
    (root / "build.txt").write_text("a file named like the build/ dir pattern")
    os.symlink("README.md", root / "link.md")


def test_files_are_what_rsync_sends(tmp_path):
    src, dest = tmp_path / "src", tmp_path / "dest"
    src.mkdir()
    make_tree(src)
    argv = ["rsync", "-a", "--dry-run", "--out-format=%n", *[f"--exclude={p}" for p in PATTERNS],
            f"{src}/", str(dest)]
    sent = subprocess.run(argv, capture_output=True, text=True, check=True).stdout.split()
    rsync_files = sorted(p for p in sent if not p.endswith("/"))
    assert source.files(src, PATTERNS) == rsync_files
    assert "pkg/build/keep.txt" not in rsync_files and "build.txt" in rsync_files  # the same trailing-/ rule


def test_revision_follows_content_names_and_modes(tmp_path):
    make_tree(tmp_path)
    first = source.revision(tmp_path, PATTERNS)
    assert source.revision(tmp_path, PATTERNS) == first
    (tmp_path / "pkg" / "__pycache__" / "x.pyc").write_text("excluded: no new revision")
    assert source.revision(tmp_path, PATTERNS) == first
    (tmp_path / "pkg" / "__init__.py").write_text("changed")
    second = source.revision(tmp_path, PATTERNS)
    assert second != first
    (tmp_path / "pkg" / "__init__.py").chmod(0o755)
    assert source.revision(tmp_path, PATTERNS) != second


def test_packaging_revision_moves_only_with_packaging_files(tmp_path):
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    (tmp_path / "code.py").write_text("a = 1\n")
    before = source.revision(tmp_path, PATTERNS, only=source.PACKAGING)
    (tmp_path / "code.py").write_text("a = 2\n")
    assert source.revision(tmp_path, PATTERNS, only=source.PACKAGING) == before
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'y'\n")
    assert source.revision(tmp_path, PATTERNS, only=source.PACKAGING) != before


@pytest.fixture
def home(tmp_path, monkeypatch):
    home = tmp_path / "home"
    (home / "project").mkdir(parents=True)
    (home / ".ssh").mkdir()
    monkeypatch.setenv("HOME", str(home))
    return home


def test_sources_that_would_send_secrets_are_refused(home, tmp_path):
    assert source.problem(home / "project") is None
    assert "home directory" in source.problem(home)
    assert "root directory" in source.problem("/")
    assert "contains" in source.problem(home.parent)  # holds ~/.ssh
    key = tmp_path / "keys" / "id_ed25519"
    key.parent.mkdir()
    key.write_text("KEY")
    assert "contains" in source.problem(key.parent, str(key))  # the configured ssh.key_path
    assert "not a directory" in source.problem(home / "missing")
