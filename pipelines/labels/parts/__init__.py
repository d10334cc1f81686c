"""The teacher's parts, one kind per module, each registered in ``PARTS`` (name -> class).

Every module of this folder is imported here, so a new part is one file: a ``Part`` subclass
with ``@register`` (an LLM part: ``role = "llm"``, its ``key`` becomes a ``--teacher`` value).
"""

from __future__ import annotations

import importlib
import pkgutil

from pipelines.labels.parts.base import PARTS, InputView, Part, register

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    importlib.import_module(f"{__name__}.{_module}")

LLM_PARTS: tuple[str, ...] = tuple(k for k, cls in PARTS.items() if cls.role == "llm")


def build_parts(c, data, split, device: str = "cpu") -> list[Part]:
    """The parts the label job's config ``c`` asks for: the LLM part (``c.teacher``, on
    ``device``) first, then each wanted signal part in registry order."""
    parts = [PARTS[c.teacher].from_config(c, data, split, device)]
    for cls in PARTS.values():
        if cls.role == "signal" and cls.wanted(c):
            parts.append(cls.from_parts(c, data, split, parts))
    return parts


__all__ = ["LLM_PARTS", "PARTS", "InputView", "Part", "build_parts", "register"]
