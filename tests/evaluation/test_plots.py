"""The benchmark report's plots read well: no two labels overlap, the teacher is drawn, a cold
report plots its headline cold NDCG@20 with intervals from 0, and the QPS plot names the
catalogue size and the sweep parameter (issue 27). Figures are inspected on the Agg canvas."""

from __future__ import annotations

import itertools

import pytest
from matplotlib.text import Text

from pipelines.evaluation import report as rep


def _model(ndcg: float, latency: float | None, size: int | None, **extra) -> dict:
    m = {
        "ndcg@10": ndcg,
        "recall@10": ndcg * 0.8,
        "mrr@10": ndcg * 1.5,
        "params": None if size is None else size // 4,
        "bytes": size,
        "teacher_top10_overlap": None,
        "latency_ms_batch1": latency,
        "ndcg@10_ci": [ndcg - 0.015, ndcg + 0.015],
    }
    return {**m, **extra}


def _index(recall: float, qps: float, sweep: list | None = None) -> dict:
    m = {
        "recall@10_vs_exact": recall,
        "qps_batch1": qps,
        "qps_batch256": qps * 4,
        "p50_ms": 1000 / qps,
        "p99_ms": 1500 / qps,
        "bytes": 130_000,
    }
    return m if sweep is None else {**m, "sweep": sweep}


def _sweep(param: str, points: list[tuple[int, float, float]]) -> list[dict]:
    return [{"param": param, "value": v, "recall": r, "qps": q} for v, r, q in points]


def make_report(items: int = 1682) -> dict:
    """Shaped like the demo's report.json: two students close in latency, NDCG and size."""
    return {
        "dataset": {"name": "tiny", "users": 943, "items": items},
        "protocol": "random",
        "models": {
            "popularity": _model(0.1457, 0.0024, 6_728),
            "ease": _model(0.3374, 0.0431, 11_316_496),
            "teacher": _model(0.3374, None, None),
            "student_hard": _model(0.3083, 0.0874, 1_710_988),
            "student_distilled": _model(0.3290, 0.0869, 1_710_988),
            "student_pruned": _model(0.3298, 0.0838, 922_508),
            "student_int8": _model(0.3276, 0.1295, 424_412),
            "student_int8_fast": _model(0.3282, 0.0827, 878_348),
        },
        "indexes": {
            "flat": _index(1.0, 46_156.0),
            "ivf_sq8": _index(
                0.9954,
                40_960.0,
                _sweep(
                    "nprobe",
                    [
                        (1, 0.54, 61_984),
                        (4, 0.90, 55_478),
                        (16, 0.9947, 48_020),
                        (32, 0.9954, 42_350),
                    ],
                ),  # fmt: skip
            ),
            "hnsw_sq8": _index(
                0.9933,
                23_437.0,
                _sweep(
                    "ef_search",
                    [
                        (8, 0.898, 51_954),
                        (16, 0.9659, 48_331),
                        (64, 0.9928, 32_471),
                        (128, 0.9933, 23_203),
                    ],
                ),  # fmt: skip
            ),
        },
    }


def _cold(ndcg20: float | None) -> dict | None:
    if ndcg20 is None:
        return None
    seg = {"ndcg@10": ndcg20 * 0.9, "ndcg@20": ndcg20, "recall@10": 0.3, "recall@20": 0.5}
    return {**seg, "mrr@10": 0.6, "ndcg@20_ci": [ndcg20 - 0.02, ndcg20 + 0.015], "users": 836}


def make_cold_report() -> dict:
    """A cold_items report: top-level metrics are the "all" segment's; popularity and EASE^R
    cannot score cold items."""
    report = make_report()
    report["protocol"] = "cold_items"
    report["dataset"]["split"] = {"cold_test_items": 168, "users": {"cold": 836}}
    cold = {"popularity": None, "ease": None, "teacher": 0.4457, "student_hard": 0.2100}
    cold |= {"student_distilled": 0.4536, "student_pruned": 0.45, "student_int8": 0.4455}
    cold |= {"student_int8_fast": 0.4460}
    for name, m in report["models"].items():
        m["segments"] = {"cold": _cold(cold[name]), "all": _cold(m["ndcg@10"] * 1.1)}
    return report


