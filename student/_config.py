"""The one ``to_dict``/``from_dict`` of ``student``'s config dataclasses (``student`` imports
nothing of ``pipelines`` or ``llm_teacher``, so it keeps its own)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any, TypeVar

T = TypeVar("T", bound="ConfigMixin")


class ConfigMixin:
    """JSON round trip for a dataclass config: tuples become lists; unknown keys and missing
    required fields are errors that name them and the allowed fields."""

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls: type[T], data: Mapping[str, Any]) -> T:
        fields = dataclasses.fields(cls)  # type: ignore[arg-type]
        allowed = {f.name for f in fields}
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise ValueError(
                f"{cls.__name__}: unknown field(s) {unknown}; allowed: {sorted(allowed)}"
            )
        missing = sorted(
            f.name
            for f in fields
            if f.default is dataclasses.MISSING
            and f.default_factory is dataclasses.MISSING
            and f.name not in data
        )
        if missing:
            raise ValueError(f"{cls.__name__}: missing required field(s) {missing}")
        return cls(**dict(data))
