"""The one atomic writer of ``pipelines`` (``common.io``): crashes at each point of a
save leave either the old artifact or the new one, and the next save cleans up."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from common import io
from common.io import atomic_dir, atomic_write, recover, write_json


class Crash(RuntimeError):
    pass


def make_dir(path: Path, text: str) -> Path:
    with atomic_dir(path) as tmp:
        (tmp / "data.txt").write_text(text)
    return path


def hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_atomic_dir_writes_and_replaces(tmp_path):
    target = make_dir(tmp_path / "art", "v1")
    assert (target / "data.txt").read_text() == "v1"
    make_dir(target, "v2")
    assert (target / "data.txt").read_text() == "v2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art"]  # no temp, no .old


def test_exception_inside_atomic_dir_keeps_the_old_folder(tmp_path):
    target = make_dir(tmp_path / "art", "v1")
    with pytest.raises(Crash), atomic_dir(target) as tmp:
        (tmp / "data.txt").write_text("half")
        raise Crash
    assert (target / "data.txt").read_text() == "v1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art"]
    # the same for a first save: nothing appears
    with pytest.raises(Crash), atomic_dir(tmp_path / "new") as tmp:
        raise Crash
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art"]


def crash_on_call(monkeypatch, n: int) -> None:
    real, calls = os.replace, []

    def replace(src, dst):
        calls.append((src, dst))
        if len(calls) == n:
            raise Crash(f"os.replace call {n}")
        return real(src, dst)

    monkeypatch.setattr(io.os, "replace", replace)


@pytest.mark.parametrize("next_step", ["atomic_dir", "recover"])
def test_crash_between_the_two_renames_is_recovered(tmp_path, monkeypatch, next_step):
    target = make_dir(tmp_path / "art", "v1")
    crash_on_call(monkeypatch, 2)  # target -> .old done, temp -> target fails
    with pytest.raises(Crash), atomic_dir(target) as tmp:
        (tmp / "data.txt").write_text("v2")
    monkeypatch.undo()
    assert not target.exists()
    (old,) = hidden(tmp_path)
    assert old.startswith(".art.") and old.endswith(".old")
    assert (tmp_path / old / "data.txt").read_text() == "v1"  # the only complete copy
    if next_step == "recover":
        recover(target)
        assert (target / "data.txt").read_text() == "v1"
    else:
        with atomic_dir(target) as tmp:
            assert (target / "data.txt").read_text() == "v1"  # restored before the new save
            (tmp / "data.txt").write_text("v3")
        assert (target / "data.txt").read_text() == "v3"
    assert hidden(tmp_path) == []


def test_crash_on_the_first_rename_keeps_the_old_folder(tmp_path, monkeypatch):
    target = make_dir(tmp_path / "art", "v1")
    crash_on_call(monkeypatch, 1)
    with pytest.raises(Crash), atomic_dir(target) as tmp:
        (tmp / "data.txt").write_text("v2")
    monkeypatch.undo()
    assert (target / "data.txt").read_text() == "v1"
    recover(target)  # the empty .old placeholder goes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art"]


def test_stale_temporaries_are_removed(tmp_path):
    target = make_dir(tmp_path / "art", "v1")
    # a kill -9 during a save leaves a temp folder; during an atomic_write, a temp file
    (tmp_path / ".art.k1lled_1.tmp").mkdir()
    (tmp_path / ".art.k1lled_1.tmp" / "data.txt").write_text("half")
    (tmp_path / ".art.k1lled_2.tmp").write_text("half")
    make_dir(target, "v2")
    assert (target / "data.txt").read_text() == "v2"
    assert hidden(tmp_path) == []
    (tmp_path / ".art.k1lled_3.tmp").mkdir()
    recover(target)
    assert hidden(tmp_path) == []


def test_recovery_leaves_other_targets_alone(tmp_path, monkeypatch):
    # "art.v2" starts with "art.": its temporaries and .old copy are not those of "art"
    other = make_dir(tmp_path / "art.v2", "other v1")
    crash_on_call(monkeypatch, 2)
    with pytest.raises(Crash), atomic_dir(other) as tmp:
        (tmp / "data.txt").write_text("other v2")
    monkeypatch.undo()
    (old,) = hidden(tmp_path)
    (tmp_path / ".art.v2.k1lled_1.tmp").mkdir()  # a save of art.v2 in progress
    make_dir(tmp_path / "art", "mine")
    assert (tmp_path / "art" / "data.txt").read_text() == "mine"
    assert hidden(tmp_path) == sorted([old, ".art.v2.k1lled_1.tmp"])
    recover(other)
    assert (other / "data.txt").read_text() == "other v1"


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path):
    target = write_json(tmp_path / "m.json", {"v": 1})

    def fail(p: Path) -> None:
        p.write_text('{"v": ')  # half written, then the disk fills up
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        atomic_write(target, fail)
    assert target.read_text() == '{\n  "v": 1\n}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json"]


def test_atomic_write_rename_failure_keeps_the_old_file(tmp_path, monkeypatch):
    target = write_json(tmp_path / "m.json", {"v": 1})
    crash_on_call(monkeypatch, 1)
    with pytest.raises(Crash):
        write_json(target, {"v": 2})
    monkeypatch.undo()
    assert target.read_text() == '{\n  "v": 1\n}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json"]


def test_modes_follow_the_umask(tmp_path):
    mask = os.umask(0o022)
    try:
        f = write_json(tmp_path / "m.json", {})
        d = make_dir(tmp_path / "art", "v1")
    finally:
        os.umask(mask)
    assert f.stat().st_mode & 0o777 == 0o644
    assert d.stat().st_mode & 0o777 == 0o755


def test_names_with_glob_characters_are_recovered(tmp_path, monkeypatch):
    target = make_dir(tmp_path / "run[1]", "v1")
    crash_on_call(monkeypatch, 2)
    with pytest.raises(Crash), atomic_dir(target) as tmp:
        (tmp / "data.txt").write_text("v2")
    monkeypatch.undo()
    recover(target)
    assert (target / "data.txt").read_text() == "v1" and hidden(tmp_path) == []
