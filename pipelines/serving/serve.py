"""`recdistill serve`: a finished run behind HTTP (FastAPI on uvicorn; ``--workers N``
processes share one port, :mod:`pipelines.serving.workers`).

``recdistill serve --run runs/demo`` loads the run's student (int8 if it has one), builds or
loads its item index, and serves ``pipelines.serving.app`` on ``--host``/``--port``; the
OpenAPI page is at ``/docs``. SIGHUP or ``POST /admin/reload`` reloads.
"""

from __future__ import annotations

import logging

from pipelines.serving.config import ServeConfig
from pipelines.serving.limits import header_timeout_protocol

__all__ = ["ServeConfig", "run"]

logger = logging.getLogger(__name__)


def bound_port(server) -> int | None:
    """The port a started ``uvicorn.Server`` listens on (the one the OS picked for port 0)."""
    for s in getattr(server, "servers", ()):
        for sock in s.sockets:
            return int(sock.getsockname()[1])
    return None


def make_server(app, config: ServeConfig, what: str):
    """A ``uvicorn.Server`` for ``app`` that logs, once started, the address it is bound to
    (``what`` is served there)."""
    import uvicorn

    from pipelines.serving.stack import stack

    class Server(uvicorn.Server):
        async def startup(self, sockets=None) -> None:
            await super().startup(sockets=sockets)
            if self.should_exit:  # it could not bind: uvicorn logged why
                return
            port = bound_port(self) or config.port
            logger.info("serving %s on http://%s:%d (docs at /docs)", what, config.host, port)

    return Server(
        uvicorn.Config(
            app,
            host=config.host,
            port=config.port,
            log_level="info",
            access_log=config.access_log,
            workers=1,
            loop=stack(log=True)["loop"],
            # the stack's http implementation (httptools where installed), with a header timeout
            http=header_timeout_protocol(config.header_timeout_s),
            timeout_graceful_shutdown=10,
            timeout_keep_alive=config.idle_timeout_s,
        )
    )


def run(config: ServeConfig) -> dict:
    """Serve until stopped (SIGINT/SIGTERM); returns what was served.

    ``--engine ray`` hands over to Ray Serve (``pipelines.serving.ray_serve``), ``--workers N``
    to N processes (``pipelines.serving.workers``). Otherwise the
    port opens first and the run loads on a thread (``/readyz`` 503 "loading"); paths are
    checked before (a bad one is the CLI's one-line error). If that first load fails the
    server stops and this raises :class:`ServeError` (the CLI exits 2)."""
    if config.engine == "ray":
        from pipelines.serving.ray_serve import run as run_ray

        return run_ray(config)
    from pipelines.serving.app import create_app
    from pipelines.serving.artifacts import ServeError
    from pipelines.serving.state import resolve_configured

    resolve_configured(config)  # cheap (JSON only): a bad path fails before the port opens
    if config.workers > 1:
        from pipelines.serving import workers

        return workers.run(config, make_server)
    app = create_app(config, background=True)
    state = app.state.serving
    server = make_server(app, config, config.model or config.run or "")
    state.on_load_failed = lambda: setattr(server, "should_exit", True)
    try:
        server.run()
    except KeyboardInterrupt:  # as uvicorn.run: Ctrl-C is the way to stop it
        pass
    if state.engine is None:
        raise ServeError(state.load_error or "stopped before the run was loaded")
    return {"served": state.engine.describe()}
