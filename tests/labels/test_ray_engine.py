"""`generate-labels --engine ray`: same labels as the in-process job, resumable, and a clear
message when Ray is missing. Runs on a local Ray (``num_cpus=2``) with tiny offline teachers."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import ray

import pipelines.labels.shards as label_shards
from common.config import from_dict, to_dict
from pipelines.labels.config import SLEEP_ENV, GenerateLabelsConfig
from pipelines.labels.generate_labels import run
from pipelines.labels.ray_engine import ACTOR_COL, END_COL, SHARD_COL, START_COL, _collect
from pipelines.labels.schema import COLUMNS, META_FILE, columns, features, load_labels

DATASET = "synthetic:users=40,items=60,per_user=12,seed=2"
SHARD_USERS = 5  # 8 shards of 40 users


def config(out: Path, model: Path | str, **kw) -> GenerateLabelsConfig:
    base = dict(
        dataset=DATASET,
        model=str(model),
        n_negatives=8,
        max_positives=5,
        eval_users=20,
        eval_negatives=10,
        shard_users=SHARD_USERS,
        threads=1,
        max_seq_length=32,
        ray_concurrency=2,
        ray_num_cpus=1.0,
        out=str(out),
    )
    base.update(kw)
    return GenerateLabelsConfig(**base)


def cli_args(cfg: GenerateLabelsConfig) -> list[str]:
    """The same config as ``recdistill generate-labels`` flags."""
    argv = [sys.executable, "-m", "pipelines.cli", "generate-labels"]
    for name in ("dataset", "model", "n_negatives", "max_positives", "eval_users"):
        argv += [f"--{name.replace('_', '-')}", str(getattr(cfg, name))]
    for name in ("eval_negatives", "shard_users", "threads", "max_seq_length", "engine"):
        argv += [f"--{name.replace('_', '-')}", str(getattr(cfg, name))]
    return argv + ["--ray-concurrency", str(cfg.ray_concurrency), "--out", cfg.out]


def assert_same_labels(path_a, path_b) -> None:
    a, meta_a = load_labels(path_a)
    b, meta_b = load_labels(path_b)
    assert a.features == b.features == features()
    ta, tb = columns(a), columns(b)
    for name in COLUMNS:
        assert (ta[name] == tb[name]).all(), name
    for key in ("job_hash", "teacher", "teacher_quality", "candidates", "dataset", "split"):
        assert meta_a[key] == meta_b[key], key
    assert meta_a["n_pairs"] == meta_b["n_pairs"] == len(b)
    for key in ("item_embeddings", "teacher_topk"):  # the arrays saved beside the labels
        assert (key in meta_a) == (key in meta_b), key
        if key in meta_a:
            arr_a = np.load(Path(path_a) / meta_a[key])
            assert (arr_a == np.load(Path(path_b) / meta_b[key])).all(), key


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray for the in-process tests; the engine uses it as it is."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_st_dir):
    """The in-process job's labels (embedding teacher)."""
    cfg = config(tmp_path_factory.mktemp("local") / "labels", tiny_st_dir)
    return cfg, run(cfg)


def test_ray_engine_gives_the_in_process_labels(local_ray, reference, tmp_path, tiny_st_dir):
    ref_cfg, ref_meta = reference
    cfg = config(tmp_path / "labels", tiny_st_dir, engine="ray")
    meta = run(cfg)
    assert ray.is_initialized()  # a Ray the caller started is left running
    assert_same_labels(ref_cfg.out, cfg.out)
    assert meta["engine"]["name"] == "ray" and meta["engine"]["shards_scored"] == 8
    assert sum(meta["engine"]["shards_per_actor"]) == 8 and meta["engine"]["actors"] == 2
    assert not meta["engine"]["started_local_ray"]  # it used the Ray this test started
    assert ref_meta["engine"] == {"name": "local"}
    assert "item_embeddings" in meta and "teacher_topk" in meta
    assert not Path(cfg.out).with_name("labels.partial").exists()
    # the engine is not part of the job: the local engine reuses what Ray wrote
    again = run(config(tmp_path / "labels", tiny_st_dir, engine="local"))
    assert again.get("reused")


def test_ray_engine_causal_lm_teacher(local_ray, tmp_path, tiny_llama_dir):
    kw = dict(
        teacher="causal_lm",
        max_users=6,
        eval_users=4,
        n_negatives=3,
        max_positives=2,
        collab="none",
        popularity=False,
        batch_size=4,
        shard_users=2,
    )
    local = config(tmp_path / "local", tiny_llama_dir, **kw)
    on_ray = config(tmp_path / "ray", tiny_llama_dir, engine="ray", **kw)
    run(local)
    meta = run(on_ray)
    assert meta["engine"]["shards_scored"] == 3
    assert_same_labels(local.out, on_ray.out)


