"""`recdistill bench-serve`: flags passed through to the servers it launches, the stack
recorded (a tiny run, a few requests: checks what is written, never how fast)."""

from __future__ import annotations

import json

import pytest

from pipelines.cli import job_parser, main
from pipelines.experiments.bench_serve import BenchServeConfig, command


def test_serve_flags_reach_the_served_and_naive_peers_only():
    parser, _ = job_parser("bench-serve")
    c = parser.parse_config(["--run", "r", "--serve-flags", "--workers 2 --max-k 50"])
    assert c.serve_flags == "--workers 2 --max-k 50"
    for kind in ("served", "naive"):
        assert command(kind, c, 1234)[-4:] == ["--workers", "2", "--max-k", "50"]
    assert "--workers" not in command("empty", c, 1234)
    with pytest.raises(ValueError, match="serve_flags"):
        BenchServeConfig(serve_flags='--workers "2')


def test_bench_serve_records_its_flags_and_the_stack(run_dir, tmp_path, capsys):
    out = tmp_path / "bench"
    main(
        ["bench-serve", "--run", str(run_dir), "--out", str(out), "--concurrency", "2",
         "--requests", "6", "--seconds", "2", "--warmup", "1", "--batch-size", "2",
         "--reload-seconds", "0", "--n-inprocess", "4", "--serve-flags", "--max-k 50"]
    )  # fmt: skip
    got = json.loads((out / "bench_serve.json").read_text())
    assert got["config"]["serve_flags"] == "--max-k 50"
    assert set(got["stack"]) == {"loop", "http"}
    if _importable("uvloop"):
        assert got["stack"]["loop"] == "uvloop"
    for kind in ("served", "naive", "empty"):
        assert got["http"][kind]["single"]["2"]["errors"] == 0


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None
