"""bench-scale's growth fits and Markdown report (see :mod:`pipelines.experiments.bench_scale`)."""

from __future__ import annotations

import math
from typing import Any, Literal, get_args

import numpy as np

Stage = Literal[
    "data", "prepare", "labels", "student_hard", "student_distilled", "compress", "benchmark"
]
STAGES: tuple[str, ...] = get_args(Stage)

# the settings a size's stages ran with (a rerun of some sizes may use others)
SIZE_SETTINGS = (
    "epochs", "student_batch_size", "eval_users", "topk_users", "n_negatives", "user_encoding",
    "finetune_epochs", "finetune_users", "threads", "embedding_precision", "label_engine",
    "label_actors", "train_workers",
)  # fmt: skip
# what a size recorded before a setting existed ran with
SETTING_BEFORE = {
    "embedding_precision": "fp32", "label_engine": "local", "label_actors": 2, "train_workers": 1,
    "finetune_users": 0,
}  # fmt: skip


def size_settings(c: Any, items: int) -> dict[str, Any]:
    """``SIZE_SETTINGS`` of a size with ``items`` items: the config's (a ``BenchScaleConfig``),
    plus the labels' encoder precision: 'bf16' from ``c.bf16_from_items`` items up where the
    CPU has native bf16 (emulated bf16 is slower than fp32), else 'fp32'."""
    from llm_teacher.embedding import bf16_native

    big = c.bf16_from_items
    own = {"embedding_precision": "bf16" if big and items >= big and bf16_native() else "fp32"}
    return {k: own[k] if k in own else getattr(c, k) for k in SIZE_SETTINGS}


def fit_exponent(x: list[float], y: list[float]) -> float | None:
    """b of ``y = a * x^b`` by least squares on log-log; None with fewer than 2 points."""
    pts = [(a, b) for a, b in zip(x, y) if a and b and a > 0 and b > 0]
    if len(pts) < 2 or len({a for a, _ in pts}) < 2:
        return None
    lx = np.log([a for a, _ in pts])
    ly = np.log([b for _, b in pts])
    return float(np.polyfit(lx, ly, 1)[0])


# the settings that change a stage's cost per interaction: a growth fit mixes no two of them
STAGE_SETTINGS = {
    "labels": (
        "topk_users",
        "n_negatives",
        "user_encoding",
        "embedding_precision",
        "label_engine",
        "label_actors",
    ),
    "student_hard": ("epochs", "student_batch_size", "train_workers"),
    "student_distilled": ("epochs", "student_batch_size", "train_workers"),
    "compress": ("epochs", "student_batch_size", "finetune_epochs", "finetune_users"),
    "benchmark": ("eval_users",),
    "prepare": ("eval_users",),
}


# stages whose cost is mostly the collaborative fit: EASE^R's and ALS's costs grow differently
COLLAB_STAGES = ("prepare", "labels", "benchmark")


def collab_kind(rows: dict) -> str | None:
    """The collaborative model a size's chain used ("ease" or "als"), as its prepare and
    labels stages recorded it; None if neither says."""
    prep = (rows.get("prepare") or {}).get("outputs") or {}
    for entry in (prep.get("protocols") or {}).values():
        for part in entry.values():
            if isinstance(part, dict) and part.get("kind"):
                return part["kind"]
    labels = ((rows.get("labels") or {}).get("outputs") or {}).get("collab") or {}
    return labels.get("kind")


