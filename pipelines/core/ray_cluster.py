"""Joining or starting the Ray cluster a job runs on (the labels' Ray Data engine, data-parallel
training on Ray Train).

``connect`` joins ``address`` (or ``$RAY_ADDRESS``) when given, passing the offline-mode and
cache variables on to the workers; uses an already initialised Ray as it is; and otherwise starts
a local Ray with at least the CPUs the job asks for. It returns whether it started Ray (then the
caller shuts it down)."""

from __future__ import annotations

import logging
import math
import os

logger = logging.getLogger(__name__)

# Environment a remote cluster's workers should share with the driver (offline mode, caches).
PASS_ENV = (
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "HF_DATASETS_OFFLINE",
    "HF_HOME",
    "TOKENIZERS_PARALLELISM",
)


def connect(ray, address: str | None, cpus: float, what: str) -> bool:
    """Make sure ``ray`` is initialised for a job needing ``cpus`` CPUs (``what`` names the
    request in the warning when this machine has fewer); True when this call started it."""
    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        env = {k: os.environ[k] for k in PASS_ENV if k in os.environ}
        logger.info("joining the Ray cluster at %s", address)
        ray.init(address=address, runtime_env={"env_vars": env} if env else None)
        return True
    need, have = math.ceil(cpus), os.cpu_count() or 1
    if need > have:
        logger.warning(
            "%s asks for %d CPUs; this machine has %d: the workers will share them",
            what,
            need,
            have,
        )
    ray.init(address="local", num_cpus=max(have, need), include_dashboard=False)
    return True
