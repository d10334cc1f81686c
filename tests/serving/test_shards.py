"""The sharded item index (``IndexConfig.shards``): the same answers as one index (flat:
exactly), IVF shards that share one trained quantizer, one file and sha256 a shard, a build
that reads the encoder in bounded chunks one shard at a time, and the server loading it."""

from __future__ import annotations

import json
import shutil

import faiss
import numpy as np
import pytest

from pipelines.evaluation.index_eval import exact_topk, recall_at_k
from pipelines.evaluation.index_scale import synthetic_embeddings
from pipelines.serving.artifacts import load_engine, resolve_run
from student.serving import IndexConfig, ItemIndex, Retriever, embedding_fingerprint
from student.serving.index import META_FILE
from student.serving.integrity import check_vectors
from student.serving.shards import ShardBuilder, item_tower_encoder, parts_of, shard_bounds


def _emb(n=2000, d=16, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)


def test_sharded_flat_returns_exactly_the_unsharded_ids_and_scores():
    x, q = _emb(), _emb(50, seed=1)
    one = ItemIndex.build(x, np.arange(len(x)), IndexConfig(kind="flat"))
    three = ItemIndex.build(x, np.arange(len(x)), IndexConfig(kind="flat", shards=3))
    assert isinstance(three.index, faiss.IndexShards) and len(parts_of(three.index)) == 3
    for k in (1, 10, 700, len(x) + 5):  # k above a shard's size, and above N (padding)
        s1, r1 = one.search(q, k)
        s3, r3 = three.search(q, k)
        np.testing.assert_array_equal(r3, r1)
        np.testing.assert_array_equal(s3, s1)
    assert three.fingerprint == one.fingerprint == embedding_fingerprint(x)


@pytest.mark.parametrize("kind", ["ivf_flat", "ivf_sq8"])
def test_sharded_ivf_shares_one_quantizer_and_keeps_recall(kind):
    x, q = synthetic_embeddings(4000, dim=16, n_queries=100, intrinsic_dim=8, n_clusters=64)
    cfg = IndexConfig(kind=kind, nprobe=16)
    one = ItemIndex.build(x, np.arange(len(x)), cfg)
    four = ItemIndex.build(x, np.arange(len(x)), IndexConfig(**{**cfg.to_dict(), "shards": 4}))
    _, exact = exact_topk(x, q, 10)
    r1 = recall_at_k(one.search(q, 10)[1], exact)
    r4 = recall_at_k(four.search(q, 10)[1], exact)
    assert r4 >= 0.9 and abs(r4 - r1) <= 0.05, (r1, r4)
    ivfs = [faiss.extract_index_ivf(p) for p in parts_of(four.index)]
    cents = [ivf.quantizer.reconstruct_n(0, ivf.nlist) for ivf in ivfs]
    assert all(np.array_equal(c, cents[0]) for c in cents)  # trained once, copied to every shard
    assert sum(ivf.ntotal for ivf in ivfs) == len(x)
    # the coarse cells are probed once for all shards (IndexShardsIVF): the same answers as
    # each shard probing its own copy of the quantizer
    assert isinstance(four.index, faiss.IndexShardsIVF)
    each = faiss.IndexShards(four.index.d, False, True)
    for part in parts_of(four.index):
        each.add_shard(part)
    q_in = four.prepare_queries(q)
    for got, want in zip(four.index.search(q_in, 10), each.search(q_in, 10), strict=True):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("mmap", [False, True])
def test_save_load_round_trip_of_a_sharded_index(tmp_path, mmap):
    x, q = _emb(), _emb(20, seed=1)
    ids = np.array([f"i{j}" for j in range(len(x))])
    built = ItemIndex.build(x, ids, IndexConfig(kind="ivf_sq8", shards=3, nprobe=8))
    built.save(tmp_path / "idx")
    meta = json.loads((tmp_path / "idx" / META_FILE).read_text())
    files = meta["shard_files"]
    assert [(f["start"], f["stop"]) for f in files] == shard_bounds(len(x), 3)
    assert all((tmp_path / "idx" / f["file"]).is_file() for f in files)
    assert "index_sha256" not in meta and not (tmp_path / "idx" / "index.faiss").exists()
    loaded = ItemIndex.load(tmp_path / "idx", expected_dim=16, expected_item_ids=ids, mmap=mmap)
    assert loaded.config == built.config and loaded.sha256 == built.sha256
    np.testing.assert_array_equal(loaded.search(q, 10)[1], built.search(q, 10)[1])
    loaded.set_search_params(nprobe=1)  # reaches every shard
    built.set_search_params(nprobe=1)
    np.testing.assert_array_equal(loaded.search(q, 10)[1], built.search(q, 10)[1])
    check_vectors(loaded, x)  # rows reconstructed shard by shard
    with pytest.raises(ValueError, match="differ from the item tower's output"):
        check_vectors(loaded, _emb(seed=5))


