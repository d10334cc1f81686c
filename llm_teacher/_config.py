"""JSON round-trip and validation helpers shared by the ``llm_teacher`` config dataclasses."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from typing import Any, TypeVar

T = TypeVar("T", bound="ConfigMixin")


class ConfigMixin:
    """``to_dict()`` / ``from_dict()`` (JSON-able) for a dataclass config."""

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of the fields (lists stay lists), safe for ``json.dumps``."""
        return json.loads(json.dumps(dataclasses.asdict(self)))  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls: type[T], data: dict[str, Any]) -> T:
        """Build from a dict; unknown keys are an error that lists the known ones."""
        names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise ValueError(f"{cls.__name__}: unknown fields {unknown}; known fields: {names}")
        return cls(**data)


def check_int(owner: str, name: str, value: Any, minimum: int, *, allow_none: bool = False) -> None:
    """Raise ``ValueError`` unless ``value`` is an int >= ``minimum`` (or None if allowed)."""
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        extra = " or None" if allow_none else ""
        raise ValueError(f"{owner}.{name} is {value!r}; expected an integer >= {minimum}{extra}")


def check_float(
    owner: str,
    name: str,
    value: Any,
    *,
    gt: float | None = None,
    ge: float | None = None,
    lt: float | None = None,
) -> None:
    """Raise ``ValueError`` unless ``value`` is a finite number within the given bounds."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value == value
    ok = ok and abs(value) != float("inf")
    if ok and gt is not None:
        ok = value > gt
    if ok and ge is not None:
        ok = value >= ge
    if ok and lt is not None:
        ok = value < lt
    if not ok:
        bounds = [
            f"> {gt}" if gt is not None else "",
            f">= {ge}" if ge is not None else "",
            f"< {lt}" if lt is not None else "",
        ]
        want = " and ".join(b for b in bounds if b) or "finite"
        raise ValueError(f"{owner}.{name} is {value!r}; expected a finite number {want}")


def check_choice(owner: str, name: str, value: Any, allowed: Iterable[Any]) -> None:
    """Raise ``ValueError`` unless ``value`` is one of ``allowed``."""
    allowed = list(allowed)
    if value not in allowed:
        raise ValueError(f"{owner}.{name} is {value!r}; allowed values: {allowed}")


def check_device(owner: str, value: Any) -> None:
    """Accept ``cpu``, ``cuda``, ``cuda:<n>`` or ``mps``."""
    import re

    if not isinstance(value, str) or not re.fullmatch(r"cpu|mps|cuda(:\d+)?", value):
        raise ValueError(
            f"{owner}.device is {value!r}; expected 'cpu', 'cuda', 'cuda:<n>' or 'mps'"
        )
