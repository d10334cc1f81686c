"""``common.versions.source_commit``: the commit a run records (``demo.json``), read from the
source tree's own git checkout, or "unknown"."""

from __future__ import annotations

import subprocess

from common.versions import source_commit


def _git(root, *args: str) -> str:
    cmd = ["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@t", *args]
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip()


def test_a_checkout_gives_its_short_head_and_marks_changes(tmp_path):
    _git(tmp_path, "init", "-q")
    (tmp_path / "a.py").write_text("x = 1\n")
    _git(tmp_path, "add", "a.py")
    _git(tmp_path, "commit", "-q", "-m", "one")
    head = _git(tmp_path, "rev-parse", "--short", "HEAD")
    assert source_commit(tmp_path) == head
    (tmp_path / "untracked.txt").write_text("run output\n")
    assert source_commit(tmp_path) == head  # untracked files (runs/) do not count
    (tmp_path / "a.py").write_text("x = 2\n")
    assert source_commit(tmp_path) == f"{head}+dirty"


def test_no_checkout_of_its_own_is_unknown(tmp_path):
    assert source_commit(tmp_path) == "unknown"
    _git(tmp_path, "init", "-q")
    inner = tmp_path / "site-packages"  # an install inside another repository
    inner.mkdir()
    assert source_commit(inner) == "unknown"
    assert source_commit(tmp_path) == "unknown"  # a repository without a commit
