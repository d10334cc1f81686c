"""What is served is what the run made: the FAISS file's sha256 is mandatory and recomputed,
the fingerprint reported is the computed one, a sample of the index's vectors equals the item
tower's output, and an error never echoes a file's contents."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest

from pipelines.serving.artifacts import ServeError, load_engine, resolve_run
from student.serving import IndexConfig, ItemIndex
from student.serving.index import INDEX_FILE, META_FILE
from student.serving.integrity import check_vectors


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _emb(n=120, d=16, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)


def _saved(tmp_path, emb, kind="flat"):
    index = ItemIndex.build(emb, np.arange(len(emb)), IndexConfig(kind=kind))
    return index.save(tmp_path / f"idx_{kind}")


def test_an_index_without_its_sha256_is_refused(tmp_path):
    d = _saved(tmp_path, _emb())
    meta = json.loads((d / META_FILE).read_text())
    del meta["index_sha256"]
    (d / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(
        ValueError, match=r"index.faiss: .*records no index_sha256 \(computed [0-9a-f]{64}\)"
    ):
        ItemIndex.load(d)


def test_a_sha256_mismatch_names_the_file_the_recorded_and_the_computed_hash(tmp_path):
    d = _saved(tmp_path, _emb())
    want = json.loads((d / META_FILE).read_text())["index_sha256"]
    (d / INDEX_FILE).write_bytes((d / INDEX_FILE).read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(ValueError) as err:
        ItemIndex.load(d)
    msg = str(err.value)
    assert str(d / INDEX_FILE) in msg and want in msg and _sha(d / INDEX_FILE) in msg


@pytest.mark.parametrize("kind", ["flat", "sq8", "ivf_flat", "ivf_sq8", "hnsw_flat", "hnsw_sq8"])
def test_vector_check_accepts_the_right_index_and_refuses_another(tmp_path, kind):
    emb = _emb(300)
    index = ItemIndex.load(_saved(tmp_path, emb, kind))
    check_vectors(index, emb)  # within the code's tolerance (SQ8 decodes approximately)
    with pytest.raises(ValueError, match="differ from the item tower's output"):
        check_vectors(index, _emb(300, seed=1))


@pytest.fixture(scope="module")
def run_with_index(run_dir, tmp_path_factory):
    """A copy of ``run_dir`` with its index saved in ``<run>/index``."""
    run = tmp_path_factory.mktemp("integrity") / "run"
    shutil.copytree(run_dir, run)
    load_engine(resolve_run(run)).index.save(run / "index")
    return run


def test_the_reported_index_fingerprint_is_the_computed_sha256(run_with_index):
    e = load_engine(resolve_run(run_with_index))
    assert e.index_fingerprint == _sha(run_with_index / "index" / INDEX_FILE)[:16]


def test_a_swapped_index_with_a_recomputed_sha256_is_refused(tmp_path, run_with_index):
    run = tmp_path / "run"
    shutil.copytree(run_with_index, run)
    good = ItemIndex.load(run / "index")
    other = ItemIndex.build(_emb(good.n, good.dim, seed=7), good.item_ids, good.config)
    other.save(tmp_path / "other")
    shutil.copy(tmp_path / "other" / INDEX_FILE, run / "index" / INDEX_FILE)
    meta = json.loads((run / "index" / META_FILE).read_text())
    meta["index_sha256"] = _sha(run / "index" / INDEX_FILE)  # a consistent-looking swap
    (run / "index" / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(ServeError, match="index vectors differ from the item tower's output"):
        load_engine(resolve_run(run))


def test_an_error_never_echoes_the_file_a_crafted_metrics_json_names(tmp_path, run_dir):
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    secret = tmp_path / "hostname"
    secret.write_text("SECRET-host-4711\nsecond line\n")
    link = tmp_path / "data.csv"
    link.symlink_to(secret)
    metrics = run / "student_distilled" / "metrics.json"
    m = json.loads(metrics.read_text())
    m["config"]["dataset"] = str(link)
    metrics.write_text(json.dumps(m))
    with pytest.raises(ServeError) as err:
        load_engine(resolve_run(run, model=run / "student_distilled" / "model"))
    assert "SECRET-host-4711" not in str(err.value)
    assert "cannot be read as the data this run was made with" in str(err.value)


def test_a_path_the_metadata_names_outside_the_run_is_not_read(tmp_path, run_dir):
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    cfg = run / "compressed" / "int8" / "config.json"  # a model saved without provenance
    meta = json.loads(cfg.read_text())
    meta.pop("provenance")
    cfg.write_text(json.dumps(meta))
    outside = tmp_path / "elsewhere"
    shutil.move(run / "student_distilled", outside)
    comp = run / "compressed" / "compression.json"
    c = json.loads(comp.read_text())
    c["config"]["model"] = str(outside / "model")
    comp.write_text(json.dumps(c))
    with pytest.raises(ServeError, match=r"lies outside the run .* \(not read\)"):
        resolve_run(run)
