"""What each bench-scale stage's own outputs say (sizes, throughput, quality), read back
from the files its job wrote, and the per-stage rates in the issue's units."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from common.io import read_json
from pipelines.core.layout import RunLayout


def read_result(path: Path) -> dict | None:
    """A job's JSON file, or None where the job wrote none."""
    return read_json(path, "a JSON file written by a recdistill job") if path.exists() else None


def stage_outputs(stage: str, d: Path, res: dict, log: Path) -> dict[str, Any]:
    """What the stage's own output says: sizes, throughput, quality."""
    out: dict[str, Any] = {}
    run = RunLayout(d)
    if stage == "data":
        line = log.read_text().strip().splitlines()[-1]
        out = json.loads(line)
    elif stage == "prepare":
        stats = read_result(run.prepare / "stats.json") or {}
        out = {"protocols": stats.get("protocols")}
    elif stage == "labels":
        meta = _read_meta(run.labels)
        if meta:
            out = {
                "pairs": meta.get("n_pairs"),
                "users": meta.get("n_users"),
                "pairs_per_second_scoring": meta.get("pairs_per_second"),
                "pairs_per_second": (meta.get("n_pairs") or 0) / res["seconds"],
                "collab": meta.get("teacher", {}).get("collab") or meta.get("collab"),
                "mix_weights": meta.get("teacher", {}).get("mix", {}).get("weights"),
                "teacher_quality": meta.get("teacher_quality", {}).get("parts"),
            }
    elif stage.startswith("student"):
        m = read_result(run.student(stage) / "metrics.json")
        if m:
            out = {
                "epochs_run": m["epochs_run"],
                "train_seconds": m["train_seconds"],
                "valid": m["valid"],
                "params": m["params"],
            }
    elif stage == "compress":
        m = read_result(run.compressed / "compression.json")
        if m:
            out = {
                name: {k: v for k, v in step.items() if k in ("valid_ndcg@10", "params", "bytes")}
                for name, step in m.get("steps", {}).items()
            }
    elif stage == "benchmark":
        r = read_result(run.benchmark / "report.json")
        if r:
            out = {
                "models": {
                    k: {m: v.get(m) for m in ("ndcg@10", "recall@10", "users") if m in v}
                    for k, v in r.get("models", {}).items()
                },
                "indexes": {
                    kind: {
                        k: e.get(k)
                        for k in (
                            "recall@10_vs_exact",
                            "ndcg@10",
                            "qps_batch1",
                            "qps_batch256",
                            "p50_ms",
                            "p99_ms",
                            "bytes",
                            "build_seconds",
                            "items_per_second_indexed",
                        )
                    }
                    for kind, e in (r.get("indexes") or {}).items()
                },
                "evaluation": r.get("evaluation"),
            }
    return out


def _read_meta(folder: Path) -> dict | None:
    from pipelines.labels.schema import META_FILE

    return read_result(folder / META_FILE)


def with_rates(rows: dict) -> dict:
    """Per-stage throughput in the units the issue names, from the data stage's counts."""
    n = (rows.get("data", {}).get("outputs") or {}).get("interactions")
    train = (rows.get("data", {}).get("outputs") or {}).get("train")
    for stage, r in rows.items():
        o = r.get("outputs")
        if not o or r.get("rc"):
            continue
        if stage.startswith("student") and train:
            r["interactions_per_second"] = train * o["epochs_run"] / o["train_seconds"]
        if stage in ("data", "prepare") and n:
            r["interactions_per_second"] = n / r["seconds"]
    return rows
