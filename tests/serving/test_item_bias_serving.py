"""A served student with an item bias: the engine's index holds the bias column, its answers
are the model's ranking, and a stored index without the column is refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipelines.core.config import make_config
from pipelines.serving.artifacts import ServeError, load_engine, resolve_run
from student.serving import IndexConfig, ItemIndex

DATASET = "synthetic:users=60,items=90,per_user=12,seed=5"


@pytest.fixture(scope="module")
def bias_run(tmp_path_factory):
    from pipelines.compression.compress import CompressConfig
    from pipelines.compression.compress import run as compress
    from pipelines.training.train_student import TrainStudentConfig
    from pipelines.training.train_student import run as train

    out = tmp_path_factory.mktemp("bias_run")
    train(make_config(TrainStudentConfig, dataset=DATASET, no_teacher=True, epochs=2,
                      user_hidden=(16,), item_hidden=(16,), id_dim=8, out_dim=8, history_len=10,
                      n_negatives=16, threads=1, item_bias=True, prior_history=3,
                      out=str(out / "student_distilled")))  # fmt: skip
    compress(CompressConfig(model=str(out / "student_distilled" / "model"), dataset=DATASET,
                            out=str(out / "compressed"), finetune_epochs=0, magnitude_sparsity=0,
                            int8="all", threads=1))  # fmt: skip
    return out


def test_the_engine_answers_with_the_models_ranking(bias_run):
    e = load_engine(resolve_run(bias_run))
    assert e.model.config.item_bias and e.index.config.bias
    assert e.index.dim == e.model.config.out_dim + 1
    users = np.array([0, 7, 33])
    ids, scores = e.retriever.retrieve(users, 8, return_scores=True)
    hist = torch.as_tensor(e.retriever.histories[users])
    with torch.no_grad():
        s = e.model.score(e.model.encode_users(torch.as_tensor(users), hist),
                          e.model.encode_items(torch.arange(e.n_items))).numpy()  # fmt: skip
    s[e.retriever.seen[users].toarray() > 0] = -np.inf
    want = np.argsort(-s, axis=1, kind="stable")[:, :8]
    assert ids.tolist() == e.item_ids[want].tolist()
    np.testing.assert_allclose(scores, np.take_along_axis(s, want, 1), rtol=1e-5, atol=1e-4)


def test_a_stored_index_without_the_bias_column_is_refused(bias_run, tmp_path):
    e = load_engine(resolve_run(bias_run))
    plain = ItemIndex.build(e.item_emb[:, :-1], e.item_ids, IndexConfig())
    plain.save(tmp_path / "index")
    with pytest.raises(ServeError, match="dimension"):
        load_engine(resolve_run(bias_run, index=tmp_path / "index"))


def test_similar_items_rank_by_the_item_vectors_not_their_bias(bias_run):
    from fastapi.testclient import TestClient

    from pipelines.serving.app import create_app
    from pipelines.serving.config import ServeConfig

    e = load_engine(resolve_run(bias_run))
    vec = e.item_emb[:, :-1]
    sims = vec @ vec[0]
    sims[0] = -np.inf
    with TestClient(create_app(ServeConfig(run=str(bias_run))), client=("127.0.0.1", 40000)) as c:
        r = c.get(f"/items/{e.item_ids[0]}/similar", params={"k": 5})
    assert r.status_code == 200, r.text
    assert [it["id"] for it in r.json()["items"]] == [
        str(e.item_ids[j]) for j in np.argsort(-sims)[:5]
    ]
