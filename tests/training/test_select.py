"""Distillation chosen on validation (pipelines/training/select.py): the grid always holds scale
0, the kept model is the validation argmax, metrics.json records the whole grid."""

from __future__ import annotations

import json
import logging

import pytest
import torch

from pipelines.cli import main
from pipelines.core.config import make_config
from pipelines.labels.generate_labels import GenerateLabelsConfig
from pipelines.labels.generate_labels import run as generate
from pipelines.training.select import choose, grid_points
from pipelines.training.train_student import TrainStudentConfig, run
from student.model import TwoTower

DATASET = "synthetic:users=40,items=50,per_user=10,seed=5"
SMALL = dict(dataset=DATASET, epochs=2, patience=2, batch_size=64, id_dim=8, user_hidden=(16,),
             item_hidden=(16,), out_dim=8, history_len=10, n_negatives=16, soft_users=16,
             threads=1)  # fmt: skip


@pytest.fixture(scope="module")
def label_dir(tmp_path_factory, tiny_st_dir):
    out = tmp_path_factory.mktemp("sel") / "labels"
    generate(
        GenerateLabelsConfig(
            dataset=DATASET,
            model=str(tiny_st_dir),
            n_negatives=10,
            max_positives=5,
            eval_users=20,
            eval_negatives=10,
            threads=1,
            max_seq_length=32,
            out=str(out),
        )  # fmt: skip
    )
    return out


def test_grid_holds_zero_and_keeps_the_validation_argmax(tmp_path, label_dir, caplog):
    out = tmp_path / "s"
    cfg = make_config(TrainStudentConfig, **SMALL, labels=str(label_dir), out=str(out),
                      distill_scales=(0.5, 2.0), temperatures=(1.0, 3.0))  # fmt: skip
    with caplog.at_level(logging.INFO, logger="pipelines.training.select"):
        res = run(cfg)
    sel = res["selection"]
    points = [(g["scale"], g["temperature"]) for g in sel["grid"]]
    assert points == [(0.0, 1.0), (0.5, 1.0), (0.5, 3.0), (2.0, 1.0), (2.0, 3.0)]
    assert sel["zero_added"] and "scale 0 (the hard student) added" in caplog.text
    assert caplog.text.count("grid point ") == 5  # one line per point
    ndcg = [g["valid"]["ndcg@10"] for g in sel["grid"]]
    best = ndcg.index(max(ndcg))  # the first of equals: the smaller scale
    assert (sel["chosen"]["scale"], sel["chosen"]["temperature"]) == points[best]
    assert sel["zero_won"] == (points[best][0] == 0.0)
    assert res["valid"] == sel["grid"][best]["valid"]
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["selection"] == json.loads(json.dumps(sel))
    assert saved["config"]["distill_scales"] == [0.5, 2.0]
    # only the chosen model is kept, and nothing of the grid is left beside it
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "model"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]
    # scale 0 is the hard student of the same seed and split
    hard = run(make_config(TrainStudentConfig, **SMALL, no_teacher=True, out=str(tmp_path / "h")))
    assert sel["grid"][0]["valid"] == hard["valid"] and sel["grid"][0]["mode"] == "hard"
    if sel["zero_won"]:
        a = TwoTower.from_pretrained(out / "model").state_dict()
        b = TwoTower.from_pretrained(tmp_path / "h" / "model").state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_choose_takes_the_first_of_equal_scores():
    grid = [{"valid": {"ndcg@10": v}} for v in (0.2, 0.3, 0.3, 0.1)]
    assert choose(grid) == 1


def test_grid_points_keep_a_given_zero_once(label_dir):
    cfg = make_config(TrainStudentConfig, **SMALL, labels=str(label_dir),
                      distill_scales=(1.0, 0.0), temperatures=(2.0, 1.0))  # fmt: skip
    points, added = grid_points(cfg)
    assert not added and points == [(0.0, 1.0), (1.0, 1.0), (1.0, 2.0)]


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        (dict(distill_scales=(-1.0,)), "distill_scales"),
        (dict(temperatures=(0.0,)), "temperatures"),
        (dict(distill_scales=(1.0,), w_hard=0.0), "distill_scales"),
    ],
)
def test_config_errors_name_the_field(label_dir, extra, field):
    with pytest.raises(ValueError, match=f"TrainStudentConfig.{field}"):
        make_config(TrainStudentConfig, **SMALL, labels=str(label_dir), **extra)


def test_cli_error_is_one_line_exit_2(tmp_path, capsys):
    argv = ["train-student", "--no-teacher", "--distill-scales", "0", "1", "--dataset", DATASET,
            "--out", str(tmp_path / "x")]  # fmt: skip
    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and "TrainStudentConfig.distill_scales" in err[0]
    assert err[1:] == ["see recdistill train-student --help"]  # the parser's hint, no traceback
