"""FAISS serving: recall vs exact search per index kind, save/load, id maps, retrieve."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import scipy.sparse as sp

from pipelines.evaluation.index_scale import synthetic_embeddings
from student.serving import (
    INDEX_KINDS,
    IndexConfig,
    ItemIndex,
    default_nlist,
    embedding_fingerprint,
    retrieve,
)

N, D, K = 2000, 32, 10


def exact(items: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Brute-force top-k rows by inner product (the oracle)."""
    return np.argsort(-(queries @ items.T), axis=1, kind="stable")[:, :k]


def recall(approx: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(t)) / truth.shape[1] for a, t in zip(approx, truth)]))


@pytest.fixture(scope="module")
def unit_data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    items, queries = synthetic_embeddings(N, dim=D, n_queries=200, intrinsic_dim=8, seed=0)
    return items, queries, exact(items, queries, K)


@pytest.fixture(scope="module")
def lognormal_data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    items, queries = synthetic_embeddings(
        N, dim=D, n_queries=200, intrinsic_dim=8, norm_sigma=0.5, seed=1
    )
    return items, queries, exact(items, queries, K)


# ----------------------------------------------------------------------- config
@pytest.mark.parametrize(
    "config",
    [
        IndexConfig(),
        IndexConfig(kind="ivf_sq8", nlist=64, nprobe=8, refine=True, refine_factor=3),
        IndexConfig(kind="hnsw_sq8", hnsw_m=16, ef_search=64, sq_train_on_all=False),
        IndexConfig(kind="ivf_flat", normalize=False, mips_transform=True, seed=3),
    ],
)
def test_config_round_trips_through_json(config: IndexConfig) -> None:
    again = IndexConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config


@pytest.mark.parametrize(
    ("kwargs", "field_name"),
    [
        ({"kind": "ivf_pq"}, "kind"),
        ({"metric": "l2"}, "metric"),
        ({"nprobe": 0}, "nprobe"),
        ({"nlist": -3}, "nlist"),
        ({"hnsw_m": 1}, "hnsw_m"),
        ({"ef_search": 2.5}, "ef_search"),
        ({"refine_factor": 0}, "refine_factor"),
        ({"normalize": "yes"}, "normalize"),
        ({"mips_transform": True}, "mips_transform"),  # needs normalize=False
        ({"kind": "flat", "refine": True}, "refine"),
    ],
)
def test_config_rejects_bad_values_naming_the_field(kwargs: dict, field_name: str) -> None:
    with pytest.raises(ValueError, match=field_name):
        IndexConfig(**kwargs)


def test_from_dict_rejects_unknown_keys() -> None:
    with pytest.raises(ValueError, match="nprobes"):
        IndexConfig.from_dict({"kind": "flat", "nprobes": 3})


def test_default_nlist_is_capped_by_training_points() -> None:
    assert default_nlist(2000) == 2000 // 39
    assert default_nlist(1_000_000) == 4000
    assert default_nlist(10) == 1


# ----------------------------------------------------------------------- recall
THRESHOLDS = {
    "flat": 1.0,
    "sq8": 0.95,
    "ivf_flat": 0.9,
    "ivf_sq8": 0.9,
    "hnsw_flat": 0.9,
    "hnsw_sq8": 0.9,
}


@pytest.mark.parametrize("kind", INDEX_KINDS)
def test_recall_vs_exact_per_kind(kind: str, unit_data) -> None:
    items, queries, truth = unit_data
    config = IndexConfig(kind=kind, nprobe=16, ef_search=128)
    index = ItemIndex.build(items, np.arange(N), config)
    scores, rows = index.search(queries, K)
    assert rows.shape == scores.shape == (len(queries), K)
    assert rows.dtype == np.int64
    assert recall(rows, truth) >= THRESHOLDS[kind]
    assert np.all(np.diff(scores, axis=1) <= 1e-6)  # best first


