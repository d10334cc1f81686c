"""Index benchmark helpers (data, oracle, recall, bench/sweep/scale structure) and the report."""

from __future__ import annotations

import copy
import json

import faiss
import numpy as np
import pytest

from pipelines.cli import main as cli_main
from pipelines.core.metrics import tie_ranks
from pipelines.evaluation import index_eval as ie
from pipelines.evaluation import index_scale as isc
from pipelines.evaluation.report import (
    ReportSchemaError,
    headline_table,
    render_markdown,
    validate_report,
    write_report,
)
from student.serving import IndexConfig, ItemIndex

# ------------------------------------------------------------------------ data


def test_synthetic_embeddings_are_seeded_with_the_requested_norms() -> None:
    a_items, a_q = isc.synthetic_embeddings(3000, dim=32, n_queries=50, intrinsic_dim=8, seed=3)
    b_items, b_q = isc.synthetic_embeddings(3000, dim=32, n_queries=50, intrinsic_dim=8, seed=3)
    c_items, _ = isc.synthetic_embeddings(3000, dim=32, n_queries=50, intrinsic_dim=8, seed=4)
    np.testing.assert_array_equal(a_items, b_items)
    np.testing.assert_array_equal(a_q, b_q)
    assert not np.allclose(a_items, c_items)
    assert a_items.shape == (3000, 32) and a_q.shape == (50, 32)
    assert a_items.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(a_items, axis=1), 1.0, atol=1e-5)
    # queries are not copies of items
    assert (a_q @ a_items.T).max() < 0.9999

    items, q = isc.synthetic_embeddings(3000, dim=32, n_queries=50, norm_sigma=0.5, seed=3)
    log_norms = np.log(np.linalg.norm(items, axis=1))
    assert 0.45 < log_norms.std() < 0.55
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1.0, atol=1e-5)


def test_synthetic_embeddings_have_low_intrinsic_dimension() -> None:
    items, _ = isc.synthetic_embeddings(4000, dim=64, n_queries=1, intrinsic_dim=4, seed=0)
    s = np.linalg.svd(items - items.mean(0), compute_uv=False) ** 2
    iso = np.random.default_rng(0).normal(size=items.shape)
    s_iso = np.linalg.svd(iso - iso.mean(0), compute_uv=False) ** 2
    # most variance in few directions (unlike isotropic noise), but not exactly low-rank
    assert s[:16].sum() / s.sum() > 0.7 > 0.4 > s_iso[:16].sum() / s_iso.sum()
    assert s[32:].sum() > 0


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"n_items": 0}, "n_items"),
        ({"intrinsic_dim": 99}, "intrinsic_dim"),
        ({"norm_sigma": -1}, "norm_sigma"),
    ],
)
def test_synthetic_embeddings_reject_bad_arguments(kwargs: dict, name: str) -> None:
    args = {"n_items": 100, "dim": 16, "n_queries": 5} | kwargs
    with pytest.raises(ValueError, match=name):
        isc.synthetic_embeddings(**args)


# ---------------------------------------------------------------------- oracle
def test_exact_topk_matches_faiss_flat_and_breaks_ties_in_the_seeded_order() -> None:
    items, queries = isc.synthetic_embeddings(1500, dim=16, n_queries=70, intrinsic_dim=4, seed=1)
    scores, rows = ie.exact_topk(items, queries, 10, batch=32)
    flat = faiss.IndexFlatIP(16)
    flat.add(items)
    d_ref, i_ref = flat.search(queries, 10)
    np.testing.assert_array_equal(rows, i_ref)
    np.testing.assert_allclose(scores, d_ref, atol=1e-5)
    tied = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 0.0]], np.float32)
    _, r = ie.exact_topk(tied, np.array([[1.0, 0.0]], np.float32), 3)
    ranks = tie_ranks(4)  # rows 0, 2, 3 tie: the seeded tie order of the rows, as topk's
    assert r.tolist() == [sorted([0, 2, 3], key=lambda j: ranks[j])]
    many = np.tile([[1.0, 0.0]], (50, 1)).astype(np.float32)  # 50 equal rows
    assert ie.exact_topk(many, np.array([[1.0, 0.0]], np.float32), 5)[1].tolist() != [
        [0, 1, 2, 3, 4]
    ]
    _, r = ie.exact_topk(tied, np.array([[0.0, 1.0]], np.float32), 9)  # k > N
    assert r.shape == (1, 4) and r[0, 0] == 1


def test_recall_at_k() -> None:
    exact = np.array([[1, 2, 3, 4], [5, 6, 7, 8]])
    assert ie.recall_at_k(exact, exact) == 1.0
    assert ie.recall_at_k(exact[:, ::-1], exact) == 1.0  # order inside the top-k is free
    approx = np.array([[1, 2, 9, 9], [-1, -1, 5, 6]])
    assert ie.recall_at_k(approx, exact) == pytest.approx((2 + 2) / 8)
    assert ie.recall_at_k(np.full((2, 4), -1), exact) == 0.0
    with pytest.raises(ValueError, match="same B"):
        ie.recall_at_k(exact[:1], exact)


