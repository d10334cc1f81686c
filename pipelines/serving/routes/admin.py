"""``POST /admin/reload`` (loopback only unless ``admin_anywhere``): load a run, check it, swap
it in; a bad run is refused (422) and the old one keeps serving."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from pipelines.serving.errors import ERRORS, ApiError
from pipelines.serving.schemas import ReloadRequest
from pipelines.serving.state import State

router = APIRouter()

LOOPBACK = ("127.0.0.1", "::1", "localhost")


@router.post("/admin/reload", responses=ERRORS)
async def reload(request: Request, state: State, body: ReloadRequest | None = None):
    """Load a run, check it, swap it in; a bad run is refused and the old one serves on."""
    host = request.client.host if request.client else ""
    if not state.config.admin_anywhere and host not in LOOPBACK:
        raise ApiError(
            403,
            "forbidden",
            f"/admin/reload is loopback-only (from {host!r}); start with --admin-anywhere",
        )
    return JSONResponse(await state.reload(body or ReloadRequest()))
