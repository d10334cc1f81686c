"""The benchmark report's plots (``report.write_report`` saves them as PNGs).

Each plot is a matplotlib ``Figure`` on an Agg canvas (no pyplot state), laid out before it is
returned, so what a test measures on the figure is what is saved. Point labels are placed by a
deterministic greedy pass in display space: no label box overlaps another label or a marker
(a label that had to move is joined to its point by a leader line), and the axes grow until
every label fits inside them. Titles name the catalogue size; a plain report's quality plots
draw the teacher (which has no latency or size) as a reference line; a ``cold_items`` report
plots its headline, cold NDCG@20 with its interval, instead of the "all" NDCG@10.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.transforms import Bbox, blended_transform_factory

from common.config import is_int

SMALL_CATALOGUE = 10_000  # under this many items, batch-1 QPS is mostly per-call overhead
GAP_PX = 3.0  # free pixels kept between two label boxes (and inside the axes)
# a light backing so that grid, error bars and reference lines do not cross a label's glyphs
BACKING = {"boxstyle": "square,pad=0.1", "facecolor": "white", "edgecolor": "none", "alpha": 0.8}
OFFSET_PT = 6.0  # a label's distance from its point
LABEL_SIZE = 8


def is_missing(v: Any) -> bool:
    """None or a non-finite float (shown as "-" in tables, left out of plots)."""
    return v is None or (isinstance(v, (float, np.floating)) and not math.isfinite(v))


def _pos(v: Any) -> bool:
    return not is_missing(v) and float(v) > 0


def catalogue_size(report: dict[str, Any]) -> int | None:
    """The number of items in the report's catalogue (``dataset.items``); None if unknown."""
    n = report["dataset"].get("items")
    return int(n) if is_int(n) else None


def _items_text(report: dict[str, Any]) -> str:
    n = catalogue_size(report)
    name = report["dataset"].get("name")
    size = "catalogue size unknown" if n is None else f"{n:,} items"
    return f"{name}, {size}" if name else size