def _ray_pids(marker: str) -> list[int]:
    """Live processes of the Ray that keeps its files under ``marker``: named there on their
    command line (raylet, GCS) or holding a file open there (agents and workers, which rename
    themselves ``ray::...``)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if marker.encode() in (proc / "cmdline").read_bytes() or any(
                os.readlink(fd).startswith(marker) for fd in (proc / "fd").iterdir()
            ):
                pids.append(int(proc.name))
        except OSError:  # gone, or not ours to read
            continue
    return pids


def _stop_ray(marker: str, wait: float) -> list[int]:
    """Wait up to ``wait`` s for that Ray's processes to exit, then SIGKILL the rest (only
    these pids). Returns the pids that had to be killed."""
    deadline = time.time() + wait
    while _ray_pids(marker) and time.time() < deadline:
        time.sleep(0.2)
    left = _ray_pids(marker)
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.time() + 5
    while _ray_pids(marker) and time.time() < deadline:  # SIGKILL is not instant
        time.sleep(0.1)
    return left


def test_kill_driver_then_resume_on_ray(local_ray, reference, tmp_path, tiny_st_dir, monkeypatch):
    """kill -9 the driver (``recdistill generate-labels --engine ray``) mid-run; the rerun
    skips the shards already written and gives the in-process labels. The killed driver
    starts its own local Ray in a private temp folder (``RAY_TMPDIR``): that is how we find
    and stop what it leaves behind (raylet and GCS die with it, Ray's per-node agents may
    not) without touching any other Ray on the machine. In between, a local-engine rerun
    resumes from Ray's shards and crashes after one more: engines resume each other."""
    ref_cfg, _ = reference
    # one actor: fewer processes to start on a busy machine (the test above runs two)
    cfg = config(tmp_path / "killed" / "labels", tiny_st_dir, engine="ray", ray_concurrency=1)
    partial = Path(cfg.out).with_name("labels.partial")
    ray_tmp = tempfile.mkdtemp(prefix="rd-ray-", dir="/tmp")  # short: Ray's socket paths
    env = {**os.environ, SLEEP_ENV: "0.5", "RAY_TMPDIR": ray_tmp}
    env.pop("RAY_ADDRESS", None)
    try:
        proc = subprocess.Popen(
            cli_args(cfg), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = (
            time.time() + 600
        )  # a wait, not a timing check: Ray starts slowly on 2 busy cores
        while time.time() < deadline and len(list(partial.glob("shard-*.parquet"))) < 2:
            if proc.poll() is not None:
                break
            time.sleep(0.1)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        done_before = sorted(p.name for p in partial.glob("shard-*.parquet"))
        assert 2 <= len(done_before) <= 6, done_before  # killed mid-run
        assert not (Path(cfg.out) / META_FILE).exists()
        assert not list(partial.glob(".shard-*"))  # no half-written shard left behind
        _stop_ray(ray_tmp, wait=1)
        assert not _ray_pids(ray_tmp)
    finally:
        _stop_ray(ray_tmp, wait=0)
        shutil.rmtree(ray_tmp, ignore_errors=True)

    # the engine is not part of the job: a local rerun resumes from Ray's shards; let it
    # crash after one more shard (a datasets folder), then finish on Ray
    class Crash(Exception):
        pass

    def write_one_then_crash(path, *args):
        if list(partial.glob("shard-*[0-9]")):
            raise Crash
        real_write(path, *args)

    real_write = label_shards.write_shard
    with monkeypatch.context() as m:
        m.setattr(label_shards, "write_shard", write_one_then_crash)
        with pytest.raises(Crash):
            run(GenerateLabelsConfig(**{**cfg.__dict__, "engine": "local"}))
    local_shard = [p.name for p in partial.glob("shard-*[0-9]")]
    assert len(local_shard) == 1 and f"{local_shard[0]}.parquet" not in done_before

    meta = run(cfg)  # the rerun (in this process, on the module's Ray)
    assert meta["engine"]["shards_scored"] == 8 - len(done_before) - 1  # done shards not redone
    assert_same_labels(ref_cfg.out, cfg.out)
    assert not partial.exists()


def test_missing_ray_names_the_install_command(monkeypatch, tmp_path, capsys):
    from pipelines.cli import main

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    monkeypatch.setitem(sys.modules, "ray.data", None)
    out = tmp_path / "labels"
    with pytest.raises(SystemExit) as exc:  # the environment: exit 3, one line
        main(["generate-labels", "--dataset", DATASET, "--engine", "ray", "--out", str(out)])
    assert exc.value.code == 3
    err = capsys.readouterr().err
    assert "Traceback" not in err and "pip install 'recdistill[ray]'" in err
    assert not out.exists() and not out.with_name("labels.partial").exists()  # failed first


def test_engine_fields_are_validated_and_not_hashed():
    base = GenerateLabelsConfig()
    on_ray = GenerateLabelsConfig(
        engine="ray", ray_concurrency=4, ray_num_cpus=0.5, ray_num_gpus=1.0, ray_address="auto"
    )
    fps = ("d" * 16, "s" * 16)
    assert on_ray.job_hash(*fps) == base.job_hash(*fps)
    assert GenerateLabelsConfig(n_negatives=7).job_hash(*fps) != base.job_hash(*fps)
    assert base.job_hash("e" * 16, fps[1]) != base.job_hash(*fps)  # other data, other job
    assert base.job_hash(fps[0], "t" * 16) != base.job_hash(*fps)
    assert from_dict(GenerateLabelsConfig, json.loads(json.dumps(to_dict(on_ray)))) == on_ray
    with pytest.raises(ValueError, match=r"engine is 'spark'; allowed values: \['local', 'ray'\]"):
        GenerateLabelsConfig(engine="spark")
    with pytest.raises(ValueError, match="ray_concurrency=0"):
        GenerateLabelsConfig(ray_concurrency=0)
    with pytest.raises(ValueError, match="ray_num_gpus=-1"):
        GenerateLabelsConfig(ray_num_gpus=-1)


class _FakeScored:
    """Stands in for the Ray dataset: yields the given pyarrow batches."""

    def __init__(self, batches):
        self.batches = batches

    def iter_batches(self, **_):
        yield from self.batches


def _scored_rows(shard: int, users: list[int]) -> pa.Table:
    n = len(users)
    cols = {
        "user_id": [f"u{u}" for u in users],
        "item_id": [f"i{k}" for k in range(n)],
        "user": np.array(users, np.int32),
        "item": np.arange(n, dtype=np.int32),
        "score": np.linspace(1, 0, n, dtype=np.float32),
        "prob": np.full(n, 0.5, np.float32),
        "observed": np.zeros(n, bool),
        "rank": np.arange(n, dtype=np.int32),
        "source": ["uniform"] * n,
    }
    t = pa.table(cols, schema=features().arrow_schema)
    t = t.append_column(SHARD_COL, pa.array(np.full(n, shard, np.int32)))
    t = t.append_column(START_COL, pa.array(np.full(n, 1.0)))
    t = t.append_column(END_COL, pa.array(np.full(n, 2.0)))
    return t.append_column(ACTOR_COL, pa.array(np.full(n, 100 + shard % 2, np.int64)))


def test_out_of_order_and_split_batches_are_reassembled_by_shard(tmp_path):
    s0, s1, s2 = _scored_rows(0, [0, 0, 1]), _scored_rows(1, [2, 2]), _scored_rows(2, [3])
    # shard 1 first, shard 0 split over two batches, one batch mixing shards 0 and 2
    batches = [s1, s0.slice(0, 1), pa.concat_tables([s0.slice(1), s2])]
    n, starts, ends, by_actor = _collect(_FakeScored(batches), {0: 3, 1: 2, 2: 1}, tmp_path)
    assert n == 6 and len(starts) == len(ends) == 3 and by_actor == {100: 2, 101: 1}
    import pyarrow.parquet as pq

    got = pq.read_table(tmp_path / "shard-00000.parquet")
    assert got.schema == features().arrow_schema and got["user"].to_pylist() == [0, 0, 1]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        f"shard-0000{i}.parquet" for i in range(3)
    ]
    # a shard that never comes back complete is an error, not a silent gap
    (tmp_path / "again").mkdir()
    with pytest.raises(RuntimeError, match=r"shards \[1\] never came back complete"):
        _collect(_FakeScored([s0, s1.slice(0, 1)]), {0: 3, 1: 2}, tmp_path / "again")


@pytest.mark.slow
def test_ray_engine_matches_local_with_minilm(local_ray, tmp_path):
    """The packaged MiniLM: unlike the tiny model, its embeddings change in the last bits with
    the batch a text is encoded in, which ``Part.warm_users`` has to replay on every actor."""
    kw = dict(
        dataset="ml-100k",
        max_users=30,
        shard_users=10,
        eval_users=20,
        n_negatives=20,
        max_positives=5,
        max_seq_length=128,
    )
    local = config(tmp_path / "local", "minilm", **kw)
    on_ray = config(tmp_path / "ray", "minilm", engine="ray", ray_concurrency=1, **kw)
    run(local)
    run(on_ray)
    assert_same_labels(local.out, on_ray.out)
