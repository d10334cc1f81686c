"""Paths a job records: relative to the record's folder inside its run, absolute outside it,
a hub id as given; read back against the folder, and an old working-folder path as it was."""

from __future__ import annotations

from common.io import portable_path, portable_paths, resolve_recorded


def test_portable_path_round_trip(tmp_path, monkeypatch):
    run = tmp_path / "runs" / "shop"
    (run / "student" / "model").mkdir(parents=True)
    (run / "compressed").mkdir()
    outside = tmp_path / "elsewhere" / "labels"
    outside.mkdir(parents=True)
    folder = run / "compressed"
    assert portable_path(run / "student" / "model", folder) == "../student/model"
    assert portable_path(folder / "int8", folder) == str(folder / "int8")  # not there: as given
    assert portable_path(outside, folder) == str(outside)
    assert portable_path("sentence-transformers/all-MiniLM-L6-v2", folder) == (
        "sentence-transformers/all-MiniLM-L6-v2"
    )
    rec = portable_paths({"model": str(run / "student" / "model"), "labels": None}, folder,
                         ("model", "labels"))  # fmt: skip
    assert rec == {"model": "../student/model", "labels": None}
    assert resolve_recorded("../student/model", folder) == run / "student" / "model"
    assert resolve_recorded(str(outside), folder) == outside
    monkeypatch.chdir(tmp_path)  # a record written before paths were portable
    assert resolve_recorded("runs/shop/student/model", folder).resolve() == (
        run / "student" / "model"
    )
