"""``recdistill serve --engine ray --replicas N``: the same app as a Ray Serve deployment.

Each replica is a Ray actor that builds the app with :func:`pipelines.serving.app.create_app`
(so the routes, bodies and errors are the ones ``--engine uvicorn`` serves) and loads the run
itself; Ray Serve's proxy listens on ``--host``/``--port`` and spreads requests over the
replicas. ``ray.init`` starts a local Ray with ``replicas x torch_threads`` CPUs unless
``--ray-address`` (or ``$RAY_ADDRESS``) names a cluster to join (then the run's paths must be
readable on every node).

Reload is a redeploy: a request reaches one replica, so ``POST /admin/reload`` on a replica
would reload that one only; it answers 409 saying so. SIGHUP to the ``recdistill serve``
process loads and checks the configured run in the driver (as a reload does: a bad run is
refused and the old replicas serve on), then ``serve.run`` deploys a new version: Ray Serve
starts new replicas, waits until they are ready, then drains the old ones.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import socket
import threading

from pipelines.serving.artifacts import Engine, ServeError, check_replacement
from pipelines.serving.config import ServeConfig

logger = logging.getLogger(__name__)

APP_NAME = "recdistill"
DEPLOYMENT_NAME = "Recommender"


def fingerprints(engine: Engine) -> dict:
    return {
        "model_fingerprint": engine.model_fingerprint,
        "index_fingerprint": engine.index_fingerprint,
    }


def replica_config(config: ServeConfig) -> ServeConfig:
    """What a replica runs: no SIGHUP of its own (the driver redeploys), no serving.json (the
    driver writes it), micro-batching per replica as configured."""
    return dataclasses.replace(config, engine="uvicorn", replicas=1, sighup=False, out=None)


def build_replica_app(config: ServeConfig, expect: dict | None = None):
    """The app one replica serves: ``create_app`` with ``/admin/reload`` answering 409 (a reload
    is a redeploy). ``expect`` (fingerprints the driver checked) must match what was loaded."""
    from pipelines.serving.app import create_app
    from pipelines.serving.errors import ERRORS, ApiError

    app = create_app(config)
    got = fingerprints(app.state.serving.engine)
    if expect is not None and got != expect:
        raise ServeError(f"replica loaded {got}, the driver checked {expect}: the run changed")

    @app.post("/admin/reload", status_code=409, responses=ERRORS, include_in_schema=False)
    async def reload():
        """Under Ray Serve a reload is a redeploy: send SIGHUP to ``recdistill serve``."""
        raise ApiError(
            409,
            "reload_is_redeploy",
            "under --engine ray a request reaches one replica, so /admin/reload would reload "
            "only that one; send SIGHUP to the `recdistill serve` process to redeploy every "
            "replica with the run reloaded",
        )

    app.router.routes.insert(0, app.router.routes.pop())  # matched before the app's own
    return app


def make_deployment():
    """The Ray Serve deployment class (imports Ray: only called when Ray is wanted)."""
    from ray import serve

    @serve.deployment(name=DEPLOYMENT_NAME)
    @serve.ingress()
    class Recommender:
        def __init__(self, config: ServeConfig, expect: dict | None = None) -> None:
            self.config, self.expect = config, expect

        def __serve_build_asgi_app__(self):
            return build_replica_app(self.config, self.expect)

    return Recommender


def bind(config: ServeConfig, expect: dict | None = None):
    """The application ``serve.run`` deploys: ``config.replicas`` replicas, each reserving
    ``torch_threads`` CPUs."""
    return (
        make_deployment()
        .options(
            num_replicas=config.replicas,
            ray_actor_options={"num_cpus": config.torch_threads},
        )
        .bind(replica_config(config), expect)
    )


def free_port(host: str) -> int:
    """A port free now on ``host`` (Ray Serve's proxy needs a number, not 0)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def start(config: ServeConfig, engine: Engine) -> int:
    """Start (or join) Ray, start Serve's proxy on ``config.host``/port, deploy; returns the
    port. Blocks until every replica is ready."""
    import ray
    from ray import serve

    port = config.port or free_port(config.host)
    if config.ray_address or os.environ.get("RAY_ADDRESS"):
        ray.init(address=config.ray_address)  # None: $RAY_ADDRESS
    else:
        ray.init(num_cpus=config.replicas * config.torch_threads, include_dashboard=False)
    serve.start(http_options={"host": config.host, "port": port})
    serve.run(bind(config, fingerprints(engine)), name=APP_NAME, route_prefix="/")
    return port


def stop() -> None:
    import ray
    from ray import serve

    serve.shutdown()
    ray.shutdown()


def redeploy(config: ServeConfig, current: Engine) -> Engine:
    """Load and check the configured run (a bad one raises ServeError; nothing changes), then
    roll every replica onto it."""
    from pipelines.serving.state import load

    new = load(config)
    check_replacement(current, new, False)
    from ray import serve

    serve.run(bind(config, fingerprints(new)), name=APP_NAME, route_prefix="/")
    logger.info("redeployed: %s -> %s", current.model_fingerprint, new.model_fingerprint)
    return new


def run(config: ServeConfig) -> dict:
    """Serve with Ray Serve until SIGINT/SIGTERM; SIGHUP redeploys. Returns what was served."""
    from pipelines.serving.state import load

    try:
        import ray.serve  # noqa: F401
    except ImportError as exc:
        raise ServeError(
            f"--engine ray needs Ray Serve ({exc}): pip install 'recdistill[ray]' "
            "(ray[serve]==2.60.0)"
        ) from None
    engine = load(config)  # a bad run is refused here, in one line, before Ray starts
    stopping, hup = threading.Event(), threading.Event()
    old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    if config.sighup:  # a SIGHUP while the replicas start redeploys once they are up
        signal.signal(signal.SIGHUP, lambda *_: hup.set())
    try:
        port = start(config, engine)
        # after ray.init, which sets its own SIGTERM handler (sys.exit; its C++ one aborts)
        signal.signal(signal.SIGTERM, lambda *_: stopping.set())
        logger.info(
            "serving %s on http://%s:%d with Ray Serve, %d replicas (docs at /docs)",
            engine.model_fingerprint,
            config.host,
            port,
            config.replicas,
        )
        while not stopping.wait(0.2):
            if hup.is_set():
                hup.clear()
                logger.info("SIGHUP: reloading %s and redeploying", config.run)
                try:
                    engine = redeploy(config, engine)
                except Exception as exc:  # one line, no traceback: the old replicas serve on
                    logger.error(
                        "reload refused, still serving %s: %s", engine.model_fingerprint, exc
                    )
    finally:
        stop()
        for s, h in old.items():
            signal.signal(s, h)
    return {"served": engine.describe(), "engine": "ray", "replicas": config.replicas}
