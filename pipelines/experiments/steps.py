"""The one step graph: run a chain of jobs, reusing each step whose inputs did not change.

A :class:`Step` is a job's ``run`` with its config, the steps it reads (``inputs``) and the
folder it writes. Its key is a hash of its name, its config, the keys of its inputs and the
data fingerprint (``InteractionData.fingerprint()``); the key is recorded in the step's
marker (``<output>/recdistill_step.json`` unless the step names another file). A later run
reuses the step when the marker holds the same key, the step finished, its result is there
and none of its inputs was redone in this run; otherwise it runs again, and so does every
step that reads it. The demo, the ablation and bench-scale run their chains through
:class:`StepGraph`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.config import to_dict
from common.io import STEP_FILE, write_json

logger = logging.getLogger(__name__)


def _finished(result: dict) -> bool:
    return True


@dataclass(frozen=True)
class Step:
    """One job of a chain. ``config`` is the job's config dataclass, or any JSON value (e.g.
    a command line); ``result`` names the file in ``output`` that holds the job's result
    (None: the result is kept in the marker itself); ``done`` tells a finished result from a
    failed one (a failed step is recorded, never reused, and the steps after it are skipped)."""

    name: str
    run: Callable[[Any], dict]
    config: Any
    output: Path
    inputs: tuple[str, ...] = ()
    result: str | None = None
    marker: Path | None = None
    done: Callable[[dict], bool] = field(default=_finished, compare=False)

    @property
    def marker_path(self) -> Path:
        return Path(self.marker) if self.marker is not None else Path(self.output) / STEP_FILE


@dataclass
class StepRun:
    """What :meth:`StepGraph.run` did with one step. ``result`` is None for a step that was
    skipped (``blocked_by`` names the failed step before it) or not selected and never run."""

    name: str
    key: str
    result: dict | None
    ran: bool = False
    seconds: float = 0.0  # wall time of this call (about 0 when reused)
    recorded_seconds: float | None = None  # the job's time when it last ran
    blocked_by: str | None = None


def _config_json(config: Any) -> Any:
    return to_dict(config) if dataclasses.is_dataclass(config) else config


def step_key(name: str, config: Any, input_keys: list[str], fingerprint: str) -> str:
    """16 hex digits of sha256 over the step's name, config, input keys and data fingerprint."""
    blob = json.dumps([name, _config_json(config), input_keys, fingerprint], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _read(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


class StepGraph:
    """Runs steps in the order given, on data with fingerprint ``fingerprint``; each step's
    inputs must have been given to :meth:`run` before it."""

    def __init__(self, fingerprint: str):
        self.fingerprint = fingerprint
        self.runs: dict[str, StepRun] = {}
        self._redone: dict[str, bool] = {}
        self._failed: dict[str, str | None] = {}

    def key(self, step: Step) -> str:
        missing = [i for i in step.inputs if i not in self.runs]
        if missing:
            raise ValueError(f"step {step.name!r} reads {missing}, which have not been run yet")
        keys = [self.runs[i].key for i in step.inputs]
        return step_key(step.name, step.config, keys, self.fingerprint)

    def run(self, step: Step, *, selected: bool = True) -> StepRun:
        """Run or reuse ``step``; an unselected step is neither, its recorded result is kept."""
        key = self.key(step)
        marker = _read(step.marker_path)
        redone = any(self._redone[i] for i in step.inputs)
        blocked = next((self._failed[i] for i in step.inputs if self._failed[i]), None)
        if not selected:
            recorded = (marker or {}).get("result") if step.result is None else None
            res = StepRun(step.name, key, recorded)
        elif blocked:
            res = StepRun(step.name, key, None, blocked_by=blocked)
        else:
            res = self._reuse(step, key, marker) if not redone else None
            res = res or self._execute(step, key)
            redone = res.ran
            if not step.done(res.result):
                blocked = step.name
        self._redone[step.name] = redone
        self._failed[step.name] = blocked
        self.runs[step.name] = res
        return res

    def _reuse(self, step: Step, key: str, marker: dict | None) -> StepRun | None:
        if not marker or marker.get("key") != key or marker.get("failed"):
            return None
        if step.result is None:
            result = marker.get("result")
        else:
            result = _read(Path(step.output) / step.result)
        if result is None:
            return None
        logger.info("[%s] unchanged (key %s): reusing %s", step.name, key, step.output)
        return StepRun(step.name, key, result, recorded_seconds=marker.get("seconds"))

    def _execute(self, step: Step, key: str) -> StepRun:
        logger.info("[%s] running -> %s", step.name, step.output)
        config = step.config
        if dataclasses.is_dataclass(config) and "overwrite" in {
            f.name for f in dataclasses.fields(config)
        }:  # the step's own folder (not part of the key)
            config = dataclasses.replace(config, overwrite=True)
        t0 = time.perf_counter()
        result = step.run(config)
        seconds = time.perf_counter() - t0
        logger.info("[%s] done in %.1fs", step.name, seconds)
        record: dict[str, Any] = {"key": key, "step": step.name, "seconds": seconds}
        if step.result is None:
            record["result"] = result
        if not step.done(result):
            record["failed"] = True
        write_json(step.marker_path, record)
        return StepRun(step.name, key, result, ran=True, seconds=seconds, recorded_seconds=seconds)
