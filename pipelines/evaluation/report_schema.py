"""The benchmark report's schema: what ``report.json`` must hold (see
``pipelines.evaluation.report``), checked before anything is written."""

from __future__ import annotations

from typing import Any

import numpy as np

MODEL_KEYS = ("ndcg@10", "recall@10", "mrr@10", "params", "bytes", "teacher_top10_overlap")
MODEL_OPTIONAL = ("latency_ms_batch1", "ndcg@10_ci")
INDEX_KEYS = ("recall@10_vs_exact", "qps_batch1", "qps_batch256", "p50_ms", "p99_ms", "bytes")
SWEEP_KEYS = ("param", "recall", "qps")
TOP_KEYS = ("dataset", "protocol", "models", "indexes")


class ReportSchemaError(ValueError):
    """The report dict lacks a required key or holds a value of the wrong type."""


def is_number(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


def _check_number(where: str, key: str, v: Any) -> None:
    if v is not None and not is_number(v):
        raise ReportSchemaError(f"{where}[{key!r}]={v!r}: expected a number or None")


def validate_report(report: Any) -> None:
    """Raise :class:`ReportSchemaError` naming the first missing key or badly typed value."""
    if not isinstance(report, dict):
        raise ReportSchemaError(f"report: expected a dict, got {type(report).__name__}")
    for key in TOP_KEYS:
        if key not in report:
            raise ReportSchemaError(f"report: missing key {key!r} (required: {list(TOP_KEYS)})")
    if not isinstance(report["dataset"], dict):
        raise ReportSchemaError("report['dataset']: expected a dict")
    if not isinstance(report["protocol"], str):
        raise ReportSchemaError(f"report['protocol']={report['protocol']!r}: expected a str")
    for section, keys in (("models", MODEL_KEYS), ("indexes", INDEX_KEYS)):
        entries = report[section]
        if not isinstance(entries, dict):
            raise ReportSchemaError(f"report[{section!r}]: expected a dict of name -> metrics")
        for name, metrics in entries.items():
            where = f"report[{section!r}][{name!r}]"
            if not isinstance(metrics, dict):
                raise ReportSchemaError(f"{where}: expected a dict of metrics")
            for key in keys:
                if key not in metrics:
                    raise ReportSchemaError(
                        f"{where}: missing key {key!r} (required: {list(keys)})"
                    )
                _check_number(where, key, metrics[key])
            if section == "models":
                _check_number(where, "latency_ms_batch1", metrics.get("latency_ms_batch1"))
                ci = metrics.get("ndcg@10_ci")
                if ci is not None and not (
                    isinstance(ci, (list, tuple)) and len(ci) == 2 and all(map(is_number, ci))
                ):
                    raise ReportSchemaError(f"{where}['ndcg@10_ci']={ci!r}: expected [lo, hi]")
            else:
                _validate_sweep(where, metrics.get("sweep"))


def _validate_sweep(where: str, sweep: Any) -> None:
    if sweep is None:
        return
    if not isinstance(sweep, list):
        raise ReportSchemaError(f"{where}['sweep']: expected a list of points")
    for i, point in enumerate(sweep):
        if not isinstance(point, dict):
            raise ReportSchemaError(f"{where}['sweep'][{i}]: expected a dict")
        for key in SWEEP_KEYS:
            if key not in point:
                raise ReportSchemaError(
                    f"{where}['sweep'][{i}]: missing key {key!r} (required: {list(SWEEP_KEYS)})"
                )
        _check_number(f"{where}['sweep'][{i}]", "recall", point["recall"])
        _check_number(f"{where}['sweep'][{i}]", "qps", point["qps"])
