"""The one config round trip (``to_dict`` / ``from_dict``) and the value checks of every
config dataclass in the project.

A check raises ``ValueError`` naming the owner, the field, the value and what is allowed, in
the style of peft's configs: ``TwoTowerConfig.dim is 0; expected an integer >= 1``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
import re
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any, Literal, TypeVar

T = TypeVar("T")


def to_dict(config) -> dict[str, Any]:
    """A dataclass config as plain JSON values (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def from_dict(cls: type[T], data: Mapping[str, Any], source: str | None = None) -> T:
    """``cls(**data)``: unknown fields and missing required ones are refused with the allowed
    names; a JSON list is turned back into a tuple where the field's default is a tuple."""
    source = source or cls.__name__
    fields = [f for f in dataclasses.fields(cls) if f.init]
    names = {f.name for f in fields}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(
            f"{source}: unknown field(s) {unknown} for {cls.__name__}; allowed: {sorted(names)}"
        )
    missing = sorted(
        f.name
        for f in fields
        if f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
        and f.name not in data
    )
    if missing:
        raise ValueError(f"{source}: missing required field(s) {missing} for {cls.__name__}")
    kwargs = {}
    for f in fields:
        if f.name in data:
            value = data[f.name]
            if isinstance(value, list) and isinstance(field_default(f), tuple):
                value = tuple(value)
            kwargs[f.name] = value
    return cls(**kwargs)


def field_default(f: dataclasses.Field) -> Any:
    """The default of a dataclass field (``None`` when it has none)."""
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


class ConfigMixin:
    """``config.to_dict()`` / ``Config.from_dict(data)`` for a dataclass: :func:`to_dict` and
    :func:`from_dict` as methods."""

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    @classmethod
    def from_dict(cls: type[T], data: Mapping[str, Any]) -> T:
        return from_dict(cls, data)


# ---------------------------------------------------------------------------- value checks


def is_int(value: Any) -> bool:
    """An integer (``int`` or a numpy integer) that is not a ``bool``."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_int(
    owner: str,
    name: str,
    value: Any,
    minimum: int | None = None,
    *,
    maximum: int | None = None,
    allow_none: bool = False,
) -> None:
    """Raise ``ValueError`` unless ``value`` is an int in ``[minimum, maximum]`` (or None if
    allowed). The message names ``owner.name`` (``name`` alone when ``owner`` is empty)."""
    if value is None and allow_none:
        return
    ok = is_int(value)
    ok = ok and (minimum is None or value >= minimum) and (maximum is None or value <= maximum)
    if not ok:
        bounds = [
            f">= {minimum}" if minimum is not None else "",
            f"<= {maximum}" if maximum is not None else "",
        ]
        want = " and ".join(b for b in bounds if b)
        extra = " or None" if allow_none else ""
        where = f"{owner}.{name}" if owner else name
        raise ValueError(
            f"{where} is {value!r}; expected an integer{' ' + want if want else ''}{extra}"
        )


def check_float(
    owner: str,
    name: str,
    value: Any,
    *,
    gt: float | None = None,
    ge: float | None = None,
    lt: float | None = None,
    le: float | None = None,
    allow_none: bool = False,
) -> None:
    """Raise ``ValueError`` unless ``value`` is a finite number within the given bounds."""
    if value is None and allow_none:
        return
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (gt is None or value > gt) and (ge is None or value >= ge)
    ok = ok and (lt is None or value < lt) and (le is None or value <= le)
    if not ok:
        bounds = [
            f"> {gt}" if gt is not None else "",
            f">= {ge}" if ge is not None else "",
            f"< {lt}" if lt is not None else "",
            f"<= {le}" if le is not None else "",
        ]
        want = " and ".join(b for b in bounds if b) or "finite"
        extra = " or None" if allow_none else ""
        raise ValueError(f"{owner}.{name} is {value!r}; expected a finite number {want}{extra}")


def check_choice(owner: str, name: str, value: Any, allowed: Iterable[Any]) -> None:
    """Raise ``ValueError`` unless ``value`` is one of ``allowed``."""
    allowed = list(allowed)
    if value not in allowed:
        raise ValueError(f"{owner}.{name} is {value!r}; allowed values: {allowed}")


def check_device(owner: str, value: Any) -> None:
    """Accept ``cpu``, ``cuda``, ``cuda:<n>`` or ``mps``."""
    if not isinstance(value, str) or not re.fullmatch(r"cpu|mps|cuda(:\d+)?", value):
        raise ValueError(
            f"{owner}.device is {value!r}; expected 'cpu', 'cuda', 'cuda:<n>' or 'mps'"
        )


def _literal_choices(hint) -> tuple[tuple[Any, ...], bool, bool] | None:
    """(choices, optional, is a tuple of them) of a ``Literal`` field type, else None."""
    optional = False
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        optional = len(args) < len(typing.get_args(hint))
        if len(args) != 1:
            return None
        hint = args[0]
    many = typing.get_origin(hint) is tuple
    if many:
        hint = typing.get_args(hint)[0]
    if typing.get_origin(hint) is Literal:
        return typing.get_args(hint), optional, many
    return None


def check_literals(config) -> None:
    """Check every ``Literal[...]`` field of a dataclass (also ``X | None`` and
    ``tuple[Literal[...], ...]``) against its allowed values: the one ``Literal`` check, for
    ``__post_init__``."""
    hints = typing.get_type_hints(type(config))
    owner = type(config).__name__
    for f in dataclasses.fields(config):
        spec = _literal_choices(hints.get(f.name))
        if spec is None:
            continue
        choices, optional, many = spec
        value = getattr(config, f.name)
        if value is None and optional:
            continue
        values = value if many and isinstance(value, (tuple, list)) else (value,)
        bad = [v for v in values if v not in choices]
        if bad:
            raise ValueError(f"{owner}.{f.name} is {value!r}; allowed values: {list(choices)}")
