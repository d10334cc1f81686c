"""bench-scale's plumbing: sizes, commands every job accepts, child-process accounting, growth
fits. The benchmark's numbers themselves come from `recdistill bench-scale`, never a test."""

from pathlib import Path

import pytest

from pipelines.cli import job_parser
from pipelines.experiments import bench_scale as bs
from pipelines.experiments import scale_report


def test_parse_size():
    assert bs.parse_size("100000x2000x50") == (100000, 2000, 50)
    assert bs.parse_size("1e5x1e5x20") == (100000, 100000, 20)
    for bad in ("100x100", "axbxc", "10x10x10", "0x10x2"):
        with pytest.raises(ValueError, match="size"):
            bs.parse_size(bad)
    with pytest.raises(ValueError, match="stages"):
        bs.BenchScaleConfig(stages=("labels", "nope"))


def test_every_stage_command_parses_with_its_job(tmp_path):
    c = bs.BenchScaleConfig(sizes=("300x200x10",), out=str(tmp_path))
    cmds = bs.stage_commands(c, "300x200x10", tmp_path / "300x200x10")
    assert set(cmds) == set(bs.STAGES)
    caches = {}
    for stage, argv in cmds.items():
        if stage == "data":
            continue
        parser, _ = job_parser(argv[0])
        config = parser.parse_config(argv[1:])
        assert config.dataset == "synthetic:users=300,items=200,per_user=10,seed=0"
        if hasattr(config, "collab_cache"):
            caches[stage] = config.collab_cache
    # the jobs that fit the collaborative model share one fit per size
    assert set(caches) == {"prepare", "labels", "benchmark"}
    assert set(caches.values()) == {str(tmp_path / "300x200x10" / "collab_cache")}


def test_labels_encode_in_bf16_exactly_from_the_threshold_where_the_cpu_has_it(
    tmp_path, monkeypatch
):
    import llm_teacher.embedding as embedding

    c = bs.BenchScaleConfig(out=str(tmp_path), bf16_from_items=200)

    def labels(size, config=c):
        argv = bs.stage_commands(config, size, tmp_path / size)["labels"]
        parsed = job_parser(argv[0])[0].parse_config(argv[1:])
        return parsed.embedding_precision, "--embedding-precision" in argv

    monkeypatch.setattr(embedding, "bf16_native", lambda device="cpu": True)
    assert labels("300x199x10") == ("fp32", False)
    assert labels("300x200x10") == labels("300x5000x10") == ("bf16", True)
    assert labels("300x5000x10", bs.BenchScaleConfig(bf16_from_items=0)) == ("fp32", False)
    assert scale_report.size_settings(c, 200)["embedding_precision"] == "bf16"
    failed = {"rc": 1, "seconds": 0.0, "peak_rss_gb": 0.0, "timed_out": False}
    monkeypatch.setattr(bs, "run_stage", lambda argv, log, timeout_s, threads: failed)
    r = bs.run(bs.BenchScaleConfig(sizes=("300x200x10",), stages=("data",), out=str(tmp_path / "o"),
                                   bf16_from_items=200))  # fmt: skip
    assert r["size_config"]["300x200x10"]["embedding_precision"] == "bf16"  # the report shows it
    assert "embedding_precision" in (tmp_path / "o" / "report.md").read_text()
    monkeypatch.setattr(embedding, "bf16_native", lambda device="cpu": False)  # emulated: slow
    assert labels("300x5000x10") == ("fp32", False)
    assert scale_report.size_settings(c, 5000)["embedding_precision"] == "fp32"
    with pytest.raises(ValueError, match="bf16_from_items=-1"):
        bs.BenchScaleConfig(bf16_from_items=-1)


def test_run_stage_accounts_the_child(tmp_path):
    ok = bs.run_stage(
        ["-c", "import numpy as np; a = np.ones(50_000_000, np.uint8); a[:] = 2; print('done')"],
        tmp_path / "ok.log",
        timeout_s=60,
        threads=1,
    )
    assert ok["rc"] == 0 and not ok["timed_out"]
    assert ok["peak_rss_gb"] > 0.05  # the 50 MB array was resident in the child
    assert (tmp_path / "ok.log").read_text().strip() == "done"
    bad = bs.run_stage(["-c", "raise SystemExit(2)"], tmp_path / "bad.log", 60, 1)
    assert bad["rc"] == 2 and "log_tail" in bad
    slow = bs.run_stage(["-c", "import time; time.sleep(30)"], tmp_path / "slow.log", 1, 1)
    assert slow["timed_out"] and slow["rc"] != 0