def test_flat_scores_are_cosines_and_refine_restores_exact_order(unit_data) -> None:
    items, queries, truth = unit_data
    flat = ItemIndex.build(items * 3.0, np.arange(N), IndexConfig(kind="flat"))
    scores, rows = flat.search(queries * 2.0, K)
    np.testing.assert_array_equal(rows, truth)  # normalised: scaling changes nothing
    expected = np.take_along_axis(queries @ items.T, rows, axis=1)
    np.testing.assert_allclose(scores, expected, atol=1e-5)
    refined = ItemIndex.build(items, np.arange(N), IndexConfig(kind="sq8", refine=True))
    assert recall(refined.search(queries, K)[1], truth) == 1.0


def test_sq8_is_a_quarter_of_float_bytes(unit_data) -> None:
    items = unit_data[0]
    flat = ItemIndex.build(items, np.arange(N), IndexConfig(kind="flat"))
    sq8 = ItemIndex.build(items, np.arange(N), IndexConfig(kind="sq8"))
    assert flat.nbytes() >= items.nbytes
    assert sq8.nbytes() < 0.3 * flat.nbytes()


def test_search_pads_when_k_exceeds_catalogue() -> None:
    items, queries = synthetic_embeddings(20, dim=8, n_queries=3, intrinsic_dim=4, seed=0)
    index = ItemIndex.build(items, np.arange(20), IndexConfig(kind="flat"))
    scores, rows = index.search(queries, 25)
    assert rows.shape == (3, 25)
    assert (rows[:, 20:] == -1).all() and np.isneginf(scores[:, 20:]).all()
    assert sorted(rows[0, :20]) == list(range(20))


# ---------------------------------------------------------------- un-normalised
def test_norm_spread_warns_for_ivf_inner_product(lognormal_data, caplog) -> None:
    items = lognormal_data[0]
    with caplog.at_level(logging.WARNING, logger="student.serving"):
        ItemIndex.build(items, np.arange(N), IndexConfig(kind="ivf_flat", normalize=False))
    assert "norms spread" in caplog.text and "mips_transform" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="student.serving"):
        ItemIndex.build(items, np.arange(N), IndexConfig(kind="ivf_flat"))
    assert "norms spread" not in caplog.text


def test_mips_transform_keeps_recall_and_exact_scores(lognormal_data) -> None:
    items, queries, truth = lognormal_data
    cfg = IndexConfig(kind="sq8", normalize=False, mips_transform=True, refine=True)
    index = ItemIndex.build(items, np.arange(N), cfg)
    scores, rows = index.search(queries * 5.0, K)  # query norm must not change the ranking
    assert recall(rows, truth) >= 0.99
    # scores come back as raw inner products with the (scaled) query
    expected = np.take_along_axis((queries * 5.0) @ items.T, rows, axis=1)
    np.testing.assert_allclose(scores, expected, rtol=1e-3, atol=1e-3)

    # IVF over the transform with a generous probe, and 8-bit codes without refine
    ivf = ItemIndex.build(
        items,
        np.arange(N),
        IndexConfig(kind="ivf_sq8", normalize=False, mips_transform=True, nprobe=32),
    )
    assert recall(ivf.search(queries, K)[1], truth) >= 0.95
    assert ivf.index.d == D + 8  # extra coordinate, padded to a multiple of 8 for SQ8 kernels


def test_unnormalised_flat_is_exact_raw_inner_product(lognormal_data) -> None:
    items, queries, truth = lognormal_data
    index = ItemIndex.build(items, np.arange(N), IndexConfig(kind="flat", normalize=False))
    np.testing.assert_array_equal(index.search(queries, K)[1], truth)