def growth(sizes: dict, size_config: dict | None = None) -> dict:
    """Per stage, the fitted exponent of seconds and of peak RSS against interactions, over
    the sizes whose settings for that stage (``STAGE_SETTINGS``, plus threads, plus the
    collaborative model for ``COLLAB_STAGES``) match those of the largest size that finished
    it; the others are named in ``left_out``."""
    size_config = size_config or {}
    out = {}
    for stage in STAGES:
        done = []
        for size, rows in sizes.items():
            n = (rows.get("data", {}).get("outputs") or {}).get("interactions")
            r = rows.get(stage)
            if n and r and r.get("rc") == 0:
                done.append((n, size, r))
        if not done:
            continue
        keys = (*STAGE_SETTINGS.get(stage, ()), "threads")
        settings = {
            size: tuple(size_config.get(size, {}).get(k, SETTING_BEFORE.get(k)) for k in keys)
            for _, size, _ in done
        }
        if stage in COLLAB_STAGES:
            keys = (*keys, "collaborative model")
            settings = {s: (*v, collab_kind(sizes[s])) for s, v in settings.items()}
        ref = settings[max(done, key=lambda d: d[0])[1]]
        used = [(n, size, r) for n, size, r in done if settings[size] == ref]
        out[stage] = {
            "points": len(used),
            "sizes": [size for _, size, _ in used],
            "seconds_exponent": fit_exponent(
                [n for n, *_ in used], [r["seconds"] for *_, r in used]
            ),
            "rss_exponent": fit_exponent(
                [n for n, *_ in used], [r["peak_rss_gb"] for *_, r in used]
            ),
        }
        left = [size for _, size, _ in done if settings[size] != ref]
        if left:
            out[stage]["left_out"] = {
                "sizes": left,
                "why": f"other {', '.join(keys)} than the largest size",
            }
    return out


def _fmt(v, spec=".0f") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return format(v, spec)


def format_report(result: dict) -> str:
    lines = ["# Scale benchmark", ""]
    lines.append(
        "Synthetic data (`recdistill bench-scale`), each stage in its own process; wall time, "
        "peak RSS of that process, throughput from the job's own output."
    )
    lines.append("")
    lines.append("| size | stage | rc | seconds | peak RSS GB | throughput |")
    lines.append("|---|---|---:|---:|---:|---|")
    for size, rows in result["sizes"].items():
        for stage, r in rows.items():
            if "skipped" in r:
                lines.append(f"| {size} | {stage} | - | - | - | skipped: {r['skipped']} |")
                continue
            lines.append(
                f"| {size} | {stage} | {r['rc']} | {_fmt(r['seconds'])} | "
                f"{_fmt(r['peak_rss_gb'], '.2f')} | {_throughput(stage, r)} |"
            )
    if result.get("size_config"):
        keys = list(SIZE_SETTINGS)
        lines += ["", "Settings each size ran with:", ""]
        lines.append("| size | " + " | ".join(keys) + " |")
        lines.append("|---|" + "---:|" * len(keys))
        for size, conf in result["size_config"].items():
            lines.append(f"| {size} | " + " | ".join(str(conf.get(k)) for k in keys) + " |")
    lines += ["", "Growth with interactions (fitted exponent b of `y ~ n^b`):", ""]
    lines.append("| stage | sizes | seconds b | peak RSS b | left out (other settings) |")
    lines.append("|---|---:|---:|---:|---|")
    for stage, g in result.get("growth", {}).items():
        left = ", ".join((g.get("left_out") or {}).get("sizes", []))
        lines.append(
            f"| {stage} | {g['points']} | {_fmt(g['seconds_exponent'], '.2f')} | "
            f"{_fmt(g['rss_exponent'], '.2f')} | {left} |"
        )
    q = []
    for size, rows in result["sizes"].items():
        o = (rows.get("benchmark") or {}).get("outputs") or {}
        ev = o.get("evaluation") or {}
        for name, m in (o.get("models") or {}).items():
            users = ev.get("teacher_users") if name == "teacher" else ev.get("users")
            q.append(
                f"| {size} | {name} | {_fmt(m.get('ndcg@10'), '.4f')} | {users} of {ev.get('of')} |"
            )
    if q:
        lines += ["", "Quality (test NDCG@10, full catalogue, seeded sample of test users):", ""]
        lines += ["| size | model | NDCG@10 | users |", "|---|---|---:|---:|", *q]
    return "\n".join(lines) + "\n"


def _throughput(stage: str, r: dict) -> str:
    o = r.get("outputs") or {}
    if stage == "labels" and o.get("pairs"):
        return f"{o['pairs_per_second']:,.0f} pairs/s ({o['pairs']:,} pairs)"
    if r.get("interactions_per_second"):
        return f"{r['interactions_per_second']:,.0f} interactions/s"
    if stage == "benchmark" and o.get("indexes"):
        flat = o["indexes"].get("flat") or next(iter(o["indexes"].values()))
        return (
            f"{_fmt(flat.get('items_per_second_indexed'), ',.0f')} items/s indexed, "
            f"{_fmt(flat.get('qps_batch1'), ',.0f')} queries/s (flat, batch 1)"
        )
    return ""
