from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from llm_teacher.embedding import EmbeddingTeacher
from pipelines.data import load_dataset, make_split
from pipelines.labels.config import SLEEP_ENV, GenerateLabelsConfig
from pipelines.labels.generate_labels import run
from pipelines.labels.schema import COLUMNS, META_FILE, LabelError, columns, load_labels

DATASET = "synthetic:users=40,items=60,per_user=12,seed=2"


def config(tmp: Path, model: Path, **kw) -> GenerateLabelsConfig:
    base = dict(
        dataset=DATASET,
        model=str(model),
        n_negatives=8,
        max_positives=5,
        eval_users=20,
        eval_negatives=10,
        shard_users=10,
        threads=1,
        max_seq_length=32,
        out=str(tmp / "labels"),
    )
    base.update(kw)
    return GenerateLabelsConfig(**base)


@pytest.fixture(scope="module")
def labels(tmp_path_factory, tiny_st_dir):
    tmp = tmp_path_factory.mktemp("labels")
    cfg = config(tmp, tiny_st_dir)
    meta = run(cfg)
    return cfg, meta


def test_embedding_labels_follow_the_schema(labels):
    cfg, meta = labels
    data = load_dataset(DATASET)
    split = make_split(data, "random", 0)
    ds, meta2 = load_labels(
        cfg.out, dataset_fingerprint=data.fingerprint(), split_fingerprint=split.fingerprint()
    )
    assert list(ds.features) == list(COLUMNS)
    t = columns(ds)
    assert set(t["user"]) == set(range(data.n_users))
    # sorted by user then rank; ranks follow scores within a user
    order = np.lexsort((t["rank"], t["user"]))
    assert (order == np.arange(len(order))).all()
    for u in range(3):
        s = t["score"][t["user"] == u]
        assert (np.diff(s) <= 0).all()
    assert np.allclose(t["prob"], 1 / (1 + np.exp(-t["score"].astype(float))), atol=1e-6)
    train = set(zip(split.train.user, split.train.item))
    assert all(((u, i) in train) == o for u, i, o in zip(t["user"], t["item"], t["observed"]))
    # negatives exclude only train items: validation and test items may be candidates
    assert meta2["teacher"]["parts"] == ["text", "ease", "popularity"]
    assert set(meta2["teacher"]["mix"]["weights"]) == {"text", "ease", "popularity"}
    q = meta2["teacher_quality"]["parts"]
    assert 0.0 <= q["mix"]["auc"] <= 1.0 and "text" in q
    emb = np.load(Path(cfg.out) / meta2["item_embeddings"])
    assert emb.shape[0] == data.n_items


def test_rerun_reuses_and_other_teacher_is_refused(labels, tiny_st_dir):
    cfg, meta = labels
    again = run(cfg)
    assert again.get("reused") and again["job_hash"] == meta["job_hash"]
    other = GenerateLabelsConfig(**{**cfg.__dict__, "collab": "none"})
    with pytest.raises(LabelError, match="another teacher or config"):
        run(other)
    assert (Path(cfg.out) / META_FILE).exists()  # nothing was lost


def test_labels_for_other_data_are_refused(labels):
    cfg, _ = labels
    with pytest.raises(LabelError, match="dataset fingerprint"):
        load_labels(cfg.out, dataset_fingerprint="0" * 16)
    with pytest.raises(LabelError, match="split fingerprint"):
        load_labels(cfg.out, split_fingerprint="f" * 16)
    with pytest.raises(LabelError, match="not a soft-label dataset"):
        load_labels(Path(cfg.out).parent)


def test_causal_lm_teacher_with_shared_prefix(tmp_path, tiny_llama_dir):
    cfg = config(
        tmp_path,
        tiny_llama_dir,
        teacher="causal_lm",
        max_users=6,
        eval_users=4,
        n_negatives=3,
        max_positives=2,
        collab="none",
        popularity=False,
        batch_size=4,
    )
    meta = run(cfg)
    ds, _ = load_labels(cfg.out)
    assert meta["n_users"] == 6 and len(ds) == meta["n_pairs"]
    assert meta["teacher"]["template_hash"]
    assert meta["teacher"]["parts"] == ["text"]


