"""The one-command path and the CLI's manners: the demo takes the own-data flags and
``--threads``, a ``data:`` section in ``--config``, ``--help`` with each flag once and grouped,
one-line parser errors, the real port of ``serve --port 0``, hints only for folders that
exist, quiet logs, and one collaborative fit per chain."""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import sys
import threading
import time

import pytest

import pipelines.demo as demo_mod
from pipelines.cli import job_parser, main
from pipelines.core.layout import RunLayout
from pipelines.demo import DemoConfig, chain, format_summary

DATASET = "synthetic:users=60,items=90,per_user=12,seed=5"


@pytest.fixture
def shop(tmp_path):
    """A MovieLens-"latest"-like export: ratings.csv and movies.csv with their own names."""
    rows = ["userId,movieId,rating,timestamp"]
    rows += [f"{u},{10 + (u * 7 + k) % 30},{1 + k % 5},{1000 - u * 10 - k}"
             for u in range(12) for k in range(6)]  # fmt: skip
    (tmp_path / "ratings.csv").write_text("\n".join(rows) + "\n")
    items = ["movieId,title,genres"] + [f"{j},Film {j},Drama|Comedy" for j in range(10, 40)]
    (tmp_path / "movies.csv").write_text("\n".join(items) + "\n")
    flags = {
        "dataset": str(tmp_path / "ratings.csv"),
        "items": str(tmp_path / "movies.csv"),
        "columns": "user_id=userId,item_id=movieId",
        "item_columns": "item_id=movieId",
        "genre_sep": "|",
    }
    return tmp_path, flags


def _argv(flags: dict) -> list[str]:
    return [x for k, v in flags.items() for x in (f"--{k.replace('_', '-')}", v)]


def _captured_run(monkeypatch, module_name: str) -> dict:
    import importlib

    seen: dict = {}
    module = importlib.import_module(module_name)
    monkeypatch.setattr(module, "run", lambda c: seen.setdefault("c", c) and {})
    monkeypatch.setattr(module, "format_summary", lambda r: "", raising=False)
    return seen


# ------------------------------------------------------------ 1. the demo: own data, threads


def test_demo_takes_the_own_data_flags_and_threads(shop, monkeypatch):
    root, flags = shop
    seen = _captured_run(monkeypatch, "pipelines.demo")
    main(["demo", *_argv(flags), "--threads", "3", "--out", str(root / "run")])
    c = seen["c"]
    assert c.threads == 3
    assert "movies.csv" in c.dataset and "userId" in c.dataset  # folded into the spec
    steps = {s.name: s.config for s in chain(c, RunLayout(root / "run"))}
    for name in ("labels", "student_hard", "student_distilled", "compress"):
        assert steps[name].threads == 3, name
        assert steps[name].dataset == c.dataset
    assert steps["benchmark"].threads == 1  # timed on one thread unless overridden
    over = DemoConfig(threads=3, overrides={"benchmark": {"threads": 2}})
    assert {s.name: s.config for s in chain(over, RunLayout(root))}["benchmark"].threads == 2


# ------------------------------------------------------------ 2. the data flags as a section


@pytest.mark.parametrize("job", ["prepare", "train-student", "benchmark", "demo"])
def test_config_file_takes_a_data_section_and_top_level_own_data_keys(job, shop, tmp_path):
    root, flags = shop
    extra = ["--no-teacher"] if job == "train-student" else []
    by_flags, _ = job_parser(job)
    want = by_flags.parse_config([*_argv(flags), *extra])
    from pipelines.cli import with_dataset_flags

    want = with_dataset_flags(by_flags, want).dataset
    import yaml

    for i, data in enumerate([{"data": dict(flags)}, dict(flags)]):
        path = tmp_path / f"c{i}.yaml"
        path.write_text(yaml.safe_dump(data))
        parser, _ = job_parser(job)
        got = with_dataset_flags(parser, parser.parse_config(["--config", str(path), *extra]))
        assert got.dataset == want