def test_a_tampered_shard_file_is_refused_naming_it(tmp_path):
    x = _emb()
    ItemIndex.build(x, np.arange(len(x)), IndexConfig(kind="flat", shards=4)).save(tmp_path / "i")
    bad = (
        tmp_path
        / "i"
        / json.loads((tmp_path / "i" / META_FILE).read_text())["shard_files"][2]["file"]
    )
    bad.write_bytes(bad.read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(ValueError, match="sha256 differs") as err:
        ItemIndex.load(tmp_path / "i")
    assert str(bad) in str(err.value) and "\n" not in str(err.value)
    bad.unlink()
    with pytest.raises(FileNotFoundError, match=str(bad)):
        ItemIndex.load(tmp_path / "i")
    meta = json.loads((tmp_path / "i" / META_FILE).read_text())
    meta["shard_files"][0]["file"] = "../elsewhere.faiss"  # a meta.json never points outside
    (tmp_path / "i" / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"shard_files\[0\] does not name shard_00000.faiss"):
        ItemIndex.load(tmp_path / "i")


def test_more_shards_than_items_is_refused_in_one_line():
    x = _emb(5)
    with pytest.raises(ValueError) as err:
        ItemIndex.build(x, np.arange(5), IndexConfig(kind="flat", shards=6))
    msg = str(err.value)
    assert msg == "IndexConfig.shards=6 exceeds the number of items N=5; expected 1 <= shards <= 5"
    with pytest.raises(ValueError, match="IndexConfig.shards is 0; expected an integer >= 1"):
        IndexConfig(shards=0)


def test_the_build_reads_the_encoder_in_bounded_chunks_one_shard_at_a_time():
    x = _emb(1000)
    calls: list[np.ndarray] = []

    def encode(rows):
        calls.append(np.asarray(rows).copy())
        return x[rows]

    cfg = IndexConfig(kind="ivf_sq8", shards=4, train_sample=300, nlist=5)
    b = ShardBuilder(encode, len(x), cfg, chunk=64)
    assert max(len(c) for c in calls) <= 64
    trained = sum(len(c) for c in calls)  # a probe for the dimension, then the sample
    assert trained <= 64 + 300
    calls.clear()
    for start, stop, index in b.shards():  # between two shards only that shard was encoded
        rows = np.concatenate(calls)
        assert rows.min() == start and rows.max() == stop - 1 and len(rows) == stop - start
        assert max(len(c) for c in calls) <= 64 and index.ntotal == stop - start
        calls.clear()
    assert b.fingerprint == embedding_fingerprint(x)


def test_from_encoder_into_a_folder_loads_memory_mapped_and_equal(tmp_path):
    x, q = _emb(), _emb(20, seed=1)
    cfg = IndexConfig(kind="flat", shards=3)
    on_disk = ItemIndex.from_encoder(lambda r: x[r], np.arange(len(x)), cfg,
                                     directory=tmp_path / "idx", chunk=128)  # fmt: skip
    in_memory = ItemIndex.build(x, np.arange(len(x)), cfg)
    assert on_disk.sha256 == in_memory.sha256  # the same shard files, byte for byte
    np.testing.assert_array_equal(on_disk.search(q, 10)[1], in_memory.search(q, 10)[1])


def test_the_server_loads_a_sharded_index_built_from_the_item_tower(tmp_path, run_dir):
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    plain = load_engine(resolve_run(run))
    m = plain.model.config
    cfg = IndexConfig(kind="flat", shards=3, normalize=m.normalize, bias=m.item_bias)
    ItemIndex.from_encoder(item_tower_encoder(plain.model), plain.item_ids, cfg,
                           directory=run / "index", chunk=32)  # fmt: skip
    e = load_engine(resolve_run(run))
    assert e.index.config.shards == 3 and isinstance(e.index.index, faiss.IndexShards)
    assert e.index_fingerprint == e.index.sha256[:16]
    users = [0, 5, 11]
    want = plain.retriever.retrieve(users, 10)
    assert isinstance(e.retriever, Retriever)
    np.testing.assert_array_equal(e.retriever.retrieve(users, 10), want)