def test_kill_minus_9_then_resume_matches_uninterrupted_run(tmp_path, tiny_st_dir):
    ref = config(tmp_path / "ref", tiny_st_dir, shard_users=5)
    run(ref)
    out = tmp_path / "killed" / "labels"
    argv = [
        sys.executable,
        "-m",
        "pipelines.cli",
        "generate-labels",
        "--dataset",
        DATASET,
        "--model",
        str(tiny_st_dir),
        "--n-negatives",
        "8",
        "--max-positives",
        "5",
        "--eval-users",
        "20",
        "--eval-negatives",
        "10",
        "--shard-users",
        "5",
        "--threads",
        "1",
        "--max-seq-length",
        "32",
        "--out",
        str(out),
    ]
    env = {**os.environ, SLEEP_ENV: "1.0"}
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    partial = out.with_name("labels.partial")
    deadline = time.time() + 120
    while time.time() < deadline and len(list(partial.glob("shard-*"))) < 2:
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = sorted(p.name for p in partial.glob("shard-*"))
    assert 2 <= len(done_before) < 8, done_before  # killed mid-run
    assert not (out / META_FILE).exists()
    env.pop(SLEEP_ENV)
    subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    a, _ = load_labels(ref.out)
    b, _ = load_labels(out)
    ta, tb = columns(a), columns(b)
    for name in COLUMNS:
        assert (ta[name] == tb[name]).all(), name
    assert len(set(zip(tb["user"], tb["item"]))) == len(b)  # no duplicated pairs
    assert not partial.exists()


def test_bad_config_values_are_named():
    with pytest.raises(ValueError, match="teacher is 'gpt'; allowed values"):
        GenerateLabelsConfig(teacher="gpt")
    with pytest.raises(ValueError, match="strategy"):
        GenerateLabelsConfig(strategy="best")
    with pytest.raises(ValueError, match="shard_users=0"):
        GenerateLabelsConfig(shard_users=0)
    with pytest.raises(ValueError, match="embedding_precision='bf16' sets the embedding teach"):
        GenerateLabelsConfig(teacher="causal_lm", embedding_precision="bf16")
    with pytest.raises(ValueError, match="embedding_precision='int8' runs on the CPU only"):
        GenerateLabelsConfig(embedding_precision="int8", ray_num_gpus=1)
    with pytest.raises(ValueError, match=r"embedding_precision is 'fp16'; allowed values"):
        GenerateLabelsConfig(embedding_precision="fp16")
    assert GenerateLabelsConfig(embedding_precision="bf16", ray_num_gpus=1).ray_num_gpus == 1


def test_encoder_precision_reaches_the_teacher_and_is_part_of_the_job(tmp_path, tiny_st_dir):
    """Both engines build the text part from the config (a Ray actor from its JSON form), and
    labels made at another precision are another job: never reused for this one."""
    import torch

    from common.config import from_dict, to_dict
    from pipelines.labels.fit import build_text_part

    data = load_dataset(DATASET)
    split = make_split(data, "random", 0)
    fps = (data.fingerprint(), split.fingerprint())
    hashes = {}
    for precision in ("fp32", "bf16", "int8"):
        c = config(tmp_path, tiny_st_dir, embedding_precision=precision)
        hashes[precision] = c.job_hash(*fps)
        assert from_dict(GenerateLabelsConfig, json.loads(json.dumps(to_dict(c)))) == c
    assert len(set(hashes.values())) == 3
    bf16 = config(tmp_path, tiny_st_dir, embedding_precision="bf16")
    part = build_text_part(from_dict(GenerateLabelsConfig, to_dict(bf16)), data, split)
    assert part.teacher.config.precision == "bf16" and part.item_emb.dtype == np.float32
    assert {p.dtype for p in part.teacher.model[0].model.parameters()} == {torch.bfloat16}


def test_unknown_model_path_is_named(tmp_path):
    cfg = config(tmp_path, tmp_path / "no-such-model")
    with pytest.raises((OSError, ValueError), match="no-such-model"):
        run(cfg)