def _new_axes(title: str, xlabel: str, ylabel: str, width: float = 6.4) -> tuple[Figure, Any]:
    fig = Figure(figsize=(width, 4.6), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    return fig, ax


# ------------------------------------------------------------------- labels
def _overlaps(a: Bbox, b: Bbox) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def _text_size(ax: Any, label: str, renderer: Any) -> tuple[float, float]:
    t = ax.text(0, 0, label, fontsize=LABEL_SIZE, ha="left", va="bottom")
    bb = t.get_window_extent(renderer)
    t.remove()
    return bb.width, bb.height


Point = tuple[str, float, float, str]  # (label, x, y, colour)


def _place_once(
    ax: Any, points: list[Point], fixed: list[Any], markers: list[Any]
) -> tuple[list[Any], list[Bbox]]:
    """Annotate each point, lowest first: right of it (left where the right runs out of the
    axes), moved up past every box already taken (labels, markers, fixed texts). Returns the
    annotations and their text boxes in pixels."""
    if not points:
        return [], []
    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    px_per_pt = fig.dpi / 72.0
    off, r = OFFSET_PT * px_per_pt, 4.0 * px_per_pt
    disp = ax.transData.transform(np.array([(x, y) for _, x, y, _ in points], dtype=float))
    # (owner, box): a label may touch its own marker only
    taken = [(-1, t.get_window_extent(renderer).padded(GAP_PX)) for t in fixed]
    taken += [
        (i, Bbox.from_bounds(dx - r, dy - r, 2 * r, 2 * r)) for i, (dx, dy) in enumerate(disp)
    ]
    if markers:
        extra = ax.transData.transform(np.array(markers, dtype=float))
        taken += [(-1, Bbox.from_bounds(dx - r, dy - r, 2 * r, 2 * r)) for dx, dy in extra]
    annotations, boxes = [], []
    for i in sorted(range(len(points)), key=lambda i: (disp[i][1], disp[i][0], points[i][0])):
        label, x, y, colour = points[i]
        (px, py), (w, h) = disp[i], _text_size(ax, label, renderer)
        right = px + off + w <= ax.bbox.x1 - GAP_PX or px - off - w < ax.bbox.x0 + GAP_PX
        x0, y0 = (px + off if right else px - off - w), py - h / 2
        while hits := [
            b for o, b in taken if o != i and _overlaps(Bbox.from_bounds(x0, y0, w, h), b)
        ]:
            y0 = max(b.y1 for b in hits) + GAP_PX
        boxes.append(Bbox.from_bounds(x0, y0, w, h))
        taken.append((-1, boxes[-1]))
        leader = {"arrowstyle": "-", "color": "0.55", "lw": 0.6}
        annotations.append(
            ax.annotate(
                label,
                (x, y),
                xytext=((x0 - px) / px_per_pt, (y0 - py) / px_per_pt),
                textcoords="offset points",
                ha="left",
                va="bottom",
                fontsize=LABEL_SIZE,
                color=colour,
                bbox=BACKING,
                arrowprops=leader if y0 - (py - h / 2) > 1.0 else None,
            )
        )
    return annotations, boxes


def place_labels(
    ax: Any, points: list[Point], fixed: Sequence[Any] = (), markers: Sequence[Any] = ()
) -> list[Any]:
    """Label each ``(text, x, y, colour)`` data point so that no two label boxes overlap (nor
    a point's or an extra ``markers`` point's marker, nor a ``fixed`` text); the upper y and x
    limits grow until the labels fit inside the axes. Call it once the figure is laid out
    (a later layout would move the points under their labels)."""
    renderer = ax.figure.canvas.get_renderer()
    ax.set_xlim(*ax.get_xlim())  # autoscaled now, then frozen
    ax.set_ylim(*ax.get_ylim())
    annotations: list[Any] = []
    for _ in range(8):
        for a in annotations:
            a.remove()
        annotations, boxes = _place_once(ax, points, list(fixed), list(markers))
        over_x = max((b.x1 for b in boxes), default=0.0) - (ax.bbox.x1 - GAP_PX)
        tops = [b.y1 for b in boxes] + [t.get_window_extent(renderer).y1 for t in fixed]
        over_y = max(tops, default=0.0) - (ax.bbox.y1 - GAP_PX)
        if over_x <= 0 and over_y <= 0:
            break
        far = ax.transData.inverted().transform(
            (ax.bbox.x1 + max(over_x, 0.0) + 4, ax.bbox.y1 + max(over_y, 0.0) + 4)
        )
        if over_x > 0:
            ax.set_xlim(ax.get_xlim()[0], far[0])
        if over_y > 0:
            ax.set_ylim(ax.get_ylim()[0], far[1])
    return annotations


def _finish(
    fig: Figure, ax: Any, points: list[Point], fixed: Sequence[Any] = (), markers: Sequence = ()
) -> Figure:
    """Lay the figure out, label the points, and lay out and label once more (the labels may
    have grown the limits, and with them the tick labels)."""
    fig.tight_layout()
    for a in place_labels(ax, points, fixed, markers):
        a.remove()
    fig.tight_layout()
    place_labels(ax, points, fixed, markers)
    return fig


# ------------------------------------------------------------------- plots
def _teacher_line(ax: Any, report: dict[str, Any]) -> tuple[Any, ...]:
    """The teacher's NDCG@10 as a dashed reference line with its label; () without one."""
    t = report["models"].get("teacher")
    if not t or is_missing(t.get("ndcg@10")):
        return ()
    y = float(t["ndcg@10"])
    ax.axhline(y, color="0.35", ls="--", lw=1, zorder=1)
    return (
        ax.text(
            0.01,
            y,
            f"teacher {y:.3f} (no latency or size: a reference line)",
            transform=blended_transform_factory(ax.transAxes, ax.transData),
            ha="left",
            va="bottom",
            fontsize=LABEL_SIZE,
            color="0.25",
            bbox=BACKING,
            zorder=1.5,  # under the markers (a model may sit on the teacher's line)
        ),
    )


def _quality_plot(report: dict[str, Any], xkey: str, what: str, xlabel: str) -> Figure | None:
    log = xkey == "bytes"
    fig, ax = _new_axes(
        f"Quality vs {what} ({_items_text(report)})", xlabel, "NDCG@10 (bars: 95% CI over users)"
    )
    points: list[Point] = []
    for name, m in report["models"].items():
        x, y = m.get(xkey), m["ndcg@10"]
        if is_missing(x) or is_missing(y) or (log and x <= 0):
            continue
        ci = m.get("ndcg@10_ci")
        yerr = None if ci is None else [[max(y - ci[0], 0.0)], [max(ci[1] - y, 0.0)]]
        (line, _, _) = ax.errorbar([x], [y], yerr=yerr, fmt="o", ms=5, capsize=2, elinewidth=1)
        points.append((str(name), float(x), float(y), line.get_color()))
    if not points:
        return None
    if log:
        ax.set_xscale("log")
    ax.margins(x=0.08, y=0.1)
    return _finish(fig, ax, points, _teacher_line(ax, report))


def plot_quality_vs_latency(report: dict[str, Any]) -> Figure | None:
    """NDCG@10 against batch-1 latency per model, the teacher as a reference line; None when
    no model has a latency."""
    return _quality_plot(report, "latency_ms_batch1", "latency", "latency per query, batch 1 (ms)")


def plot_quality_vs_bytes(report: dict[str, Any]) -> Figure | None:
    """NDCG@10 against model size (log x), the teacher as a reference line; None when no model
    has both."""
    return _quality_plot(report, "bytes", "size", "model size (bytes, log scale)")


def plot_recall_vs_qps(report: dict[str, Any]) -> Figure | None:
    """Recall@10 vs batch-1 QPS (log y): one curve per index sweep, each point labelled with
    its sweep parameter's value (the legend names the parameter), one square per plain index."""
    n = catalogue_size(report)
    title = f"Index recall vs throughput ({_items_text(report)})"
    if n is not None and n < SMALL_CATALOGUE:
        title += f"\nunder {SMALL_CATALOGUE:,} items, QPS is mostly per-call overhead, not search"
    fig, ax = _new_axes(
        title, "recall@10 vs exact search", "queries per second, batch 1 (log)", width=7.6
    )
    points: list[Point] = []
    plain = []
    for k, (name, m) in enumerate(report["indexes"].items()):
        colour = f"C{k % 10}"  # one colour per index (lines and squares cycle apart otherwise)
        pts = [p for p in m.get("sweep") or [] if not is_missing(p["recall"]) and _pos(p["qps"])]
        if pts:
            params = " / ".join(dict.fromkeys(str(p["param"]) for p in pts))
            xs, ys = [p["recall"] for p in pts], [p["qps"] for p in pts]
            ax.plot(
                xs, ys, marker="o", ms=4, color=colour, label=f"{name} (point labels: {params})"
            )
            for p in pts:
                text = str(p.get("value", p["param"]))
                points.append((text, float(p["recall"]), float(p["qps"]), colour))
        elif not is_missing(m["recall@10_vs_exact"]) and _pos(m["qps_batch1"]):
            xy = (float(m["recall@10_vs_exact"]), float(m["qps_batch1"]))
            ax.scatter([xy[0]], [xy[1]], marker="s", s=30, color=colour, label=f"{name} (no sweep)")
            plain.append(xy)
    if not (points or plain):
        return None
    ax.set_yscale("log")
    ax.margins(x=0.06, y=0.1)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    return _finish(fig, ax, points, markers=plain)


def _bar_colour(name: str) -> str:
    return (
        "tab:orange" if name == "teacher" else "tab:blue" if name.startswith("student") else "0.6"
    )


def plot_cold_ndcg(report: dict[str, Any]) -> Figure | None:
    """A ``cold_items`` report's headline: each model's cold NDCG@20 (``segments.cold``) as a
    bar from 0 with its 95% interval; a model that cannot score cold items is marked so.
    None when no model scored the cold segment."""
    split = report["dataset"].get("split") or {}
    n_cold, users = split.get("cold_test_items"), (split.get("users") or {}).get("cold")
    scope = f"the {n_cold:,} cold test items" if is_int(n_cold) else "the cold test items"
    title = f"Cold-start items: NDCG@20 ranking {scope}\n({_items_text(report)}"
    title += f", {users:,} users)" if is_int(users) else ")"
    fig, ax = _new_axes(title, "", "cold NDCG@20 (bars: 95% CI over users)", width=7.6)
    ax.grid(False, axis="x")
    names, tops, marked = list(report["models"]), [], []
    on_axes = blended_transform_factory(ax.transData, ax.transAxes)
    for i, name in enumerate(names):
        cold = (report["models"][name].get("segments") or {}).get("cold")
        if cold is None or is_missing(cold.get("ndcg@20")):
            ax.text(i, 0.02, "cannot score cold items", rotation=90, ha="center", va="bottom",
                    fontsize=7, color="0.35", transform=on_axes)  # fmt: skip
            marked.append(i)
            continue
        y, ci = float(cold["ndcg@20"]), cold.get("ndcg@20_ci")
        ax.bar(i, y, width=0.7, color=_bar_colour(name))
        top = y
        if ci is not None:
            ax.errorbar([i], [y], yerr=[[max(y - ci[0], 0.0)], [max(ci[1] - y, 0.0)]],
                        fmt="none", ecolor="black", capsize=3, lw=1)  # fmt: skip
            top = max(y, float(ci[1]))
        tops.append((i, y, top))
    if not tops:
        return None
    hi = max([t for _, _, t in tops] + [1e-3])
    for i, y, top in tops:
        ax.text(i, top + 0.01 * hi, f"{y:.3f}", ha="center", va="bottom", fontsize=7)
    ax.set_ylim(0, hi * 1.12)
    ax.set_xticks(range(len(names)), names, rotation=35, ha="right", fontsize=8)
    for i in marked:
        ax.get_xticklabels()[i].set_color("0.45")
    fig.tight_layout()
    return fig


def plots_for(report: dict[str, Any]) -> dict[str, Callable[[dict[str, Any]], Figure | None]]:
    """File name -> plot function for this report: a ``cold_items`` report plots its
    headline cold NDCG@20 instead of the quality plots (whose NDCG@10 is the "all" segment)."""
    if report["protocol"] == "cold_items":
        return {"cold_ndcg20.png": plot_cold_ndcg, "recall_vs_qps.png": plot_recall_vs_qps}
    return {
        "quality_vs_latency.png": plot_quality_vs_latency,
        "quality_vs_bytes.png": plot_quality_vs_bytes,
        "recall_vs_qps.png": plot_recall_vs_qps,
    }