def test_a_data_section_refuses_other_fields(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text("data: {dataset: x.csv, epochs: 3}\n")
    parser, _ = job_parser("train-student")
    with pytest.raises(SystemExit) as e:
        parser.parse_config(["--config", str(path)])
    assert e.value.code == 2
    assert "section data: unknown field(s) ['epochs']" in capsys.readouterr().err


# ------------------------------------------------------------ 3. --help and parser errors


@pytest.mark.parametrize("job", ["train-student", "generate-labels", "demo"])
def test_help_lists_each_flag_once_grouped(job, capsys):
    with pytest.raises(SystemExit):
        main([job, "--help"])
    out = capsys.readouterr().out
    flags = [w.rstrip(",") for line in out.splitlines() for w in line.split() if w.startswith("--")]
    assert not [f for f in flags if "_" in f.split("=")[0]], "an underscore twin is listed"
    assert "(default: None)" not in out
    assert "[OVERWRITE]" not in out and "[COLD_START]" not in out
    sections = re.split(r"\n(?=\S)", out)  # a heading starts a section at column 0
    data = next(s for s in sections if s.startswith("data:"))
    assert "--dataset" in data and "--items" in data and "--item-columns" in data
    assert any(s.startswith("output:") and "--out" in s for s in sections)
    assert any(s.startswith("threads:") and "--threads" in s for s in sections)
    if job == "train-student":
        assert "--overwrite, --no-overwrite" in out
        assert any(s.startswith("model:") for s in sections)
        assert any(s.startswith("loss:") for s in sections)
        assert "--threads THREADS     CPU threads (torch, faiss, BLAS) (default: 2)" in out


def test_underscore_spelling_is_still_accepted():
    parser, _ = job_parser("generate-labels")
    assert parser.parse_config(["--collab_memory_gb", "3"]).collab_memory_gb == 3.0


@pytest.mark.parametrize(
    "argv", [["prepare", "--bogus"], ["prepare", "--eval-users", "x"], ["nojob"]]
)
def test_parser_errors_are_one_line_and_a_hint(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) <= 2, lines
    assert lines[0].startswith("recdistill") and ": error: " in lines[0]
    assert "usage" not in lines[0]


# ------------------------------------------------------------ 4. serve --port 0


def test_serve_logs_the_port_the_os_picked(caplog):
    from fastapi import FastAPI

    from pipelines.serving.config import ServeConfig
    from pipelines.serving.serve import make_server

    cfg = ServeConfig(run="unused", host="127.0.0.1", port=0)
    server = make_server(FastAPI(), cfg, "model-x")
    caplog.set_level(logging.INFO, logger="pipelines.serving.serve")
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    for _ in range(200):
        if server.started:
            break
        time.sleep(0.05)
    try:
        line = next(r.getMessage() for r in caplog.records if "serving model-x" in r.getMessage())
        port = int(line.split("http://127.0.0.1:")[1].split()[0])
        assert port != 0
        socket.create_connection(("127.0.0.1", port), timeout=5).close()  # really listening
    finally:
        server.should_exit = True
        thread.join(10)


# ------------------------------------------------------------ 5. hints only for real folders


def test_summary_hints_only_at_folders_that_exist(tmp_path, monkeypatch):
    monkeypatch.setattr(demo_mod.prepare, "format_summary", lambda r: "prep")
    monkeypatch.setattr(demo_mod.benchmark, "format_summary", lambda r: "bench")
    report = {"prepare": {}, "demo": {"seconds": 1.0, "out": str(tmp_path)}}
    text = format_summary(report)
    assert f"--run {tmp_path}" in text and "cold" not in text
    (tmp_path / "cold").mkdir()
    assert f"--run {tmp_path / 'cold'}" in format_summary(report)


# ------------------------------------------------------------ 6. quiet logs


def test_cli_logging_quiets_faiss_and_hf_bars_off_a_terminal(tmp_path, monkeypatch, caplog):
    import huggingface_hub.utils as hub

    monkeypatch.setenv("HF_DATASETS_DISABLE_PROGRESS_BARS", "0")
    monkeypatch.setattr(sys, "stderr", open(tmp_path / "log.txt", "w"))  # noqa: SIM115
    try:
        hub.enable_progress_bars()
        main(
            ["prepare", "--dataset", DATASET, "--protocols", "random", "--out", str(tmp_path / "p")]
        )
        assert logging.getLogger("faiss.loader").level == logging.WARNING  # its INFO lines
        assert hub.are_progress_bars_disabled()
        import os

        assert os.environ["HF_DATASETS_DISABLE_PROGRESS_BARS"] == "1"
    finally:
        sys.stderr.close()
        hub.enable_progress_bars()


def test_unsorted_interactions_are_not_an_info_line(shop, caplog):
    from pipelines.data import load_dataset
    from pipelines.data.loaders import table_spec

    root, flags = shop
    spec = table_spec(**flags, users=None, user_columns=None)
    caplog.set_level(logging.INFO)
    load_dataset(spec)
    assert not [r for r in caplog.records if "not in time order" in r.getMessage()]


# ------------------------------------------------------------ 7. one collaborative fit


def test_demo_fits_the_collaborative_model_once_per_split(
    tmp_path, tiny_st_dir, monkeypatch, caplog
):
    """Every fit of the demo is of another split (prepare's protocols, the cold chain's):
    labels and benchmark read the chain's fit from the cache; each step logs start and end."""
    import pipelines.baselines.collab as collab

    keys: list[str] = []
    real = collab.fit_ease

    def counted(split, **kw):
        keys.append(collab.fit_key(split, "ease"))
        return real(split, **kw)

    monkeypatch.setattr(collab, "fit_ease", counted)
    small = {"max_seq_length": 32, "n_negatives": 10, "eval_users": 20, "threads": 1}
    cfg = DemoConfig(
        dataset=DATASET,
        teacher_model=str(tiny_st_dir),
        epochs=1,
        overrides={
            "labels": small,
            "cold_labels": {**small, "cold_negatives": 5},
            "cold_transductive_labels": {**small, "cold_negatives": 5},
            "temporal_labels": small,
        },  # fmt: skip
        out=str(tmp_path / "demo"),
    )
    caplog.set_level(logging.INFO, logger="pipelines.experiments.steps")
    demo_mod.run(cfg)
    assert keys and len(keys) == len(set(keys)), keys  # no split fit twice
    assert len(keys) <= 3  # prepare's random and temporal, the cold chain's cold_items
    done = [r.getMessage() for r in caplog.records if "] done in " in r.getMessage()]
    assert any(m.startswith("[labels] done in") for m in done)
