"""Render a benchmark report dict as JSON, markdown tables and PNG plots.

The report dict (``pipelines.evaluation.report_schema.validate_report`` checks it)::

    {"dataset": {...}, "protocol": str,
     "models": {name: {"ndcg@10", "recall@10", "mrr@10", "params", "bytes",
                       "teacher_top10_overlap", "latency_ms_batch1"?, "ndcg@10_ci"?: [lo, hi]}},
     "indexes": {name: {"recall@10_vs_exact", "qps_batch1", "qps_batch256", "p50_ms", "p99_ms",
                        "bytes", "sweep"?: [{"param", "value"?, "recall", "qps"}]}}}

Required keys must be present; their value may be None (shown as "-"), e.g. a teacher overlap
for a model that has no teacher. The plots are drawn by ``pipelines.evaluation.plots``.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from common.io import atomic_write, write_text
from pipelines.evaluation.plots import is_missing as _missing
from pipelines.evaluation.plots import plot_cold_ndcg as plot_cold_ndcg
from pipelines.evaluation.plots import plot_quality_vs_bytes as plot_quality_vs_bytes
from pipelines.evaluation.plots import plot_quality_vs_latency as plot_quality_vs_latency
from pipelines.evaluation.plots import plot_recall_vs_qps as plot_recall_vs_qps
from pipelines.evaluation.plots import plots_for
from pipelines.evaluation.report_schema import ReportSchemaError as ReportSchemaError
from pipelines.evaluation.report_schema import is_number, validate_report

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------- formatting
def fmt_float(v: Any, digits: int = 4) -> str:
    return "-" if _missing(v) else f"{float(v):.{digits}f}"


def fmt_count(v: Any) -> str:
    """1234567 -> '1.23M'."""
    if _missing(v):
        return "-"
    v = float(v)
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(v) >= size:
            return f"{v / size:.3g}{unit}"
    return f"{v:.0f}"


def fmt_bytes(v: Any) -> str:
    """Bytes in binary units: 3355443 -> '3.2 MiB'."""
    if _missing(v):
        return "-"
    v = float(v)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(v) < 1024 or unit == "GiB":
            return f"{v:.0f} {unit}" if unit == "B" else f"{v:.1f} {unit}"
        v /= 1024
    raise AssertionError("unreachable")


def fmt_qps(v: Any) -> str:
    return "-" if _missing(v) else f"{float(v):,.0f}"


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def headline_table(report: dict[str, Any]) -> str:
    """Markdown table of the models (one row each, in the dict's order)."""
    header = ["model", "NDCG@10", "95% CI", "Recall@10", "MRR@10", "teacher top-10 overlap"]
    header += ["params", "size", "latency ms (batch 1)"]
    rows = []
    for name, m in report["models"].items():
        ci = m.get("ndcg@10_ci")
        ci_s = "-" if ci is None else f"[{fmt_float(ci[0])}, {fmt_float(ci[1])}]"
        rows.append(
            [
                str(name),
                fmt_float(m["ndcg@10"]),
                ci_s,
                fmt_float(m["recall@10"]),
                fmt_float(m["mrr@10"]),
                fmt_float(m["teacher_top10_overlap"], 3),
                fmt_count(m["params"]),
                fmt_bytes(m["bytes"]),
                fmt_float(m.get("latency_ms_batch1"), 3),
            ]
        )
    return _md_table(header, rows)


# (header, segment, metric) per column; a model that cannot score the segment of the first
# column shows "cannot score" there and "-" in that segment's other columns
COLD_COLUMNS = (
    ("cold NDCG@20", "cold", "ndcg@20"),
    ("95% CI", "cold", "ndcg@20_ci"),
    ("cold Recall@20", "cold", "recall@20"),
    ("cold NDCG@10", "cold", "ndcg@10"),
    ("cold transductive NDCG@20", "cold_transductive", "ndcg@20"),
    ("warm NDCG@10", "warm", "ndcg@10"),
    ("all NDCG@10", "all", "ndcg@10"),
    ("all NDCG@20", "all", "ndcg@20"),
)
NEW_USER_COLUMNS = (
    ("new-user NDCG@20", "new_users", "ndcg@20"),
    ("95% CI", "new_users", "ndcg@20_ci"),
    ("Recall@20", "new_users", "recall@20"),
    ("NDCG@10", "new_users", "ndcg@10"),
    ("MRR@10", "new_users", "mrr@10"),
)


def segment_table(
    report: dict[str, Any], columns: tuple[tuple[str, str, str], ...], cost: bool = False
) -> str:
    """Markdown table of each model's per-segment metrics (``models[name]["segments"]``),
    one column per (header, segment, metric); ``cost`` adds params and size."""
    header = ["model", *(h for h, _, _ in columns)] + (["params", "size"] if cost else [])
    rows = []
    for name, m in report["models"].items():
        segs = m.get("segments") or {}
        row = [str(name)]
        for i, (_, seg, key) in enumerate(columns):
            v = segs.get(seg)
            if v is None:
                row.append("cannot score" if i == 0 else "-")
            elif key.endswith("_ci"):
                ci = v.get(key)
                row.append("-" if ci is None else f"[{fmt_float(ci[0])}, {fmt_float(ci[1])}]")
            else:
                row.append(fmt_float(v.get(key)))
        if cost:
            row += [fmt_count(m.get("params")), fmt_bytes(m.get("bytes"))]
        rows.append(row)
    return _md_table(header, rows)


def cold_table(report: dict[str, Any]) -> str:
    """A ``cold_items`` report's models on the cold, warm and all segments (and the
    transductive cold segment where any transductive student was given)."""
    given = (report.get("cold_protocol") or {}).get("transductive_models")
    cols = tuple(col for col in COLD_COLUMNS if given or col[1] != "cold_transductive")
    return segment_table(report, cols, cost=True)


def new_users_table(report: dict[str, Any]) -> str:
    """A ``cold_items`` report's models on the new-user segment."""
    return segment_table(report, NEW_USER_COLUMNS)


def cold_comparisons(report: dict[str, Any], segment: str = "cold") -> list[str]:
    """One line per comparison on ``segment`` ("cold" or "new_users"): ratio, paired
    difference and its interval."""
    lines = []
    label = {"cold": "cold", "cold_transductive": "transductive cold", "new_users": "new-user"}
    label = label[segment]
    for name, v in (report.get("comparisons") or {}).items():
        if f"{segment}_ndcg@20_ratio" not in v:
            continue
        lo, hi = v[f"{segment}_ndcg@20_diff_ci"]
        pair = name.split(":", 1)[-1].replace("_vs_", " vs ")
        lines.append(
            f"- {pair}: {label} NDCG@20 ratio {fmt_float(v[f'{segment}_ndcg@20_ratio'], 3)}, "
            f"difference {v[f'{segment}_ndcg@20_diff']:+.4f} (95% paired bootstrap [{lo:+.4f}, {hi:+.4f}])"
        )
    return lines


def index_table(report: dict[str, Any]) -> str:
    """Markdown table of the index settings."""
    header = ["index", "recall@10 vs exact", "QPS batch 1", "QPS batch 256", "p50 ms", "p99 ms"]
    header.append("size")
    rows = [
        [
            str(name),
            fmt_float(m["recall@10_vs_exact"]),
            fmt_qps(m["qps_batch1"]),
            fmt_qps(m["qps_batch256"]),
            fmt_float(m["p50_ms"], 3),
            fmt_float(m["p99_ms"], 3),
            fmt_bytes(m["bytes"]),
        ]
        for name, m in report["indexes"].items()
    ]
    return _md_table(header, rows)


def render_markdown(report: dict[str, Any], plots: list[str] | None = None) -> str:
    """The whole ``report.md`` text; ``plots`` are PNG file names to embed."""
    parts = ["# recdistill report", ""]
    if report["dataset"]:
        parts += ["## Dataset", ""]
        parts += [f"- **{k}**: {_fmt_value(v)}" for k, v in report["dataset"].items()]
        parts.append("")
    parts += ["## Protocol", "", report["protocol"] or "-", ""]
    ev = report.get("evaluation")
    if ev:
        parts += ["## Evaluation users", ""]
        if "text" in ev:  # one set of test users
            parts.append(f"- {ev['text']}, each over the full catalogue")
            if ev.get("teacher_note"):
                parts.append(f"- {ev['teacher_note']}")
        else:  # per cold-report segment
            parts += [f"- **{seg}**: {e['text']}" for seg, e in ev.items()]
        parts.append("")
    if report["protocol"] == "cold_items" and report["models"]:
        parts += _cold_sections(report)
    parts += ["## Models", ""]
    parts += [headline_table(report) if report["models"] else "(no models)", ""]
    unchecked = [n for n, m in report["models"].items() if m.get("provenance") == "unchecked"]
    if unchecked:
        parts += [
            f"Note: {', '.join(unchecked)} recorded no dataset or split fingerprint and were not "
            "checked against this data (--allow-unchecked).",
            "",
        ]
    comp = distilled_minus_hard_line(report)
    if comp:
        parts += [comp, ""]
    parts += teacher_vs_hard_lines(report) + head_tail_section(report)
    parts += _teacher_section(report) + _index_sections(report)
    if plots:
        parts += ["## Plots", ""]
        parts += [f"![{Path(p).stem}]({Path(p).name})" for p in plots]
        parts.append("")
    return "\n".join(parts)


def distilled_minus_hard_line(report: dict[str, Any]) -> str | None:
    """The distilled student against the hard one (``comparisons``), or None."""
    comp = (report.get("comparisons") or {}).get("distilled_minus_hard_ndcg@10")
    if not comp:
        return None
    return (
        f"Distilled minus hard-only NDCG@10: {comp['mean']:+.4f} ({comp['relative']:+.1%}), "
        f"95% paired bootstrap over users [{comp['ci'][0]:+.4f}, {comp['ci'][1]:+.4f}]."
    )


HEAD_TAIL_COLUMNS = (
    ("head NDCG@10", "head", "ndcg@10"),
    ("head Recall@10", "head", "recall@10"),
    ("tail NDCG@10", "tail", "ndcg@10"),
    ("tail Recall@10", "tail", "recall@10"),
)


def head_tail_section(report: dict[str, Any]) -> list[str]:
    """The warm test targets split by train popularity (``report["head_tail"]``)."""
    ht = report.get("head_tail")
    if not ht or not report["models"]:
        return []
    return [
        "## Head and tail",
        "",
        f"The {ht['segment']} targets split by train popularity: head = the "
        f"{ht['head_items']} items that hold the top {ht['head_share']:.0%} of the train "
        f"interactions ({ht['head_train_interactions']} of {ht['train_interactions']}), tail = "
        f"the other {ht['tail_items']} items; {ht['head_targets']} head and "
        f"{ht['tail_targets']} tail targets. Each model ranks the whole catalogue as above; "
        "only which targets count changes (users with a target on that side).",
        "",
        segment_table(report, HEAD_TAIL_COLUMNS),
        "",
    ]


def teacher_vs_hard_lines(report: dict[str, Any]) -> list[str]:
    """A plain statement of the teacher against the hard student on validation, and the
    distilled student's grid choice (``report["teacher_vs_hard"]``)."""
    tv = report.get("teacher_vs_hard")
    if not tv:
        return []
    t, h, lines = tv.get("teacher"), tv.get("student_hard"), ["## Teacher vs hard student", ""]
    if t and h:
        verdict = "WEAKER than" if tv["teacher_weaker"] else "at least as strong as"
        lines.append(
            f"On validation the teacher is {verdict} the hard student: NDCG@10 "
            f"{fmt_float(t['ndcg@10'])} ({t['users']} users, its saved top-k) vs "
            f"{fmt_float(h['ndcg@10'])} ({h['users']} users, the hard student's metrics.json); "
            "both over the whole catalogue, train items excluded."
        )
    else:
        lines.append("Teacher vs hard student on validation: not measured (no teacher top-k "
                     "or no hard student metrics.json).")  # fmt: skip
    sel = tv.get("selection")
    if sel:
        ch = sel["chosen"]
        grid = ", ".join(
            f"{g['scale']:g}/T{g['temperature']:g}: {fmt_float(g['valid_ndcg@10'])}"
            for g in sel["grid"]
        )
        won = (" Scale 0 won: the distilled student is the hard student (the teacher did not "
               "help on validation).") if sel["zero_won"] else ""  # fmt: skip
        lines.append(
            f"\nDistillation chosen on validation NDCG@10 (scale/temperature: NDCG@10): {grid}; "
            f"chosen scale {ch['scale']:g}, temperature {ch['temperature']:g}.{won}"
        )
    return lines + [""]


def _cold_sections(report: dict[str, Any]) -> list[str]:
    parts = ["## Cold start: cold, warm and all segments", ""]
    parts += [
        f"{cold_rule_text(report.get('cold_protocol') or {})} warm: the warm test part over "
        "the warm items; all: both over the whole catalogue. Intervals: 95% bootstrap over "
        "users.",
        "",
        cold_table(report),
        "",
    ]
    parts += cold_comparisons(report) + cold_comparisons(report, "cold_transductive") + [""]
    if any((m.get("segments") or {}).get("new_users") for m in report["models"].values()):
        parts += ["## Cold start: new users", ""]
        parts += [
            "Users with no training interaction at all, given their first 5 warm "
            "interactions (by time) as a history at query time; they rank the warm items "
            "and the targets are the rest of their warm interactions. The students encode "
            "them from the history alone (no user id).",
            "",
            new_users_table(report),
            "",
        ]
        parts += cold_comparisons(report, "new_users") + [""]
    return parts


def cold_rule_text(proto: dict[str, Any]) -> str:
    """What the cold columns of a ``cold_items`` report measure (its ``cold_protocol``)."""
    if proto.get("rule", "aldi") == "aldi":
        ranked = ("each user ranks the cold-validation and cold-test items together, its "
                  "other known positives excluded (ALDI's rule)")  # fmt: skip
    else:
        ranked = "each user ranks the cold-test items alone (rule cold_test_only)"
    setting = proto.get("setting", "inductive")
    text = (f"cold: {ranked}; targets: its cold-test items; the students are {setting}: "
            + ("the cold-test items were in no label, candidate or negative of their training."
               if setting == "inductive" else
               "the cold-test items were known to the label job, without interactions."))  # fmt: skip
    if proto.get("transductive_models"):
        text += (" cold transductive: the same ranking by students trained with the cold-test "
                 "items in their catalogue (references and the teacher keep their cold score).")  # fmt: skip
    return text


def _teacher_section(report: dict[str, Any]) -> list[str]:
    tq = report.get("teacher_quality")
    if not (tq and tq.get("parts")):
        return []
    parts = [
        "## Teacher parts",
        "",
        f"What each part of the teacher knows on its own, and the mix, on {tq.get('validation_pairs', '?')} "
        f"validation pairs of {tq.get('users', '?')} users (AUC: validation positives vs sampled "
        "unseen items; NDCG@10: ranking each user's validation candidates).",
        "",
    ]
    weights = (report["models"].get("teacher") or {}).get("mix")
    if weights:
        parts += [f"Mix weights (chosen on validation): {weights}", ""]
    rows = [
        [n, fmt_float(q.get("auc")), fmt_float(q.get("list_ndcg@10"))]
        for n, q in tq["parts"].items()
    ]
    return parts + [_md_table(["part", "AUC", "list NDCG@10"], rows), ""]


def _index_sections(report: dict[str, Any]) -> list[str]:
    parts = ["## Indexes", ""]
    parts += [index_table(report) if report["indexes"] else "(no indexes)", ""]
    sweeps = {n: m["sweep"] for n, m in report["indexes"].items() if m.get("sweep")}
    for name, points in sweeps.items():
        parts += [f"Sweep for `{name}`:", ""]
        rows = [[_sweep_label(p), fmt_float(p["recall"]), fmt_qps(p["qps"])] for p in points]
        parts += [_md_table(["setting", "recall@10", "QPS"], rows), ""]
    return parts


def _fmt_value(v: Any) -> str:
    if is_number(v) and not isinstance(v, (int, np.integer)):
        return fmt_float(v)
    return "-" if v is None else str(v)


def _sweep_label(p: dict[str, Any]) -> str:
    return f"{p['param']}={p['value']}" if "value" in p else str(p["param"])


# ------------------------------------------------------------------------ write
def _jsonable(o: Any) -> Any:
    """numpy scalars/arrays -> Python; non-finite floats -> None (strict JSON)."""
    if isinstance(o, dict):
        return {str(k): _jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_jsonable(v) for v in o]
    if isinstance(o, np.ndarray):
        return _jsonable(o.tolist())
    if isinstance(o, np.generic):
        o = o.item()
    if isinstance(o, float) and not math.isfinite(o):
        return None
    return o


def write_report(report: dict[str, Any], out_dir: str | os.PathLike) -> list[Path]:
    """Validate, then write report.json, the PNG plots that have data, and report.md.

    Every file is written atomically. Returns the written paths (json, plots..., md).
    """
    validate_report(report)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    text = json.dumps(_jsonable(report), indent=2, allow_nan=False)
    written = [write_text(out / "report.json", text)]
    plots = []
    for fname, make in plots_for(report).items():
        fig = make(report)  # laid out already (its labels are placed on that layout)
        if fig is None:
            logger.info("skipping %s: no data to plot", fname)
            continue
        written.append(atomic_write(out / fname, lambda p, f=fig: f.savefig(p, format="png")))
        plots.append(fname)
    md = render_markdown(report, plots)
    written.append(write_text(out / "report.md", md))
    logger.info("wrote report to %s (%d files)", out, len(written))
    return written
