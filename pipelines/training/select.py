"""Distillation chosen on validation: one student per (distillation scale, temperature) of a
grid that always holds scale 0 (the hard student), the best validation NDCG@10 kept.

A scale multiplies every soft-label weight of ``TrainStudentConfig.loss`` (every term but
``hard``); scale 0 trains the hard loss alone (as ``--no-teacher``), so the job can never
keep a student that validates worse than no teacher. Every point trains with the same seed on
the same split into a temporary folder beside ``<out>`` (``.NAME.*.tmp``: a crash leaves one
that the next run's ``claim_output`` removes); only the chosen point's model reaches
``<out>/model``, and ``metrics.json`` records the whole grid under ``"selection"``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common.config import to_dict
from common.io import TMP_SUFFIX, atomic_dir, portable_paths, write_json
from student.losses import TERM_NAMES

# ``c`` below is the job's ``TrainStudentConfig`` (not imported: the job imports this module)
JobConfig = Any
logger = logging.getLogger(__name__)

METRIC = "ndcg@10"  # of the validation users, as early stopping


def has_grid(c: JobConfig) -> bool:
    return bool(c.distill_scales or c.temperatures)


def check_grid(c: JobConfig) -> None:
    """ValueError naming the field when the grid cannot be run."""
    for name, positive in (("distill_scales", False), ("temperatures", True)):
        for v in getattr(c, name):
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            if not ok or v < 0 or (positive and v == 0):
                raise ValueError(
                    f"TrainStudentConfig.{name}: value {v!r}; expected finite floats "
                    f"{'> 0' if positive else '>= 0'}"
                )
    if not has_grid(c):
        return
    if c.no_teacher:
        raise ValueError(
            "TrainStudentConfig.distill_scales: a distillation grid needs --labels, not "
            "--no-teacher (scale 0 of the grid is the hard student)"
        )
    if c.loss.hard <= 0:
        raise ValueError(
            f"TrainStudentConfig.distill_scales: scale 0 trains the hard loss alone, but "
            f"w_hard={c.loss.hard}; expected w_hard > 0"
        )
    if not any(getattr(c.loss, n) > 0 for n in TERM_NAMES if n != "hard"):
        raise ValueError(
            "TrainStudentConfig.distill_scales: every soft-label weight is 0, so every scale "
            "trains the same hard student; set one, e.g. --w-listwise-kl 1"
        )


def grid_points(c: JobConfig) -> tuple[list[tuple[float, float]], bool]:
    """``([(scale, temperature), ...], zero added)``: scale 0 once (its temperature does not
    matter: the hard loss has none), then each positive scale with each temperature, in
    ascending order (so the first of equal validation scores has the smaller scale)."""
    scales = sorted({float(s) for s in c.distill_scales} or {1.0})
    temps = sorted({float(t) for t in c.temperatures} or {float(c.loss.temperature)})
    added = 0.0 not in scales
    points = [(0.0, float(c.loss.temperature))]
    points += [(s, t) for s in scales if s > 0 for t in temps]
    return points, added


def point_config(c: JobConfig, scale: float, temperature: float, out: Path):
    """The config of one grid point: no grid, its own folder, the soft weights scaled."""
    base = dict(distill_scales=(), temperatures=(), out=str(out), overwrite=False)
    if scale == 0:
        return dataclasses.replace(c, no_teacher=True, **base)
    scaled = {n: getattr(c.loss, n) * scale for n in TERM_NAMES if n != "hard"}
    loss = dataclasses.replace(c.loss, **scaled, temperature=temperature)
    return dataclasses.replace(c, loss=loss, **base)


def choose(grid: list[dict]) -> int:
    """Index of the best validation ``METRIC`` in ``grid`` (the first of equals: the grid is
    in ascending scale order, so a tie goes to the smaller scale)."""
    best = 0
    for i, g in enumerate(grid):
        if g["valid"][METRIC] > grid[best]["valid"][METRIC]:
            best = i
    return best


def run_grid(c: JobConfig, train: Callable[[JobConfig], dict]) -> dict:
    """Train every grid point with ``train`` (the job's ``run``), keep the best on validation
    in ``<out>/model``; the chosen point's metrics plus ``"selection"`` (metrics.json)."""
    out = Path(c.out)
    points, added = grid_points(c)
    if added:
        logger.info("distill_scales %s holds no 0: scale 0 (the hard student) added to the grid",
                    list(c.distill_scales) or "(none)")  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=TMP_SUFFIX))
    try:
        grid, best_dir, best = [], None, None
        for k, (scale, temperature) in enumerate(points):
            folder = work / f"point{k}"
            r = train(point_config(c, scale, temperature, folder))
            grid.append({"scale": scale, "temperature": temperature, "mode": r["mode"],
                         "valid": r["valid"], "best_epoch": r["best_epoch"],
                         "epochs_run": r["epochs_run"], "train_seconds": r["train_seconds"]})  # fmt: skip
            logger.info("grid point %d/%d: distill scale %g, temperature %g: valid %s %.4f "
                        "(best epoch %d)", k + 1, len(points), scale, temperature, METRIC,
                        r["valid"][METRIC], r["best_epoch"])  # fmt: skip
            if best is None or choose([best, r]) == 1:
                if best_dir is not None:
                    shutil.rmtree(best_dir)  # keep one model on disk at a time
                best, best_dir = r, folder
            else:
                shutil.rmtree(folder)
        with atomic_dir(out / "model") as tmp:
            for f in (best_dir / "model").iterdir():
                shutil.copy2(f, tmp / f.name)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    i = choose(grid)
    result = dict(best)
    result["config"] = portable_paths(to_dict(c), out, ("labels", "collab_cache"))
    result["selection"] = {
        "metric": f"valid {METRIC}",
        "grid": grid,
        "chosen": {"scale": grid[i]["scale"], "temperature": grid[i]["temperature"]},
        "zero_won": grid[i]["scale"] == 0,
        "zero_added": added,
        "train_seconds": sum(g["train_seconds"] for g in grid),
    }
    logger.info("chosen: distill scale %g, temperature %g (valid %s %.4f)%s", grid[i]["scale"],
                grid[i]["temperature"], METRIC, grid[i]["valid"][METRIC],
                ": the hard student (the teacher did not help on validation)"
                if grid[i]["scale"] == 0 else "")  # fmt: skip
    write_json(out / "metrics.json", result)
    return result
