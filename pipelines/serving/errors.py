"""Every error is ``{"error": code, "message": ..., "detail": [{"field", "message",
"expected", ...}]}`` with its status: :class:`ApiError` and the handlers that turn
validation, HTTP and unexpected errors into it."""

from __future__ import annotations

import json
import logging
import math
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from pipelines.serving.schemas import expected

logger = logging.getLogger(__name__)

# the 4xx answers, for the OpenAPI page
ERRORS: dict = {
    s: {"description": d}
    for s, d in (
        (400, "malformed JSON"),
        (404, "unknown user or item"),
        (503, "the run is still loading (or failed to load: /readyz)"),
        (413, "body, or batch answer (sum of k), too large"),
        (422, "invalid field (named in detail)"),
    )
}


class ApiError(Exception):
    """A 4xx answer: ``code``, a message, and per-field details."""

    def __init__(self, status: int, code: str, message: str, detail: list[dict] | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.detail = status, code, message, detail or []

    def response(self) -> JSONResponse:
        body = {"error": self.code, "message": self.message, "detail": self.detail}
        return JSONResponse(body, status_code=self.status)


def _field(loc: tuple) -> str:
    out = ""
    for part in loc:
        if part in ("body", "query", "path") and not out:
            continue
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "body"


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    return value


async def _api_error(request: Request, exc: ApiError):
    return exc.response()


async def _validation(request: Request, exc: RequestValidationError):
    config = request.app.state.serving.config
    detail = []
    malformed = False
    for e in exc.errors():
        field = _field(tuple(e.get("loc", ())))
        if e.get("type") == "json_invalid":
            malformed = True
            field = "body"
        name = field.rsplit(".", 1)[-1].split("[")[0]
        item = {"field": field, "message": e.get("msg", "invalid")}
        if "input" in e and e.get("type") != "missing" and not malformed:
            item["got"] = _jsonable(e["input"])
        if e.get("type") == "value_error":  # the model validator: which user
            item["expected"] = "exactly one of user_id (a known user) or history (a new user)"
        else:
            item["expected"] = expected(name, config)
        detail.append(item)
    if malformed:
        return ApiError(
            400, "malformed_json", "the request body is not valid JSON", detail
        ).response()
    fields = ", ".join(sorted({d["field"] for d in detail}))
    return ApiError(422, "invalid_request", f"invalid field(s): {fields}", detail).response()


async def _http(request: Request, exc: StarletteHTTPException):
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return ApiError(
        exc.status_code, code, f"{request.method} {request.url.path}: {exc.detail}"
    ).response()


async def _internal(request: Request, exc: Exception):  # a bug, not bad input
    logger.exception("unhandled error on %s", request.url.path)
    return ApiError(500, "internal_error", f"{type(exc).__name__}: {exc}").response()


EXCEPTION_HANDLERS = {
    ApiError: _api_error,
    RequestValidationError: _validation,
    StarletteHTTPException: _http,
    Exception: _internal,
}
