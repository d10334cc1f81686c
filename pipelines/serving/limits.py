"""Limits that hold under abuse: the items cap of a batch answer (checked before any work)
and the header timeout of a connection (a wrapper round uvicorn's HTTP protocol).

uvicorn 0.55 drops an idle keep-alive connection after ``timeout_keep_alive`` (set from
``ServeConfig.idle_timeout_s``), but nothing drops a connection that opened and sent nothing,
or sent part of a request line or of its headers: :func:`header_timeout_protocol` closes it
``header_timeout_s`` after it opened, or after the first byte of its next request, unless the
request's headers are complete by then.
"""

from __future__ import annotations

import asyncio

from pipelines.serving.config import ServeConfig
from pipelines.serving.errors import ApiError


def check_batch_items(ks: list[int], config: ServeConfig) -> None:
    """A 413 naming the cap and the requested total if ``sum(ks)`` (the items of one batch
    answer: queries x k) exceeds ``config.max_batch_items``."""
    total = sum(ks)
    if total > config.max_batch_items:
        raise ApiError(
            413,
            "batch_too_large",
            f"the batch asks for {total} items in all (sum of k over {len(ks)} queries), "
            f"max_batch_items={config.max_batch_items}; split it or lower k",
            [
                {
                    "field": "queries",
                    "got": total,
                    "expected": f"at most {config.max_batch_items} items (sum of k)",
                }
            ],
        )


def _base_protocol():
    """The protocol class uvicorn's ``http="auto"`` picks (httptools if installed, else h11)."""
    try:
        import httptools  # noqa: F401
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as base
    except ImportError:
        from uvicorn.protocols.http.h11_impl import H11Protocol as base
    return base


def header_timeout_protocol(timeout_s: float, base=None) -> type:
    """uvicorn's HTTP protocol class with a header timeout (pass it as ``uvicorn.Config(http=)``)."""
    base = base or _base_protocol()

    class HeaderTimeoutProtocol(base):
        _header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._arm_header_timer()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            self._arm_header_timer()

        def connection_lost(self, exc) -> None:
            self._cancel_header_timer()
            super().connection_lost(exc)

        def _in_request(self) -> bool:
            """Headers complete and its response not yet sent."""
            cycle = getattr(self, "cycle", None)
            return cycle is not None and not cycle.response_complete

        def _arm_header_timer(self) -> None:
            if self._in_request() or self.transport.is_closing():
                self._cancel_header_timer()
            elif self._header_timer is None:
                self._header_timer = self.loop.call_later(timeout_s, self._header_timeout)

        def _cancel_header_timer(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _header_timeout(self) -> None:
            self._header_timer = None
            if not self._in_request() and not self.transport.is_closing():
                self.transport.close()

    return HeaderTimeoutProtocol
