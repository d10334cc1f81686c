"""The HTTP stack: uvicorn on uvloop + httptools when they are installed (``uvicorn[standard]``),
else asyncio + h11 with a log line; and the orjson response of the hot routes.

pydantic's validation of a ``/recommend`` body costs about a microsecond, so the bodies stay
pydantic models. README "Serving" has the measured numbers and the command.
"""

from __future__ import annotations

import importlib.util
import logging

import orjson
from starlette.responses import JSONResponse

logger = logging.getLogger(__name__)


class OrjsonResponse(JSONResponse):
    """``JSONResponse`` rendered by orjson: the same JSON (floats as their shortest repr, as
    ``json.dumps``), a few times faster for a list of items."""

    def render(self, content) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


def stack(log: bool = False) -> dict:
    """``{"loop", "http"}``: what uvicorn runs on here (``uvloop``/``httptools`` when importable,
    else ``asyncio``/``h11``); ``log`` names a fallback."""
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    if log and (loop, http) != ("uvloop", "httptools"):
        logger.warning(
            "serving on loop=%s http=%s: install uvicorn[standard] for uvloop and httptools "
            "(faster)",
            loop,
            http,
        )
    return {"loop": loop, "http": http}
