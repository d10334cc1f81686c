"""The benchmark's rankings break exact ties by the seeded item order, and say so."""

from __future__ import annotations

import numpy as np

from pipelines.data import load_dataset, make_split
from pipelines.evaluation.benchmark import BenchmarkConfig
from pipelines.evaluation.benchmark import run as benchmark
from pipelines.evaluation.segments import Scorer, make_segments

DATASET = "synthetic:users=40,items=150,per_user=10,seed=2"


def test_a_constant_scorer_ranks_by_the_tie_seed_not_the_index():
    data = load_dataset(DATASET)
    (seg,) = make_segments(make_split(data, "temporal", 0), 0, 0)
    flat = lambda u: np.zeros((len(u), data.n_items), np.float32)  # noqa: E731
    a = Scorer("flat", flat, tie_seed=0).score(seg, 10)
    b = Scorer("flat", flat, tie_seed=1).score(seg, 10)
    lowest = [i for i in range(20) if not seg.exclude[seg.users[0], i]][:10]
    assert a.top10[0].tolist() != lowest
    assert not np.array_equal(a.top10, b.top10)


def test_report_names_the_split_and_ranking_tie_rules(tmp_path):
    rep = benchmark(
        BenchmarkConfig(
            dataset=DATASET,
            protocol="temporal",
            indexes=(),
            bootstrap=10,
            tie_seed=3,
            out=str(tmp_path / "b"),
        )  # fmt: skip
    )
    assert rep["dataset"]["split"]["ties"] == "seeded_shuffle"
    assert rep["ranking_ties"] == {"rule": "seeded_item_order", "seed": 3}
