"""The student's item bias (TwoTowerConfig.item_bias): the score, save/load, compression, and
the index's extra dimension agreeing with the model's ranking."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from student.compress import load_quantized, quantize_int8, save_quantized, structured_prune
from student.model import TwoTower, TwoTowerConfig
from student.scoring import score_fn
from student.serving import IndexConfig, ItemIndex, Retriever
from student.serving.integrity import check_vectors

N_USERS, N_ITEMS, L = 12, 40, 6


def tiny(normalize: bool = True, n_users: int = N_USERS, n_items: int = N_ITEMS) -> TwoTower:
    torch.manual_seed(0)
    cfg = TwoTowerConfig(n_users=n_users, n_items=n_items, id_dim=8, out_dim=8, history_len=L,
                         user_hidden=(16,), item_hidden=(16,), normalize=normalize,
                         item_bias=True)  # fmt: skip
    model = TwoTower(cfg).eval()
    with torch.no_grad():  # biases large enough to move the ranking away from the dot product
        model.item_bias.copy_(3.0 * torch.randn(n_items))
    model.known_bias_weight.fill_(0.5)  # known users weigh the bias by half, new users fully
    return model


def hist() -> np.ndarray:
    rng = np.random.default_rng(0)
    h = np.full((N_USERS, L), N_ITEMS, dtype=np.int64)
    for u in range(N_USERS):
        h[u, :4] = rng.choice(N_ITEMS, 4, replace=False)
    return h


def test_config_and_item_vectors_carry_the_bias():
    model = tiny()
    assert model.config.item_dim == 9
    items = model.encode_items(torch.arange(N_ITEMS))
    assert items.shape == (N_ITEMS, 9)
    assert torch.equal(items[:, -1], model.item_bias.detach())
    with pytest.raises(ValueError, match="item_bias"):
        TwoTowerConfig(n_users=2, n_items=3, item_bias="yes")
    with pytest.raises(ValueError, match="expected \\[N, 9\\]"):
        model.score(torch.zeros(1, 8), items[:, :8])


def test_a_zero_user_vector_ranks_by_bias():
    model = tiny()
    with torch.no_grad():
        scores = model.score(torch.zeros(3, 8), model.encode_items(torch.arange(N_ITEMS)))
    want = np.argsort(-model.item_bias.detach().numpy(), kind="stable")
    for row in scores.numpy():
        assert list(np.argsort(-row, kind="stable")) == list(want)


def test_known_users_weigh_the_bias_new_users_take_it_whole():
    model = tiny()
    items = model.encode_items(torch.arange(N_ITEMS))
    u = model.encode_users(torch.tensor([0, 1]), torch.as_tensor(hist()[:2]))
    dot = model.score(u, items) - 0.5 * items[:, -1]
    assert torch.allclose(model.score(u, items, new_users=True), dot + items[:, -1], atol=1e-5)
    assert torch.allclose(model.index_queries(u, new_users=True) @ items.T,
                          model.score(u, items, new_users=True), atol=1e-5)  # fmt: skip
    assert torch.allclose(model.index_queries(u) @ items.T, model.score(u, items), atol=1e-5)


def test_the_benchmarks_new_user_scorer_takes_the_bias_whole():
    model = tiny()
    h = torch.as_tensor(hist())
    users = np.arange(4)
    bias = model.item_bias.detach().numpy()
    new = score_fn(model, h, new_users=True)(users)
    with torch.no_grad():
        dot = model.score(
            model.encode_users(None, h[:4]), model.encode_items(torch.arange(N_ITEMS))
        )
    np.testing.assert_allclose(new, dot.numpy() + 0.5 * bias, rtol=1e-5, atol=1e-4)


def test_per_user_candidates_get_the_bias_too():
    model = tiny()
    u = model.encode_users(torch.tensor([0, 1]), torch.as_tensor(hist()[:2]))
    items = model.encode_items(torch.arange(N_ITEMS))
    per_user = model.score(u, items[None].expand(2, -1, -1))
    assert torch.allclose(per_user, model.score(u, items), atol=1e-5)


def test_save_load_round_trip(tmp_path):
    model = tiny()
    model.save_pretrained(tmp_path / "m")
    back = TwoTower.from_pretrained(tmp_path / "m")
    assert back.config.item_bias
    assert torch.equal(back.item_bias, model.item_bias)
    assert float(back.known_bias_weight) == 0.5
    ids = torch.arange(N_ITEMS)
    assert torch.equal(back.encode_items(ids), model.encode_items(ids))


def _model_topk(model: TwoTower, users: np.ndarray, seen: sp.csr_matrix, k: int, new: bool):
    h = torch.as_tensor(hist())
    s = score_fn(model, h, new_users=new)(users).copy()
    s[seen[users].toarray() > 0] = -np.inf
    return np.argsort(-s, axis=1, kind="stable")[:, :k], np.sort(s, axis=1)[:, ::-1][:, :k]


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("kind", ["flat", "hnsw_flat"])
def test_index_top_k_equals_model_top_k(normalize, kind):
    model = tiny(normalize)
    with torch.no_grad():
        items = model.encode_items(torch.arange(N_ITEMS)).numpy()
    cfg = IndexConfig(kind=kind, normalize=normalize, bias=True)
    index = ItemIndex.build(items, np.arange(N_ITEMS), cfg)
    check_vectors(index, items)  # the bias column is stored as the model gave it
    h = hist()
    seen = sp.csr_matrix((np.ones(h.shape[0] * 4), (np.repeat(np.arange(N_USERS), 4),
                          h[:, :4].ravel())), shape=(N_USERS, N_ITEMS))  # fmt: skip
    retriever = Retriever(model, index, h, seen)
    users = np.arange(N_USERS)
    got, got_scores = retriever.retrieve(users, 10, return_scores=True)
    want, want_scores = _model_topk(model, users, seen, 10, new=False)
    assert np.array_equal(got, want)
    np.testing.assert_allclose(got_scores, want_scores, rtol=1e-5, atol=1e-4)
    new_got = retriever.retrieve_histories([list(r[:4]) for r in h], 10)
    assert np.array_equal(new_got, _model_topk(model, users, seen, 10, new=True)[0])
    # the bias matters here: without it the index would rank otherwise
    plain = ItemIndex.build(items[:, :-1], np.arange(N_ITEMS), IndexConfig(normalize=normalize))
    q = model.encode_users(torch.as_tensor(users), torch.as_tensor(h)).detach().numpy()
    assert not np.array_equal(plain.search(q, 10)[1], index.search(
        model.index_queries(torch.as_tensor(q)).detach().numpy(), 10)[1])  # fmt: skip


def test_a_normalised_index_keeps_the_bias_column():
    x = np.array([[3.0, 4.0, 7.0], [0.0, 2.0, -1.0]], np.float32)
    index = ItemIndex.build(x, np.arange(2), IndexConfig(normalize=True, bias=True))
    stored = np.stack([index.index.reconstruct(i) for i in range(2)])
    np.testing.assert_allclose(stored, [[0.6, 0.8, 7.0], [0.0, 1.0, -1.0]], rtol=1e-6)
    scores, rows = index.search(np.array([[2.0, 0.0, 1.0]], np.float32), 2)  # taken as given
    np.testing.assert_allclose(scores, [[8.2, -1.0]], rtol=1e-6)
    assert list(rows[0]) == [0, 1]


def test_compression_keeps_the_bias_in_fp32(tmp_path):
    model = tiny()
    q, record = quantize_int8(model)
    assert q.item_bias.dtype == torch.float32 and torch.equal(q.item_bias, model.item_bias)
    assert "item_bias" in record["fp32_parameters"]
    save_quantized(q, tmp_path / "q")
    back = load_quantized(tmp_path / "q")
    assert torch.equal(back.item_bias, model.item_bias)
    assert float(back.known_bias_weight) == 0.5
    assert back.encode_items(torch.arange(N_ITEMS)).shape == (N_ITEMS, 9)
    pruned, _ = structured_prune(model, keep_ratio=0.5)
    assert torch.equal(pruned.item_bias, model.item_bias)


def test_the_benchmarks_index_part_queries_the_bias_column(tmp_path):
    from pipelines.core.config import make_config
    from pipelines.core.metrics import evaluate
    from pipelines.data import histories, load_dataset, make_split
    from pipelines.evaluation.benchmark import BenchmarkConfig, bench_indexes
    from pipelines.evaluation.segments import test_segment

    data = load_dataset("synthetic:users=30,items=40,per_user=8,seed=2")
    split = make_split(data, "random", 0)
    model = tiny(n_users=data.n_users, n_items=data.n_items)
    seg = test_segment(split, 0, 0)
    c = make_config(BenchmarkConfig, indexes=("flat",), n_single=2, out=str(tmp_path))
    entry = bench_indexes(model, split, data, seg, c)["flat"]
    assert entry["recall@10_vs_exact"] == 1.0 and entry["config"]["bias"] is True
    hist = torch.as_tensor(histories(split.known_before("test"), data.n_users, L, data.n_items))
    want = evaluate(score_fn(model, hist), seg.truth, seg.exclude, users=seg.users, ks=(10,))
    assert entry["ndcg@10"] == pytest.approx(want["ndcg@10"], abs=1e-6)