def test_edited_csv_is_relabelled_not_reused(tmp_path, tiny_st_dir):
    data = load_dataset(DATASET)
    inter = data.interactions
    table = {
        "user_id": data.users["user_id"].to_numpy()[inter["user"]],
        "item_id": data.items["item_id"].to_numpy()[inter["item"]],
        "rating": inter["rating"].to_numpy(),
        "timestamp": inter["timestamp"].to_numpy(),
    }
    import pandas as pd

    csv = tmp_path / "ratings.csv"
    frame = pd.DataFrame(table)
    frame.to_csv(csv, index=False)
    cfg = config(tmp_path, tiny_st_dir, dataset=str(csv))
    first = run(cfg)
    assert first["dataset"]["fingerprint"] == load_dataset(str(csv)).fingerprint()

    frame.drop(index=range(0, len(frame), 7)).to_csv(csv, index=False)  # edit the data
    edited = load_dataset(str(csv)).fingerprint()
    assert edited != first["dataset"]["fingerprint"]
    # the old labels are for other data: not reused, and not replaced without --overwrite
    with pytest.raises(LabelError, match="dataset"):
        run(cfg)
    again = run(GenerateLabelsConfig(**{**cfg.__dict__, "overwrite": True}))
    assert not again.get("reused") and again["job_hash"] != first["job_hash"]
    assert again["dataset"]["fingerprint"] == edited
    split = make_split(load_dataset(str(csv)), "random", 0)
    load_labels(cfg.out, dataset_fingerprint=edited, split_fingerprint=split.fingerprint())


def test_a_shard_scored_from_other_inputs_is_rescored(tmp_path, tiny_st_dir):
    """Shards record a stamp (job hash: config, dataset and split fingerprints; the shard's
    users). A shard left in ``.partial`` with another stamp, or none, is rescored, and the
    result equals a clean run."""
    from datasets import load_from_disk

    from pipelines.data import training_split
    from pipelines.labels.shards import STAMP_FILE, shard_done, shard_name, shard_stamp

    ref = config(tmp_path / "ref", tiny_st_dir, shard_users=10)
    run(ref)
    cfg = config(tmp_path / "again", tiny_st_dir, shard_users=10)
    data = load_dataset(DATASET)
    job_hash = cfg.job_hash(data.fingerprint(), training_split(data).fingerprint())
    partial = Path(cfg.out + ".partial")
    partial.mkdir(parents=True)
    (partial / "job.json").write_text(json.dumps({"job_hash": job_hash}))
    # the reference's rows of shard 0's users with every score zeroed
    bogus = load_from_disk(ref.out).filter(lambda r: r["user"] < 10)
    bogus = bogus.map(lambda r: {"score": 0.0, "prob": 0.5})

    def plant(i: int, stamp: dict | None) -> None:
        bogus.save_to_disk(str(partial / shard_name(i)))
        if stamp is not None:
            (partial / shard_name(i) / STAMP_FILE).write_text(json.dumps(stamp))

    right = shard_stamp(job_hash, np.arange(10))
    plant(0, right)
    assert shard_done(partial, 0, right)  # a matching stamp: kept
    assert not shard_done(partial, 0, shard_stamp("another-job", np.arange(10)))
    assert not (partial / shard_name(0)).exists()  # removed from the job's own .partial
    plant(0, {"job_hash": "another-job", "users": right["users"]})
    plant(1, None)  # a shard recording no stamp at all
    run(cfg)
    a = columns(load_from_disk(ref.out))
    b = columns(load_from_disk(cfg.out))
    assert len(a["score"]) == len(b["score"])
    np.testing.assert_allclose(a["score"], b["score"], rtol=1e-5, atol=1e-6)


def test_ray_shards_carry_their_stamp_in_the_parquet_metadata(tmp_path):
    import pyarrow as pa

    from pipelines.labels.ray_engine import write_parquet
    from pipelines.labels.schema import features
    from pipelines.labels.shards import read_stamp, shard_done, shard_name, shard_stamp

    schema = features().arrow_schema
    table = pa.table({n: pa.array([], type=f.type) for n, f in zip(schema.names, schema)})
    stamp = shard_stamp("job", np.arange(3))
    write_parquet(tmp_path / f"{shard_name(2)}.parquet", table, stamp)
    assert read_stamp(tmp_path, 2) == stamp and shard_done(tmp_path, 2, stamp)
    assert not shard_done(tmp_path, 2, shard_stamp("job", np.arange(4)))  # other users
    assert not (tmp_path / f"{shard_name(2)}.parquet").exists()