def test_ray_labels_and_data_parallel_students_reach_their_jobs(tmp_path):
    c = bs.BenchScaleConfig(sizes=("300x200x10",), out=str(tmp_path), label_engine="ray",
                            label_actors=3, train_workers=2, threads=1)  # fmt: skip
    cmds = bs.stage_commands(c, "300x200x10", tmp_path / "300x200x10")
    labels = job_parser("generate-labels")[0].parse_config(cmds["labels"][1:])
    assert (labels.engine, labels.ray_concurrency, labels.ray_num_cpus) == ("ray", 3, 1.0)
    c = bs.BenchScaleConfig(out=str(tmp_path), label_engine="ray", label_actors=2, threads=4)
    labels = job_parser("generate-labels")[0].parse_config(
        bs.stage_commands(c, "300x200x10", tmp_path)["labels"][1:]
    )
    assert (labels.ray_concurrency, labels.ray_num_cpus, labels.threads) == (2, 2.0, 4)
    for stage in ("student_hard", "student_distilled"):
        assert job_parser("train-student")[0].parse_config(cmds[stage][1:]).num_workers == 2
    local = bs.stage_commands(bs.BenchScaleConfig(out=str(tmp_path)), "300x200x10", tmp_path)
    assert job_parser("generate-labels")[0].parse_config(local["labels"][1:]).engine == "local"


def test_growth_reads_a_size_recorded_before_the_engine_settings_as_local():
    sizes = {
        s: {
            "data": {"rc": 0, "seconds": 1.0, "peak_rss_gb": 1.0, "outputs": {"interactions": n}},
            "labels": {"rc": 0, "seconds": n / 100, "peak_rss_gb": 1.0},
        }
        for s, n in (("a", 1000), ("b", 10000), ("c", 100000))
    }
    old = {"topk_users": 10, "n_negatives": 5, "user_encoding": "item_mean", "threads": 2}
    new = {**old, "label_engine": "local", "label_actors": 2}
    g = scale_report.growth(sizes, {"a": old, "b": old, "c": new})
    assert g["labels"]["points"] == 3
    g = scale_report.growth(sizes, {"a": old, "b": old, "c": {**new, "label_engine": "ray"}})
    assert g["labels"]["sizes"] == ["c"] and g["labels"]["left_out"]["sizes"] == ["a", "b"]


def test_growth_exponents():
    assert scale_report.fit_exponent([1e4, 1e5, 1e6], [3 * x**1.5 for x in (1e4, 1e5, 1e6)]) == (
        pytest.approx(1.5)
    )
    assert scale_report.fit_exponent([1e4], [2.0]) is None
    sizes = {
        s: {
            "data": {"rc": 0, "seconds": 1.0, "peak_rss_gb": 1.0, "outputs": {"interactions": n}},
            "labels": {"rc": 0, "seconds": n / 100, "peak_rss_gb": 0.5},
        }
        for s, n in (("a", 1000), ("b", 10000))
    }
    sizes["b"]["prepare"] = {"rc": 1, "seconds": 3.0, "peak_rss_gb": 1.0}
    g = scale_report.growth(sizes)
    assert g["labels"]["seconds_exponent"] == pytest.approx(1.0)
    assert g["data"]["seconds_exponent"] == pytest.approx(0.0)
    assert "prepare" not in g  # a failed stage is not a point
    text = scale_report.format_report({"sizes": sizes, "growth": g})
    assert "| labels | 2 | 1.00 |" in text


def test_growth_fits_only_sizes_run_with_the_same_settings():
    sizes = {
        s: {
            "data": {"rc": 0, "seconds": 1.0, "peak_rss_gb": 1.0, "outputs": {"interactions": n}},
            "student_hard": {"rc": 0, "seconds": t, "peak_rss_gb": 1.0},
            "labels": {"rc": 0, "seconds": n / 100, "peak_rss_gb": 1.0},
        }
        for s, n, t in (("a", 1000, 10.0), ("b", 10000, 100.0), ("c", 100000, 100.0))
    }
    conf = {"epochs": 3, "student_batch_size": 4096, "threads": 2}
    size_config = {"a": conf, "b": conf, "c": {**conf, "epochs": 1}}
    mixed = scale_report.growth(sizes)[
        "student_hard"
    ]  # without settings: 3 points, a wrong exponent
    assert mixed["points"] == 3 and mixed["seconds_exponent"] < 0.6
    g = scale_report.growth(sizes, size_config)
    # the largest size's settings are the reference: it alone ran with 1 epoch
    assert g["student_hard"]["sizes"] == ["c"] and g["student_hard"]["seconds_exponent"] is None
    assert g["student_hard"]["left_out"]["sizes"] == ["a", "b"]
    assert g["labels"]["points"] == 3 and "left_out" not in g["labels"]  # epochs: not its cost
    assert g["labels"]["seconds_exponent"] == pytest.approx(1.0)
    text = scale_report.format_report({"sizes": sizes, "growth": g})
    assert "| student_hard | 1 | - | - | a, b |" in text


