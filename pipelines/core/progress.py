"""Progress of long loops, on a terminal and in a log file alike.

On a terminal a tqdm bar; when standard error is not a terminal (a job run by ``bench-scale``,
``nohup`` or a scheduler, whose output goes to a file) tqdm would either stay silent or fill
the file with carriage returns, so instead one INFO line is logged every ``every_s`` seconds:
done / total, rate and the time left.
"""

from __future__ import annotations

import logging
import sys
import time

from tqdm.auto import tqdm

logger = logging.getLogger(__name__)

LOG_EVERY_S = 60.0


def _duration(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


class Progress:
    """``with Progress(total, desc, unit) as p: ... p.update(n)``; ``p.set_postfix(**kv)``
    adds fields to the bar (and to the log line). ``tty`` None asks standard error; ``quiet``
    shows nothing (e.g. the other processes of a data-parallel job)."""

    def __init__(
        self,
        total: int | None = None,
        desc: str = "",
        unit: str = "it",
        every_s: float = LOG_EVERY_S,
        tty: bool | None = None,
        log: logging.Logger | None = None,
        quiet: bool = False,
    ):
        self.tty = sys.stderr.isatty() if tty is None else tty
        self.quiet = quiet
        self.total, self.desc, self.unit, self.every_s = total, desc, unit, every_s
        self.log = log or logger
        self.n, self.postfix = 0, {}
        self.t0 = self.last = time.monotonic()
        self.bar = tqdm(
            total=total, desc=desc, unit=unit, leave=False, disable=quiet or not self.tty
        )

    def update(self, n: int = 1) -> None:
        self.n += n
        self.bar.update(n)
        now = time.monotonic()
        if not self.tty and not self.quiet and now - self.last >= self.every_s:
            self.last = now
            self.log.info("%s", self.line(now))

    def set_postfix(self, **kv) -> None:
        self.postfix = kv
        self.bar.set_postfix(**kv)

    def line(self, now: float | None = None) -> str:
        elapsed = max(1e-9, (now if now is not None else time.monotonic()) - self.t0)
        rate = self.n / elapsed
        done = f"{self.n:,}" + (f"/{self.total:,}" if self.total else "")
        text = f"{self.desc}: {done} {self.unit} in {_duration(elapsed)}, {rate:,.1f} {self.unit}/s"
        if self.total and rate > 0:
            text += f", {_duration(max(0, self.total - self.n) / rate)} left"
        return text + "".join(f", {k}={v}" for k, v in self.postfix.items())

    def close(self) -> None:
        self.bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
