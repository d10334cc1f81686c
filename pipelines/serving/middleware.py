"""Pure ASGI middleware: the body size limit (413), in-flight counting for the batcher, and the
request metrics (count and latency by route and status)."""

from __future__ import annotations

import time

from pipelines.serving.errors import ApiError
from pipelines.serving.state import ServingState

# answered before the run is loaded (everything else is a 503 "not_ready")
OPEN_WHILE_LOADING = frozenset({"/healthz", "/readyz", "/metrics", "/docs", "/openapi.json"})


class ServingMiddleware:
    """Body size limit (413), in-flight counting for the batcher, metrics."""

    def __init__(self, app, state: ServingState) -> None:
        self.app, self.state = app, state

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        st = self.state
        if st.engine is None and scope["path"] not in OPEN_WHILE_LOADING:
            await self._not_loaded().response()(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = {"code": 500}

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        arriving = scope["path"] == "/recommend" and st.batcher is not None
        if arriving:
            st.batcher.arriving += 1
            scope.setdefault("state", {})["arriving"] = True
        try:
            if scope["method"] in ("POST", "PUT", "PATCH"):
                body = await self._read_body(scope, receive)
                if body is None:
                    await self._too_large().response()(scope, receive, send_wrapper)
                    return
                receive = _replay(body, receive)
            await self.app(scope, receive, send_wrapper)
        finally:
            if arriving and scope["state"].pop("arriving", False):
                st.batcher.arriving -= 1
            route = scope.get("route")
            endpoint = getattr(route, "path", None) or "unmatched"
            st.metrics.requests.labels(endpoint, str(status["code"])).inc()
            st.metrics.latency.labels(endpoint).observe(time.perf_counter() - t0)

    def _not_loaded(self) -> ApiError:
        st = self.state
        why = f"the run failed to load: {st.load_error}" if st.load_error else "loading the run"
        return ApiError(503, "not_ready", f"not ready ({why}); see /readyz")

    def _too_large(self) -> ApiError:
        limit = self.state.config.max_body_bytes
        return ApiError(
            413,
            "body_too_large",
            f"request body exceeds max_body_bytes={limit}",
            [{"field": "body", "message": "too large", "expected": f"at most {limit} bytes"}],
        )

    async def _read_body(self, scope, receive) -> bytes | None:
        limit = self.state.config.max_body_bytes
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    if int(value) > limit:
                        return None
                except ValueError:
                    pass
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)


def _replay(body: bytes, receive):
    sent = {"done": False}

    async def replay():
        if not sent["done"]:
            sent["done"] = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