def test_growth_keeps_apart_sizes_fit_with_another_collaborative_model():
    def prep(kind):  # what prepare's stats.json says, as stage_outputs keeps it
        return {"protocols": {"temporal": {"popularity": {}, kind: {"kind": kind}}}}

    sizes = {
        s: {
            "data": {"rc": 0, "seconds": 1.0, "peak_rss_gb": 1.0, "outputs": {"interactions": n}},
            "prepare": {"rc": 0, "seconds": t, "peak_rss_gb": 1.0, "outputs": prep(kind)},
            "student_hard": {"rc": 0, "seconds": n / 100, "peak_rss_gb": 1.0},
        }
        for s, n, t, kind in (
            ("a", 1000, 500.0, "ease"), ("b", 10000, 10.0, "als"), ("c", 100000, 100.0, "als")
        )
    }  # fmt: skip
    assert scale_report.collab_kind(sizes["a"]) == "ease" and scale_report.collab_kind({}) is None
    labels_only = {"labels": {"outputs": {"collab": {"kind": "als"}}}}
    assert scale_report.collab_kind(labels_only) == "als"
    g = scale_report.growth(sizes)
    assert g["prepare"]["sizes"] == ["b", "c"] and g["prepare"]["left_out"]["sizes"] == ["a"]
    assert g["prepare"]["seconds_exponent"] == pytest.approx(1.0)
    assert "collaborative model" in g["prepare"]["left_out"]["why"]
    assert g["student_hard"]["points"] == 3  # its cost does not depend on the collaborative fit


def test_a_finished_stage_is_reused(tmp_path, monkeypatch):
    calls = []

    def fake(argv, log, timeout_s, threads):
        calls.append(argv[0])
        Path(log).write_text('{"interactions": 10, "train": 8}\n')
        return {"rc": 0, "seconds": 1.0, "peak_rss_gb": 0.1, "timed_out": False}

    monkeypatch.setattr(bs, "run_stage", fake)
    c = bs.BenchScaleConfig(sizes=("300x200x10",), stages=("data",), out=str(tmp_path / "o"))
    r = bs.run(c)
    assert r["sizes"]["300x200x10"]["data"]["outputs"]["interactions"] == 10
    bs.run(c)
    assert calls == ["-c"]  # the second run reused the stage
    assert (tmp_path / "o" / "report.md").exists()


def test_a_rerun_stage_reruns_the_stages_after_it_and_keeps_the_others(tmp_path, monkeypatch):
    calls = []

    def fake(argv, log, timeout_s, threads):
        calls.append(argv[0])
        Path(log).write_text('{"interactions": 10, "train": 8}\n')
        return {"rc": 0, "seconds": 1.0, "peak_rss_gb": 0.1, "timed_out": False}

    monkeypatch.setattr(bs, "run_stage", fake)
    monkeypatch.setattr(bs, "stage_outputs", lambda *a: {})
    out = str(tmp_path / "o")
    first = ("data", "prepare", "student_hard", "compress")
    bs.run(bs.BenchScaleConfig(sizes=("300x200x10",), stages=first, out=out))
    calls.clear()
    # other student settings: student_hard's command changes, so compress (after it) reruns
    # although its own command is the same; data and prepare are reused
    r = bs.run(bs.BenchScaleConfig(sizes=("300x200x10",), stages=first, epochs=1, out=out))
    assert calls == ["train-student", "compress"]
    assert r["size_config"]["300x200x10"]["epochs"] == 1
    calls.clear()
    # a run of one stage keeps the rows of the others in the JSON
    r = bs.run(bs.BenchScaleConfig(sizes=("300x200x10",), stages=("prepare",), epochs=1, out=out))
    assert calls == []
    assert set(r["sizes"]["300x200x10"]) == set(first)


def test_a_stage_that_runs_starts_from_an_empty_output(tmp_path, monkeypatch):
    seen = {}
    d = tmp_path / "o" / "300x200x10"

    def fake(argv, log, timeout_s, threads):
        seen[argv[0]] = sorted(p.name for p in d.iterdir() if p.is_dir())
        Path(log).write_text('{"interactions": 10, "train": 8}\n')
        return {"rc": 0, "seconds": 1.0, "peak_rss_gb": 0.1, "timed_out": False}

    monkeypatch.setattr(bs, "run_stage", fake)
    monkeypatch.setattr(bs, "stage_outputs", lambda *a: {})
    bs.run(bs.BenchScaleConfig(sizes=("300x200x10",), stages=("data",), out=str(tmp_path / "o")))
    for name in ("prepare", "collab_cache", "labels", "labels.partial", "student_hard"):
        (d / name).mkdir()
        (d / name / "old.json").write_text("{}")
    stages = ("data", "prepare", "labels")
    bs.run(bs.BenchScaleConfig(sizes=("300x200x10",), stages=stages, out=str(tmp_path / "o")))
    # prepare ran without its old output or fit cache, labels without its old labels
    assert "prepare" not in seen["prepare"] and "collab_cache" not in seen["prepare"]
    assert "labels" not in seen["generate-labels"]
    assert "labels.partial" not in seen["generate-labels"]  # no shards of an interrupted run
    assert (d / "student_hard" / "old.json").exists()  # a stage that did not run is kept