# ------------------------------------------------------------------- save/load
@pytest.mark.parametrize(
    "config",
    [
        IndexConfig(kind="flat"),
        IndexConfig(kind="sq8"),
        IndexConfig(kind="ivf_sq8", nprobe=8),
        IndexConfig(kind="hnsw_sq8", ef_search=48),
        IndexConfig(kind="ivf_sq8", normalize=False, mips_transform=True, refine=True),
    ],
    ids=lambda c: f"{c.kind}{'-mips' if c.mips_transform else ''}",
)
def test_save_load_round_trip_gives_identical_results(config, unit_data, tmp_path) -> None:
    items, queries, _ = unit_data
    ids = np.arange(N) * 7 + 100
    index = ItemIndex.build(items, ids, config)
    scores, rows = index.search(queries, K)
    index.save(tmp_path / "idx")
    loaded = ItemIndex.load(tmp_path / "idx", expected_dim=D, expected_item_ids=ids)
    scores2, rows2 = loaded.search(queries, K)
    np.testing.assert_array_equal(rows, rows2)
    np.testing.assert_array_equal(scores, scores2)
    np.testing.assert_array_equal(loaded.item_ids, ids)
    assert loaded.config == index.config and loaded.nbytes() == index.nbytes()
    meta = json.loads((tmp_path / "idx" / "meta.json").read_text())
    assert meta["dim"] == D and meta["n"] == N
    assert meta["fingerprint"] == embedding_fingerprint(items)
    if config.kind.startswith("ivf"):
        assert meta["config"]["nlist"] == default_nlist(N)  # resolved value is stored


def test_save_replaces_an_index_but_not_other_folders(unit_data, tmp_path) -> None:
    items = unit_data[0]
    a = ItemIndex.build(items, np.arange(N), IndexConfig(kind="flat"))
    b = ItemIndex.build(items[:100], np.arange(100), IndexConfig(kind="sq8"))
    a.save(tmp_path / "idx")
    b.save(tmp_path / "idx")
    assert ItemIndex.load(tmp_path / "idx").n == 100
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx"]  # no temp leftovers
    other = tmp_path / "notes"
    other.mkdir()
    (other / "keep.txt").write_text("x")
    with pytest.raises(ValueError, match="refusing"):
        a.save(other)
    assert (other / "keep.txt").exists()


def test_load_refuses_mismatched_dim_ids_or_fingerprint(unit_data, tmp_path) -> None:
    items = unit_data[0]
    ids = np.arange(N) + 1
    ItemIndex.build(items, ids, IndexConfig(kind="sq8")).save(tmp_path / "idx")
    with pytest.raises(ValueError, match=r"dimension 32 .* expected dimension 64"):
        ItemIndex.load(tmp_path / "idx", expected_dim=64)
    with pytest.raises(ValueError, match=rf"{N} items, expected {N - 1} items"):
        ItemIndex.load(tmp_path / "idx", expected_item_ids=ids[:-1])
    swapped = ids.copy()
    swapped[[5, 6]] = swapped[[6, 5]]
    with pytest.raises(ValueError, match=r"row 5: index has 6, expected 7"):
        ItemIndex.load(tmp_path / "idx", expected_item_ids=swapped)
    with pytest.raises(ValueError, match="fingerprint"):
        ItemIndex.load(tmp_path / "idx", expected_fingerprint=embedding_fingerprint(items + 1))
    with pytest.raises(FileNotFoundError, match="meta.json"):
        ItemIndex.load(tmp_path / "missing")


# ---------------------------------------------------------------- bad inputs
def test_bad_inputs_are_rejected_with_the_position(unit_data) -> None:
    items, queries, _ = unit_data
    bad = items.copy()
    bad[17, 3] = np.nan
    with pytest.raises(ValueError, match="row 17"):
        ItemIndex.build(bad, np.arange(N))
    zero = items.copy()
    zero[4] = 0.0
    with pytest.raises(ValueError, match="row 4 has zero norm"):
        ItemIndex.build(zero, np.arange(N))
    with pytest.raises(ValueError, match="length 2000"):
        ItemIndex.build(items, np.arange(N - 1))
    dup = np.arange(N)
    dup[9] = 3
    with pytest.raises(ValueError, match="id 3 appears 2 times"):
        ItemIndex.build(items, dup)
    index = ItemIndex.build(items, np.arange(N))
    with pytest.raises(ValueError, match="dimension 16 does not match the index dim 32"):
        index.search(queries[:, :16], K)
    with pytest.raises(ValueError, match="k is 0; expected an integer >= 1"):
        index.search(queries, 0)


