"""The sharded index in the benchmarks: an extra row measured by the same recall and timing
code (``benchmark --index-shards``, ``index-bench --shards``), and bench-scale asking for it."""

from __future__ import annotations

import pytest
import torch

from pipelines.cli import job_parser
from pipelines.core.config import make_config
from pipelines.data import load_dataset, make_split
from pipelines.evaluation import index_scale as isc
from pipelines.evaluation import segments
from pipelines.evaluation.benchmark import BenchmarkConfig, bench_indexes
from pipelines.experiments import bench_scale as bs
from student.model import TwoTower, TwoTowerConfig


def test_the_benchmark_measures_a_sharded_row_like_the_others(tmp_path):
    data = load_dataset("synthetic:users=30,items=40,per_user=8,seed=2")
    split = make_split(data, "random", 0)
    torch.manual_seed(0)
    model = TwoTower(TwoTowerConfig(n_users=data.n_users, n_items=data.n_items, id_dim=8,
                                    out_dim=8, history_len=4)).eval()  # fmt: skip
    c = make_config(BenchmarkConfig, indexes=("flat",), index_shards=3, sharded_kind="flat",
                    n_single=2, out=str(tmp_path))  # fmt: skip
    out = bench_indexes(model, split, data, segments.test_segment(split, 0, 0), c)
    assert set(out) == {"flat", "flat x3 shards"}
    row, flat = out["flat x3 shards"], out["flat"]
    assert row["recall@10_vs_exact"] == 1.0 and row["config"]["shards"] == 3
    assert row["ndcg@10"] == flat["ndcg@10"]  # the Retriever over shards: the same lists
    with pytest.raises(ValueError, match="index_shards"):
        make_config(BenchmarkConfig, index_shards=0, out=str(tmp_path))


def test_index_bench_adds_sharded_rows_and_runs_only_the_settings_asked():
    res = isc.run_scale(sizes=(2000,), dim=16, n_queries=30, n_single=3, nprobes=(4, 16),
                        repeats=1, lognormal_sigma=0, shards=(2, 4),
                        shard_kinds=("flat", "ivf_sq8"),
                        settings=("flat", "ivf_sq8", "flat x2 shards",
                                  "ivf_sq8 x4 shards"))  # fmt: skip
    case = res["results"][0]
    assert set(case["indexes"]) == {"flat", "ivf_sq8", "flat x2 shards", "ivf_sq8 x4 shards"}
    assert case["indexes"]["flat x2 shards"]["recall@10_vs_exact"] == 1.0
    sharded = case["indexes"]["ivf_sq8 x4 shards"]
    assert sharded["config"]["shards"] == 4 and {p["value"] for p in sharded["sweep"]} == {4, 16}
    assert case["targets"] is None  # the targets need every default setting
    with pytest.raises(ValueError, match=r"settings \['nope'\] unknown"):
        isc.run_scale(sizes=(2000,), settings=("nope",))


def test_bench_scale_asks_the_benchmark_for_the_sharded_row(tmp_path):
    c = bs.BenchScaleConfig(sizes=("300x200x10",), out=str(tmp_path))
    argv = bs.stage_commands(c, "300x200x10", tmp_path / "s")["benchmark"]
    parser, _ = job_parser(argv[0])
    config = parser.parse_config(argv[1:])
    assert (config.index_shards, config.sharded_kind) == (4, "ivf_sq8")
    off = bs.BenchScaleConfig(sizes=("300x200x10",), out=str(tmp_path), index_shards=1)
    argv = bs.stage_commands(off, "300x200x10", tmp_path / "s")["benchmark"]
    assert parser.parse_config(argv[1:]).index_shards == 1
