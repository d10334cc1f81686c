"""`recdistill serve`: a finished run behind HTTP (FastAPI on uvicorn; ``--workers N``
processes share one port, :mod:`pipelines.serving.workers`).

``recdistill serve --run runs/demo`` loads the run's student (int8 if it has one), builds or
loads its item index, and serves ``pipelines.serving.app`` on ``--host``/``--port``; the
OpenAPI page is at ``/docs``. SIGHUP or ``POST /admin/reload`` reloads.
"""

from __future__ import annotations

import logging

from pipelines.serving.config import ServeConfig

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
            timeout_graceful_shutdown=10,
        )
    )


def run(config: ServeConfig) -> dict:
    """Serve until stopped (SIGINT/SIGTERM); returns what was served."""
    if config.workers > 1:
        from pipelines.serving import workers

        return workers.run(config, make_server)
    from pipelines.serving.app import create_app

    app = create_app(config)  # a bad run raises ServeError: the CLI prints one line, exit 2
    state = app.state.serving
    try:
        make_server(app, config, state.engine.model_fingerprint).run()
    except KeyboardInterrupt:  # as uvicorn.run: Ctrl-C is the way to stop it
        pass
    return {"served": state.engine.describe()}