def test_item_mean_users_need_no_pass_per_user(tmp_path, tiny_st_dir, labels):
    """``user_encoding="item_mean"``: a user is the unit-norm mean of their history items'
    embeddings (no user text is encoded), and the labels record it."""
    from llm_teacher.embedding import EmbeddingTeacher, EmbeddingTeacherConfig
    from pipelines.data import histories
    from pipelines.labels.parts.embedding import EmbeddingPart, history_mean

    emb = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 4.0]], dtype=np.float32)
    m = history_mean(emb, np.array([[0, 1, 3], [3, 3, 3], [2, 3, 3]]))  # 3 = padding
    assert np.allclose(m, [[1 / np.sqrt(5), 2 / np.sqrt(5)], [0, 0], [0.6, 0.8]])

    data = load_dataset(DATASET)
    split = make_split(data, "random", 0)
    teacher = EmbeddingTeacher(EmbeddingTeacherConfig(model=str(tiny_st_dir), temperature=0.1))
    part = EmbeddingPart(teacher, data, split, 5, user_encoding="item_mean")
    encoded = []
    teacher.encode = lambda texts, **kw: encoded.append(texts)  # any further pass would show
    users, items = np.array([0, 0, 3, 7]), np.array([1, 2, 5, 9])
    hist = histories(split.train, data.n_users, 5, data.n_items)
    want = (history_mean(part.item_emb, hist[users]) * part.item_emb[items]).sum(1) / 0.1
    got = part.score(users, items)
    assert not encoded
    assert np.allclose(got, want, atol=1e-5)
    with pytest.raises(ValueError, match="user_encoding"):
        EmbeddingPart(teacher, data, split, 5, user_encoding="nope")

    meta = run(config(tmp_path, tiny_st_dir, user_encoding="item_mean"))
    assert meta["teacher"]["info"]["user_encoding"] == "item_mean"
    assert meta["job_hash"] != labels[1]["job_hash"]  # never taken for text-encoded labels


def test_a_text_part_given_the_drivers_item_embeddings_encodes_no_item(tiny_st_dir, monkeypatch):
    # what a Ray actor does: it takes the driver's item embeddings instead of encoding the
    # catalogue again, so it scores with the very same array
    from pipelines.labels.fit import build_text_part

    data = load_dataset(DATASET)
    split = make_split(data, "random", 0)
    c = GenerateLabelsConfig(model=str(tiny_st_dir), user_encoding="item_mean")
    driver = build_text_part(c, data, split)
    encoded = []
    real = EmbeddingTeacher.encode
    monkeypatch.setattr(EmbeddingTeacher, "encode",
                        lambda self, texts, **kw: encoded.append(texts) or real(self, texts, **kw))  # fmt: skip
    actor = build_text_part(c, data, split, item_emb=driver.item_embeddings())
    assert not encoded and actor.item_embeddings() is driver.item_embeddings()
    users, items = np.array([0, 3]), np.array([1, 5])
    assert np.array_equal(actor.score(users, items), driver.score(users, items))


def test_als_teacher_past_the_memory_budget_names_the_model(tmp_path, tiny_st_dir):
    # a budget below EASE^R's estimate for 60 items: auto falls back to ALS, also for the
    # content map of the cold items
    cfg = config(tmp_path, tiny_st_dir, protocol="cold_items", collab_memory_gb=1e-4, max_users=10)
    meta = run(cfg)
    t = meta["teacher"]
    assert t["parts"] == ["text", "als", "popularity"] and set(t["mix"]["weights"]) == set(
        t["parts"]
    )
    assert t["collab"]["kind"] == "als" and t["ease_lambda"] is None
    assert "over the 0.0001 GB budget" in t["collab"]["chosen_by"]
    assert t["collab"]["regularization"] > 0 and t["collab"]["factors"] == 64
    assert meta["cold"]["scored_by"]["als"] == "content map: predicted ALS item factor"
    assert "als" in meta["teacher_quality"]["parts"]
    ds, _ = load_labels(cfg.out)
    assert len(ds) == meta["n_pairs"] and np.isfinite(columns(ds)["score"]).all()
    assert (Path(cfg.out) / meta["teacher_topk"]).exists()


def test_default_teacher_names_ease_and_why(labels):
    _, meta = labels
    c = meta["teacher"]["collab"]
    assert c["kind"] == "ease" and c["chosen_by"].startswith("auto: EASE^R needs")
    assert meta["teacher"]["ease_lambda"] == c["lambda"]