# ----------------------------------------------------------------- bench/sweep
@pytest.fixture(scope="module")
def small() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    items, queries = isc.synthetic_embeddings(3000, dim=32, n_queries=60, intrinsic_dim=8, seed=0)
    return items, queries, ie.exact_topk(items, queries, 10)[1]


def test_bench_index_reports_recall_and_sizes(small) -> None:
    items, queries, exact = small
    flat = ItemIndex.build(items, np.arange(len(items)), IndexConfig(kind="flat"))
    old_threads = faiss.omp_get_max_threads()
    old_blas = faiss.cvar.distance_compute_blas_threshold
    m = ie.bench_index(flat, queries, exact, n_single=5, batch_sizes=(1, 16), blas=0)
    assert m["recall@10_vs_exact"] == 1.0
    assert m["bytes"] == flat.nbytes()
    for key in ("qps_batch1", "qps_batch16", "p50_ms", "p99_ms"):
        assert m[key] > 0
    assert m["p99_ms"] >= m["p50_ms"]
    # global faiss settings are restored
    assert faiss.omp_get_max_threads() == old_threads
    assert faiss.cvar.distance_compute_blas_threshold == old_blas
    sq8 = ItemIndex.build(items, np.arange(len(items)), IndexConfig(kind="sq8"))
    m8 = ie.bench_index(sq8, queries, exact, n_single=5, repeats=2)
    assert 0.95 <= m8["recall@10_vs_exact"] < 1.0 and m8["bytes"] < 0.3 * m["bytes"]


def test_sweep_recall_grows_with_nprobe_and_restores_it(small) -> None:
    items, queries, exact = small
    index = ItemIndex.build(items, np.arange(len(items)), IndexConfig(kind="ivf_flat", nprobe=3))
    nlist = index.config.nlist
    points = ie.sweep(index, queries, exact, "nprobe", [1, 4, nlist], n_single=3)
    assert [p["value"] for p in points] == [1, 4, nlist]
    assert all(p["param"] == "nprobe" and p["qps"] > 0 for p in points)
    recalls = [p["recall"] for p in points]
    assert recalls[0] < recalls[1] <= recalls[2] == 1.0  # all cells visited == exact
    assert index.config.nprobe == 3
    assert ie.pick_operating_point(points, 0.99)["value"] == nlist
    with pytest.raises(ValueError, match="efsearch"):
        ie.sweep(index, queries, exact, "efsearch", [1])


def test_run_scale_tiny_writes_json_with_targets_and_pitfall_cases(tmp_path) -> None:
    out = tmp_path / "bench" / "scale.json"
    res = isc.run_scale(
        sizes=(2000,),
        dim=16,
        n_queries=40,
        n_single=3,
        nprobes=(4, 16),
        ef_searches=(16, 64),
        repeats=1,
        out=out,
    )
    saved = json.loads(out.read_text())
    assert saved["args"]["sizes"] == [2000]
    assert [(c["n_items"], c["norm_sigma"]) for c in saved["results"]] == [(2000, 0.0), (2000, 0.5)]
    unit, lognormal = saved["results"]
    assert set(unit["indexes"]) == {"flat", "flat_blas0", "sq8", "ivf_sq8", "hnsw_sq8"}
    assert unit["indexes"]["flat"]["recall@10_vs_exact"] == 1.0
    assert {p["value"] for p in unit["indexes"]["ivf_sq8"]["sweep"]} == {4, 16}
    assert unit["targets"]["sq8_bytes_fraction"] < 0.3
    assert set(unit["targets"]) >= {"sq8_ok", "ann_qps_batch1", "ann_qps_batch256"}
    assert lognormal["targets"] is None
    assert {p["value"] for p in lognormal["indexes"]["ivf_sq8_mips"]["sweep"]} == {4, 16, 32, 64}
    assert lognormal["indexes"]["sq8_ip"]["config"]["normalize"] is False
    # every case's indexes fit the report schema
    validate_report(
        {"dataset": {}, "protocol": "synthetic", "models": {}, "indexes": lognormal["indexes"]}
    )
    assert res["results"][0]["n_items"] == 2000


def test_cli_parses_flags_and_rejects_unknown(tmp_path) -> None:
    out = tmp_path / "s.json"
    argv = ["--sizes", "1500", "--dim", "16", "--queries", "20", "--single", "2", "--sigma", "0"]
    argv += ["--nprobe", "2,8", "--ef", "16", "--repeats", "1", "--out", str(out)]
    res = cli_main(["index-bench", *argv])
    assert [c["norm_sigma"] for c in res["results"]] == [0.0]
    assert json.loads(out.read_text())["args"]["nprobes"] == [2, 8]
    with pytest.raises(SystemExit):
        cli_main(["index-bench", "--sizes", "1500", "--unknown-flag", "1"])
    with pytest.raises(ValueError, match="sizes"):
        isc.run_scale(sizes=(10,))