# --------------------------------------------------------------------- retrieve
def test_retrieve_excludes_seen_and_returns_original_ids(unit_data) -> None:
    items, queries, _ = unit_data
    ids = np.array([f"item{i}" for i in range(N)])
    index = ItemIndex.build(items, ids, IndexConfig(kind="flat"))
    rng = np.random.default_rng(0)
    full = exact(items, queries, N)
    # seen: some of each query's own top items (so filtering matters) plus random rows
    seen = [
        set(full[i, : rng.integers(0, 40)].tolist()) | set(rng.integers(0, N, 30).tolist())
        for i in range(len(queries))
    ]
    got = retrieve(queries, K, seen, index)
    assert got.shape == (len(queries), K) and got.dtype.kind == "U"
    for i in range(len(queries)):
        expected = [r for r in full[i] if r not in seen[i]][:K]
        assert list(got[i]) == [f"item{r}" for r in expected]
    csr = sp.csr_matrix(
        (
            np.ones(sum(map(len, seen))),
            (
                np.repeat(np.arange(len(seen)), [len(s) for s in seen]),
                np.concatenate([np.fromiter(s, int) for s in seen]),
            ),
        ),
        shape=(len(seen), N),
    )
    np.testing.assert_array_equal(retrieve(queries, K, csr, index), got)
    no_seen = retrieve(queries, K, None, index)
    np.testing.assert_array_equal(no_seen, ids[full[:, :K]])


def test_retrieve_with_approximate_index_never_returns_seen(unit_data) -> None:
    items, queries, _ = unit_data
    ids = np.arange(N) + 10_000
    index = ItemIndex.build(items, ids, IndexConfig(kind="hnsw_sq8", ef_search=16))
    top = index.search(queries, 50)[1]
    seen = [top[i, :50] for i in range(len(queries))]  # hide everything it found first
    got = retrieve(queries, K, seen, index)
    assert got.shape == (len(queries), K)
    for i in range(len(queries)):
        assert len(set(got[i])) == K
        assert not set(got[i]) & set(ids[seen[i]])


def test_retrieve_errors(unit_data) -> None:
    items, queries, _ = unit_data
    small = ItemIndex.build(items[:30], np.arange(30), IndexConfig(kind="flat"))
    with pytest.raises(ValueError, match=r"query 1 has 25 seen items; .* fewer than k=10"):
        retrieve(queries[:2], K, [[], list(range(25))], small)
    with pytest.raises(ValueError, match=r"item row 30 is outside"):
        retrieve(queries[:1], K, [[30]], small)
    with pytest.raises(ValueError, match="one per query"):
        retrieve(queries[:2], K, [[1]], small)
    # IVF probing one cell cannot reach k items: a clear error, not a short row
    ivf = ItemIndex.build(items, np.arange(N), IndexConfig(kind="ivf_flat", nprobe=1))
    invlists = ivf.index.invlists
    assert max(invlists.list_size(i) for i in range(invlists.nlist)) < 300
    with pytest.raises(RuntimeError, match="nprobe"):
        retrieve(queries[:3], 300, None, ivf)


def test_retriever_encodes_users_and_never_returns_seen_items():
    import scipy.sparse as sp
    import torch

    from student.model import TwoTower, TwoTowerConfig
    from student.serving import Retriever

    torch.manual_seed(0)
    n_users, n_items = 6, 40
    model = TwoTower(
        TwoTowerConfig(
            n_users=n_users,
            n_items=n_items,
            id_dim=8,
            history_len=3,
            user_hidden=(8,),
            item_hidden=(8,),
            out_dim=8,
        )
    ).eval()
    with torch.no_grad():
        items = model.encode_items(torch.arange(n_items)).numpy()
    ids = np.array([f"m{j}" for j in range(n_items)])
    index = ItemIndex.build(items, ids, IndexConfig(kind="flat"))
    hist = np.full((n_users, 3), n_items)
    hist[:, 0] = np.arange(n_users)
    seen = sp.csr_matrix(
        (np.ones(n_users), (np.arange(n_users), np.arange(n_users))), shape=(n_users, n_items)
    )
    out = Retriever(model, index, hist, seen).retrieve([0, 3, 5], k=10)
    assert out.shape == (3, 10)
    for u, row in zip([0, 3, 5], out):
        assert f"m{u}" not in row and len(set(row)) == 10
    with torch.no_grad():
        q = model.encode_users(torch.tensor([3]), torch.as_tensor(hist[[3]])).numpy()
    scores = q @ items.T
    scores[0, 3] = -np.inf
    assert list(out[1]) == [f"m{j}" for j in np.argsort(-scores[0])[:10]]
    with pytest.raises(ValueError, match="item columns"):
        Retriever(model, index, hist, seen[:, :10])