def _boxes(fig) -> dict:
    """Label text -> its box in pixels as drawn (the text alone, without a leader line)."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[0]
    return {t.get_text(): Text.get_window_extent(t, renderer) for t in ax.texts if t.get_text()}


def _assert_apart(boxes: dict) -> None:
    for (a, ba), (b, bb) in itertools.combinations(boxes.items(), 2):
        apart = ba.x1 <= bb.x0 or bb.x1 <= ba.x0 or ba.y1 <= bb.y0 or bb.y1 <= ba.y0
        assert apart, f"labels {a!r} {tuple(ba.bounds)} and {b!r} {tuple(bb.bounds)} overlap"


def _save(fig, path) -> None:
    fig.savefig(path, format="png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


QUALITY = [rep.plot_quality_vs_latency, rep.plot_quality_vs_bytes]


@pytest.mark.parametrize("plot", QUALITY, ids=["latency", "bytes"])
def test_quality_plots_place_labels_apart_and_inside_the_axes(plot, tmp_path) -> None:
    report = make_report()
    fig = plot(report)
    _save(fig, tmp_path / f"{plot.__name__}.png")
    boxes = _boxes(fig)
    students = [n for n in report["models"] if n.startswith("student")]
    assert set(students) <= set(boxes)  # every plotted model is labelled
    _assert_apart(boxes)
    axes_box = fig.axes[0].bbox
    for name, b in boxes.items():
        assert axes_box.x0 <= b.x0 and b.x1 <= axes_box.x1, name
        assert axes_box.y0 <= b.y0 and b.y1 <= axes_box.y1, name


@pytest.mark.parametrize("plot", QUALITY, ids=["latency", "bytes"])
def test_quality_plots_draw_the_teacher_as_a_reference_line(plot, tmp_path) -> None:
    report = make_report()
    fig = plot(report)
    _save(fig, tmp_path / f"{plot.__name__}.png")
    ax = fig.axes[0]
    flat = [ln for ln in ax.lines if set(ln.get_ydata()) == {0.3374} and len(ln.get_ydata()) == 2]
    assert flat, "no horizontal line at the teacher's NDCG@10"
    assert any(t.get_text().startswith("teacher 0.337") for t in ax.texts)
    lo, hi = ax.get_ylim()
    assert lo < 0.3374 < hi
    assert "NDCG@10" in ax.get_ylabel() and "1,682 items" in ax.get_title()


def test_cold_report_plots_its_headline_cold_ndcg20_with_intervals_from_zero(tmp_path) -> None:
    report = make_cold_report()
    names = sorted(p.name for p in rep.write_report(report, tmp_path / "out"))
    # the quality plots would show the "all" NDCG@10 (top-level metrics), not the headline
    assert names == ["cold_ndcg20.png", "recall_vs_qps.png", "report.json", "report.md"]
    assert "![cold_ndcg20](cold_ndcg20.png)" in (tmp_path / "out" / "report.md").read_text()
    fig = rep.plot_cold_ndcg(report)
    _save(fig, tmp_path / "cold.png")
    ax = fig.axes[0]
    assert ax.get_ylim()[0] == 0
    assert "NDCG@20" in ax.get_ylabel() and "168 cold test items" in ax.get_title()
    assert "1,682 items" in ax.get_title()
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    assert ticks == list(report["models"])
    heights = {ticks[round(p.get_x() + p.get_width() / 2)]: p.get_height() for p in ax.patches}
    scorable = {n: m["segments"]["cold"] for n, m in report["models"].items()}
    scorable = {n: s for n, s in scorable.items() if s is not None}
    assert heights == pytest.approx({n: s["ndcg@20"] for n, s in scorable.items()})
    # one error bar per scored model, spanning its 95% interval
    spans = sorted(
        (round(float(seg[0][0])), float(seg[0][1]), float(seg[1][1]))
        for coll in ax.collections
        for seg in coll.get_segments()
    )
    want = sorted((ticks.index(n), *s["ndcg@20_ci"]) for n, s in scorable.items())
    assert [s[0] for s in spans] == [w[0] for w in want]
    assert [v for s in spans for v in s[1:]] == pytest.approx([v for w in want for v in w[1:]])
    marks = [t for t in ax.texts if t.get_text() == "cannot score cold items"]
    assert sorted(round(t.get_position()[0]) for t in marks) == [
        ticks.index("popularity"),
        ticks.index("ease"),
    ]
    _assert_apart(_boxes(fig))


def test_recall_vs_qps_names_the_catalogue_size_the_sweep_parameter_and_overhead(
    tmp_path,
) -> None:
    fig = rep.plot_recall_vs_qps(make_report(items=1682))
    _save(fig, tmp_path / "recall_vs_qps.png")
    ax = fig.axes[0]
    title = ax.get_title()
    assert "1,682 items" in title and "per-call overhead" in title
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any("ivf_sq8" in t and "nprobe" in t for t in legend), legend
    assert any("hnsw_sq8" in t and "ef_search" in t for t in legend), legend
    assert any(t.startswith("flat") for t in legend)
    boxes = _boxes(fig)
    assert {"1", "4", "16", "32", "8", "64", "128"} <= set(boxes)
    _assert_apart(boxes)
    big = rep.plot_recall_vs_qps(make_report(items=250_000))
    _save(big, tmp_path / "recall_vs_qps_big.png")
    assert "250,000 items" in big.axes[0].get_title()
    assert "overhead" not in big.axes[0].get_title()
