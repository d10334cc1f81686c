"""Latency of each tower part at batch 1 and 1024, and the choice of the parts where int8 pays."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

import torch

from student.compress.int8 import PARTS, _check_model, _part_modules, _resolve_parts, quantize_int8
from student.model import TwoTower


# ---- latency ------------------------------------------------------------------------------------
def _tower_inputs(
    model: TwoTower, batch: int, history_len: int | None, gen: torch.Generator
) -> dict[str, tuple[torch.Tensor, ...]]:
    c = model.config
    length = c.history_len if history_len is None else history_len
    users = torch.randint(0, c.n_users, (batch,), generator=gen)
    history = torch.randint(0, c.n_items + 1, (batch, length), generator=gen) if length else None
    items = torch.randint(0, c.n_items, (batch,), generator=gen)
    return {"user": (users, history), "item": (items,)}


def measure_latency(
    model: TwoTower,
    batch_sizes: Sequence[int] = (1, 1024),
    towers: Sequence[str] = ("user", "item"),
    n_warmup: int = 3,
    n_repeats: int = 20,
    history_len: int | None = None,
    num_threads: int | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Median milliseconds per batch of each tower: ``{"user": {"1": ms, ...}, "item": ...}``.

    For benchmarks, not tests. Inputs are random ids (histories of ``history_len``, default the
    config's). ``num_threads`` sets torch threads for the call and restores them after.
    """
    _check_model(model, "measure_latency", allow_int8=True)
    for tower in towers:
        if tower not in ("user", "item"):
            raise ValueError(f"towers: {tower!r} is not 'user' or 'item'")
    if n_repeats < 1 or n_warmup < 0:
        raise ValueError(f"n_repeats={n_repeats}, n_warmup={n_warmup}: need >= 1 and >= 0")
    old_threads = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    was_training = model.training
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    out: dict[str, Any] = {t: {} for t in towers}
    try:
        with torch.inference_mode():
            for batch in batch_sizes:
                inputs = _tower_inputs(model, int(batch), history_len, gen)
                for tower in towers:
                    fn = model.encode_users if tower == "user" else model.encode_items
                    args = inputs[tower]
                    for _ in range(n_warmup):
                        fn(*args)
                    times = []
                    for _ in range(n_repeats):
                        start = time.perf_counter()
                        fn(*args)
                        times.append((time.perf_counter() - start) * 1e3)
                    out[tower][str(batch)] = statistics.median(times)
    finally:
        model.train(was_training)
        torch.set_num_threads(old_threads)
    out["num_threads"] = torch.get_num_threads() if num_threads is None else num_threads
    out["n_repeats"] = n_repeats
    out["statistic"] = "median ms per batch"
    return out


def choose_int8_parts(
    model: TwoTower,
    user_batch_size: int = 1,
    item_batch_size: int = 1024,
    parts: Collection[str] = PARTS,
    min_speedup: float = 1.0,
    linear_kernel: str = "qlinear",
    measure: Callable[..., Mapping[str, Any]] = measure_latency,
    **measure_kwargs: Any,
) -> tuple[TwoTower, dict[str, Any]]:
    """int8 only where it is not slower: each part is timed alone at its tower's batch size.

    The user tower is timed at ``user_batch_size`` (online queries), the item tower at
    ``item_batch_size`` (index building). A part stays int8 if ``fp32_ms / int8_ms >=
    min_speedup``, else it is kept fp32 and the record says why. ``measure`` is
    :func:`measure_latency` (injectable, e.g. for tests); extra kwargs go to it.
    """
    _check_model(model, "choose_int8_parts")
    if not (isinstance(min_speedup, (int, float)) and min_speedup > 0):
        raise ValueError(f"min_speedup={min_speedup!r}: expected a float > 0")
    requested = _resolve_parts(True, True, parts)
    batch_of = {"user": int(user_batch_size), "item": int(item_batch_size)}

    def timed(m: TwoTower, tower: str) -> float:
        result = measure(m, batch_sizes=(batch_of[tower],), towers=(tower,), **measure_kwargs)
        return float(result[tower][str(batch_of[tower])])

    available = _part_modules(model)
    decisions: dict[str, Any] = {}
    baseline: dict[str, float] = {}
    chosen = []
    for part in requested:
        tower = part.split("_")[0]
        if not available[part]:
            decisions[part] = {"int8": False, "reason": "no module in this part"}
            continue
        if tower not in baseline:
            baseline[tower] = timed(model, tower)
        candidate, _ = quantize_int8(model, parts=[part], linear_kernel=linear_kernel)
        int8_ms = timed(candidate, tower)
        speedup = baseline[tower] / int8_ms if int8_ms > 0 else math.inf
        keep = speedup >= min_speedup
        decisions[part] = {
            "int8": keep,
            "batch_size": batch_of[tower],
            "fp32_ms": baseline[tower],
            "int8_ms": int8_ms,
            "speedup": speedup,
            "reason": (
                f"int8 {speedup:.2f}x fp32 speed at batch {batch_of[tower]}"
                + ("" if keep else f" (< {min_speedup}): kept fp32")
            ),
        }
        if keep:
            chosen.append(part)
    new_model, record = quantize_int8(model, parts=chosen, linear_kernel=linear_kernel)
    record["step"] = "choose_int8_parts"
    record["decisions"] = decisions
    return new_model, record