def _tiny_retriever(popularity=None):
    import torch

    from student.model import TwoTower, TwoTowerConfig
    from student.serving import Retriever

    torch.manual_seed(0)
    n_users, n_items = 6, 40
    model = TwoTower(
        TwoTowerConfig(
            n_users=n_users, n_items=n_items, id_dim=8, history_len=3, user_hidden=(8,),
            item_hidden=(8,), out_dim=8, user_id_dropout=0.5,
        )
    ).eval()  # fmt: skip
    with torch.no_grad():
        items = model.encode_items(torch.arange(n_items)).numpy()
    index = ItemIndex.build(items, np.array([f"m{j}" for j in range(n_items)]), IndexConfig())
    hist = np.full((n_users, 3), n_items)
    hist[:, 0] = np.arange(n_users)
    seen = sp.csr_matrix(
        (np.ones(n_users), (np.arange(n_users), np.arange(n_users))), shape=(n_users, n_items)
    )
    return Retriever(model, index, hist, seen, popularity=popularity), model, items


def test_retriever_new_users_from_history_and_scores():
    import torch

    r, model, items = _tiny_retriever()
    hists = [[4, 9, 11, 30], [7]]
    ids, scores = r.retrieve_histories(hists, 5, exclude=[[0], []], return_scores=True)
    for h, ex, row_ids, row_scores in zip(hists, ([0], []), ids, scores):
        pad = np.full((1, 3), 40)
        pad[0, : min(3, len(h))] = h[:3]  # the first history_len items enter the tower
        with torch.no_grad():
            q = model.encode_users(None, torch.as_tensor(pad)).numpy()[0]
        s = items @ q
        s[h + ex] = -np.inf  # the history itself is seen; exclude drops more
        order = np.argsort(-s, kind="stable")[:5]
        assert list(row_ids) == [f"m{j}" for j in order]
        np.testing.assert_allclose(row_scores, s[order], rtol=1e-5)
    kept = r.retrieve_histories([[4]], 40, exclude_seen=False)
    assert "m4" in kept[0]


def test_retriever_run_mixes_known_new_and_popularity_with_their_own_k():
    from student.serving import Query

    pop = np.arange(40, dtype=float)[::-1]  # item 0 most popular
    r, _, _ = _tiny_retriever(popularity=pop)
    res = r.run(
        [
            Query(user=2, k=3),
            Query(history=[5, 6], k=7, exclude=[1]),
            Query(history=[], k=4, exclude=[0, 2]),
        ]
    )
    assert [len(x.ids) for x in res] == [3, 7, 4]
    assert [x.source for x in res] == ["model", "model", "popularity"]
    np.testing.assert_array_equal(res[0].ids, r.retrieve([2], 3)[0])
    np.testing.assert_array_equal(res[1].ids, r.retrieve_histories([[5, 6]], 7, exclude=[[1]])[0])
    assert list(res[2].ids) == ["m1", "m3", "m4", "m5"] and list(res[2].scores) == [38, 36, 35, 34]
    with pytest.raises(ValueError, match="empty history and no popularity"):
        _tiny_retriever()[0].run([Query(history=[], k=2)])
    with pytest.raises(ValueError, match=r"history: expected item rows in \[0, 39\]"):
        r.run([Query(history=[40])])
    with pytest.raises(ValueError, match="user=9"):
        r.run([Query(user=9)])
