"""Job configs: dataclasses with ``help`` metadata, JSON/YAML round trip, and a CLI parser.

The one ``to_dict``/``from_dict`` of ``pipelines``.

A job is ``run(config) -> metrics dict``; the CLI only parses ``--config file.yaml`` plus
flag overrides (unknown flags are rejected).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


def to_dict(config) -> dict[str, Any]:
    return json.loads(json.dumps(dataclasses.asdict(config)))


def from_dict(cls: type[T], data: dict[str, Any], source: str = "config") -> T:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(
            f"{source}: unknown field(s) {unknown} for {cls.__name__}; allowed: {sorted(names)}"
        )
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in data:
            v = data[f.name]
            default = _default(f)
            if isinstance(default, tuple) and isinstance(v, list):
                v = tuple(v)
            kwargs[f.name] = v
    return cls(**kwargs)


def load_config_file(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.exists():
        raise ValueError(f"--config {p}: no such file")
    text = p.read_text()
    data = json.loads(text) if p.suffix == ".json" else yaml.safe_load(text)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(
            f"--config {p}: expected a mapping of field: value, got {type(data).__name__}"
        )
    return data


def _default(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def add_config_args(parser: argparse.ArgumentParser, cls) -> None:
    """One flag per field (``--field-name``); defaults are suppressed so that only flags the
    user gave override the ``--config`` file."""
    parser.add_argument("--config", help="YAML or JSON file of field: value; flags override it")
    for f in dataclasses.fields(cls):
        default = _default(f)
        flag = "--" + f.name.replace("_", "-")
        help_ = f"{f.metadata.get('help', '')} (default: {default!r})"
        kw: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS, "help": help_}
        if isinstance(default, bool) and f.name.startswith("no_"):
            # BooleanOptionalAction would read "--no-x" as False: a plain switch instead
            parser.add_argument(flag, action="store_const", const=True, **kw)
        elif isinstance(default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, **kw)
        elif isinstance(default, tuple):
            elem = type(default[0]) if default else str
            parser.add_argument(flag, nargs="*", type=elem, **kw)
        elif isinstance(default, (int, float)):
            parser.add_argument(flag, type=type(default), **kw)
        elif default is None:  # optional field: "none"/"null" on the command line means None
            parser.add_argument(flag, type=_none_or_str, **kw)
        else:
            parser.add_argument(flag, type=str, **kw)


def _none_or_str(s: str):
    return None if s.lower() in ("none", "null") else s


def config_from_args(cls: type[T], args: argparse.Namespace) -> T:
    values = vars(args).copy()
    values.pop("command", None)
    values.pop("func", None)
    path = values.pop("config", None)
    data = load_config_file(path) if path else {}
    data.update(values)
    return from_dict(cls, data, source=path or "command line")
