"""The index-kind registry (``student.serving.kinds``): it names exactly the index kinds, and
every kind builds a searchable index on a tiny random catalogue that survives save/load with
its query-time parameters."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from student.serving import INDEX_KINDS, IndexConfig, ItemIndex, factory_string
from student.serving.kinds import INDEX_KIND_SPECS

N, D, K = 400, 12, 5  # D = 12: SQ8 kinds pad to 16

# how each searchable parameter reads back from the faiss index
READ_BACK = {
    "nprobe": lambda index: faiss.extract_index_ivf(index).nprobe,
    "ef_search": lambda index: index.hnsw.efSearch,
}


@pytest.fixture(scope="module")
def catalogue() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.normal(size=(N, D)).astype(np.float32), rng.normal(size=(20, D)).astype(np.float32)


def test_registry_names_exactly_the_index_kinds() -> None:
    assert tuple(INDEX_KIND_SPECS) == INDEX_KINDS
    assert [k for k in INDEX_KINDS if INDEX_KIND_SPECS[k].exact] == ["flat"]
    assert all(set(s.structure.search_params) <= set(READ_BACK) for s in INDEX_KIND_SPECS.values())


@pytest.mark.parametrize("kind", INDEX_KINDS)
def test_every_kind_builds_searches_and_round_trips(kind: str, catalogue, tmp_path) -> None:
    items, queries = catalogue
    ids = np.array([f"item{j}" for j in range(N)])
    spec = INDEX_KIND_SPECS[kind]
    index = ItemIndex.build(items, ids, IndexConfig(kind=kind, nprobe=3, ef_search=24))
    assert index.index.d == spec.index_dim(D) and index.meta()["factory"] == factory_string(
        index.config, index.config.nlist
    )
    scores, rows = index.search(queries, K)
    assert rows.shape == scores.shape == (len(queries), K)
    assert (rows >= 0).all() and np.all(np.diff(scores, axis=1) <= 1e-6)
    unit = items / np.linalg.norm(items, axis=1, keepdims=True)
    truth = np.argsort(-(queries @ unit.T), axis=1, kind="stable")[:, :K]
    hits = np.mean([len(set(a) & set(t)) / K for a, t in zip(rows, truth)])
    assert hits >= (1.0 if spec.exact else 0.5)

    index.save(tmp_path / "idx")
    loaded = ItemIndex.load(tmp_path / "idx", expected_dim=D, expected_item_ids=ids)
    scores2, rows2 = loaded.search(queries, K)
    np.testing.assert_array_equal(rows, rows2)
    np.testing.assert_array_equal(scores, scores2)
    assert loaded.config == index.config
    want = {"nprobe": 3, "ef_search": 24}
    for name in spec.structure.search_params:
        assert READ_BACK[name](loaded.index) == want[name]
    loaded.set_search_params(nprobe=2, ef_search=8)
    for name in spec.structure.search_params:
        assert READ_BACK[name](loaded.index) == {"nprobe": 2, "ef_search": 8}[name]


@pytest.mark.parametrize("ef_construction", [16, 200])
def test_hnsw_graph_is_built_with_the_configured_ef_construction(
    ef_construction, catalogue, tmp_path
) -> None:
    # the setting must reach faiss before the vectors are added (faiss's own default is 40),
    # and survive a save and load
    items = catalogue[0]
    cfg = IndexConfig(kind="hnsw_sq8", ef_construction=ef_construction)
    index = ItemIndex.build(items, np.arange(N), cfg)
    assert index.index.hnsw.efConstruction == ef_construction
    index.save(tmp_path / "idx")
    loaded = ItemIndex.load(tmp_path / "idx", expected_dim=D)
    assert loaded.index.hnsw.efConstruction == ef_construction