# ---------------------------------------------------------------------- report
def make_report() -> dict:
    return {
        "dataset": {"name": "ml-100k", "users": 943, "items": 1682},
        "protocol": "leave-last-out, full ranking, seen items excluded",
        "models": {
            "ease": {
                "ndcg@10": 0.33,
                "recall@10": 0.2,
                "mrr@10": 0.4,
                "params": 2_829_124,
                "bytes": 11_316_496,
                "teacher_top10_overlap": None,
            },
            "student": {
                "ndcg@10": np.float32(0.31),
                "recall@10": 0.19,
                "mrr@10": 0.37,
                "params": 120_000,
                "bytes": 480_000,
                "teacher_top10_overlap": 0.52,
                "latency_ms_batch1": 0.21,
                "ndcg@10_ci": [0.29, 0.33],
            },
        },
        "indexes": {
            "flat": {
                "recall@10_vs_exact": 1.0,
                "qps_batch1": 1800.0,
                "qps_batch256": 6700.0,
                "p50_ms": 0.55,
                "p99_ms": 0.65,
                "bytes": 25_600_045,
            },
            "hnsw_sq8": {
                "recall@10_vs_exact": 0.97,
                "qps_batch1": 17000.0,
                "qps_batch256": float("nan"),
                "p50_ms": 0.06,
                "p99_ms": 0.09,
                "bytes": 33_600_000,
                "sweep": [
                    {"param": "ef_search", "value": 16, "recall": 0.94, "qps": 20000.0},
                    {"param": "ef_search", "value": 64, "recall": 0.98, "qps": 9000.0},
                ],
            },
        },
    }


def test_validate_report_accepts_a_full_report() -> None:
    validate_report(make_report())


@pytest.mark.parametrize(
    ("path", "key"),
    [
        ((), "protocol"),
        ((), "indexes"),
        (("models", "student"), "mrr@10"),
        (("models", "ease"), "teacher_top10_overlap"),
        (("indexes", "flat"), "p99_ms"),
        (("indexes", "hnsw_sq8", "sweep", 1), "recall"),
    ],
)
def test_validate_report_names_the_missing_key(path: tuple, key: str) -> None:
    report = make_report()
    node = report
    for p in path:
        node = node[p]
    del node[key]
    with pytest.raises(ReportSchemaError, match=f"missing key '{key}'") as err:
        validate_report(report)
    for p in path:
        assert str(p) in str(err.value)


def test_validate_report_rejects_bad_types() -> None:
    report = make_report()
    report["models"]["ease"]["ndcg@10"] = "0.3"
    with pytest.raises(ReportSchemaError, match=r"\['ease'\]\['ndcg@10'\]='0.3'"):
        validate_report(report)
    report = make_report()
    report["models"]["student"]["ndcg@10_ci"] = [0.1]
    with pytest.raises(ReportSchemaError, match="ndcg@10_ci"):
        validate_report(report)
    with pytest.raises(ReportSchemaError, match="expected a dict"):
        validate_report([])


def test_headline_table_formats_values_and_missing() -> None:
    table = headline_table(make_report())
    lines = table.splitlines()
    assert len(lines) == 4 and lines[0].startswith("| model | NDCG@10")
    ease, student = lines[2], lines[3]
    assert "| 0.3300 |" in ease and "| - |" in ease  # no teacher overlap, CI, latency
    assert "[0.2900, 0.3300]" in student and "120k" in student and "468.8 KiB" in student


def test_write_report_writes_json_markdown_and_plots(tmp_path) -> None:
    report = make_report()
    before = copy.deepcopy(report)
    paths = write_report(report, tmp_path / "out")
    names = sorted(p.name for p in paths)
    assert names == [
        "quality_vs_bytes.png",
        "quality_vs_latency.png",
        "recall_vs_qps.png",
        "report.json",
        "report.md",
    ]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == names  # no temp files
    for p in paths:
        if p.suffix == ".png":
            assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 2000
    saved = json.loads((tmp_path / "out" / "report.json").read_text())
    assert saved["indexes"]["hnsw_sq8"]["qps_batch256"] is None  # NaN -> null
    assert saved["models"]["student"]["ndcg@10"] == pytest.approx(0.31)
    md = (tmp_path / "out" / "report.md").read_text()
    assert "## Models" in md and "## Indexes" in md and "ef_search=64" in md
    assert "![recall_vs_qps](recall_vs_qps.png)" in md
    assert "| hnsw_sq8 | 0.9700 | 17,000 | - |" in md
    assert report["models"].keys() == before["models"].keys()


def test_write_report_skips_empty_plots_and_refuses_invalid(tmp_path) -> None:
    report = make_report()
    report["indexes"] = {}
    for m in report["models"].values():
        m.pop("latency_ms_batch1", None)
    names = sorted(p.name for p in write_report(report, tmp_path))
    assert names == ["quality_vs_bytes.png", "report.json", "report.md"]
    assert "(no indexes)" in render_markdown(report)
    del report["dataset"]
    with pytest.raises(ReportSchemaError, match="dataset"):
        write_report(report, tmp_path / "bad")
    assert not (tmp_path / "bad").exists()
