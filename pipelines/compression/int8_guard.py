"""The int8 quality guard: a module stays float32 where its int8 costs more than the tolerance
on validation, and the compressed student says whether it is int8-safe.

For each module ``quantize_int8`` would convert (in the parts it was asked for), the model with
only that module int8 is scored on validation (warm NDCG@10, and under ``cold_items`` the
cold-validation NDCG@20: the cold items are scored by other modules than the warm ones); a
module whose ratio to the float model falls below ``1 - tolerance`` on either metric is kept
float32. The rest are converted together and the whole is scored again: ``int8_safe`` is
whether it keeps ``1 - tolerance`` of the float model on every metric. Never reads test.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection

from student.compress import int8_modules, quantize_int8

logger = logging.getLogger(__name__)


def guarded_int8(
    model, score: Callable[..., dict[str, float]], tolerance: float,
    parts: Collection[str] | None = None, module_ratios: dict | None = None,
):  # fmt: skip
    """``(int8 model, record)``: ``score(model) -> {metric: value}`` (validation); ``parts``
    the parts to convert (default all); ``module_ratios``: each module's ratios measured by an
    earlier call on the same model (reused, not measured again). The record holds every
    module's ratios, the modules kept float32 (``reason: "quality"``), the final ratios and
    ``int8_safe``."""
    if not 0 < tolerance < 1:
        raise ValueError(f"int8_tolerance={tolerance!r}; expected a float in (0, 1)")
    base = score(model)
    names = int8_modules(model, parts)
    ratios, kept = {}, []
    for name in names:
        if module_ratios is not None and name in module_ratios:
            ratios[name] = module_ratios[name]
        else:
            one, _ = quantize_int8(model, parts=parts, keep_fp32=[n for n in names if n != name])
            ratios[name] = _ratios(score(one), base)
        if min(ratios[name].values()) < 1 - tolerance:
            kept.append(name)
    q, rec = quantize_int8(model, parts=parts, keep_fp32=kept)
    final = _ratios(score(q), base)
    safe = min(final.values()) >= 1 - tolerance
    if not safe:
        logger.warning(
            "int8 is not int8-safe: it keeps %s of the float model on validation (tolerance "
            "%g) even with %s kept float32", final, tolerance, kept or "no module",
        )  # fmt: skip
    guard = {"tolerance": tolerance, "float_validation": base, "module_ratios": ratios,
             "kept_fp32": {n: "quality" for n in kept}, "ratios": final, "int8_safe": safe}  # fmt: skip
    return q, rec | {"quality_guard": guard}


def _ratios(got: dict[str, float], base: dict[str, float]) -> dict[str, float]:
    return {k: (got[k] / base[k] if base[k] > 0 else 1.0) for k in base}
