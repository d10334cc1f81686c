"""`recdistill serve`: a finished run behind HTTP (FastAPI on uvicorn, one process).

``recdistill serve --run runs/demo`` loads the run's student (int8 if it has one), builds or
loads its item index, and serves ``pipelines.serving.app`` on ``--host``/``--port``; the
OpenAPI page is at ``/docs``. SIGHUP or ``POST /admin/reload`` reloads.
"""

from __future__ import annotations

import logging

from pipelines.serving.config import ServeConfig

__all__ = ["ServeConfig", "run"]

logger = logging.getLogger(__name__)


def run(config: ServeConfig) -> dict:
    """Serve until stopped (SIGINT/SIGTERM); returns what was served."""
    import uvicorn

    from pipelines.serving.app import create_app

    app = create_app(config)  # a bad run raises ServeError: the CLI prints one line, exit 2
    state = app.state.serving
    logger.info(
        "serving %s on http://%s:%d (docs at /docs)",
        state.engine.model_fingerprint,
        config.host,
        config.port,
    )
    uvicorn.run(
        app,
        host=config.host,
        port=config.port,
        log_level="info",
        access_log=config.access_log,
        workers=1,
        timeout_graceful_shutdown=10,
    )
    return {"served": state.engine.describe()}
