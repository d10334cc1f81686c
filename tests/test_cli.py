from __future__ import annotations

import json

import pytest

from pipelines.cli import main


def test_prepare_in_process(tmp_path, capsys):
    out = tmp_path / "prep"
    res = main(
        ["prepare", "--dataset", "synthetic:users=80,items=60,per_user=10", "--out", str(out)]
    )
    assert set(res["protocols"]) == {"random", "temporal"}
    saved = json.loads((out / "stats.json").read_text())
    assert saved["stats"]["users"] == 80
    assert "ease(l=" in capsys.readouterr().out


def test_config_file_and_overrides(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("dataset: synthetic:users=40,items=50,per_user=8\nprotocols: [temporal]\n")
    res = main(["prepare", "--config", str(cfg), "--out", str(tmp_path / "o")])
    assert list(res["protocols"]) == ["temporal"]
    assert res["config"]["out"] == str(tmp_path / "o")


def test_unknown_flags_and_fields_are_rejected(tmp_path):
    with pytest.raises(SystemExit):
        main(["prepare", "--no-such-flag", "1"])
    cfg = tmp_path / "c.yaml"
    cfg.write_text("colour: blue\n")
    with pytest.raises(SystemExit):
        main(["prepare", "--config", str(cfg)])
    with pytest.raises(SystemExit):
        main(["prepare", "--protocols", "sideways"])


def test_string_none_stays_a_string_for_choices():
    from pipelines.core.config import parse_config
    from pipelines.labels.generate_labels import GenerateLabelsConfig

    cfg = parse_config(GenerateLabelsConfig, ["--collab", "none", "--adapter", "none"])
    assert cfg.collab == "none" and cfg.adapter is None
