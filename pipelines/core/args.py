"""Argument groups shared by the jobs, declared once (trl's ``ScriptArguments`` idea).

A job config inherits the groups it takes: ``class TrainStudentConfig(DataArgs, OutputArgs,
ThreadArgs)`` (``DataArgs`` is in ``pipelines.data.args``, beside the split protocols). Each
group's fields, help and checks are written here once; a job gives its own default for a field
in its ``defaults`` class variable (``defaults = {"out": "runs/student"}``), which the parser
shows and a config built in code gets. The CLI's ``--help`` lists each group under its title.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

from common.config import check_int, check_literals


@dataclass(kw_only=True)
class JobArgs:
    """Base of every argument group: fills a field left at ``None`` from the job's
    ``defaults`` (then from the group's ``fallback``), then checks every ``Literal`` field of
    the job against its allowed values (the one ``Literal`` check; a job's ``__post_init__``
    calls ``super().__post_init__()`` first)."""

    group_title: ClassVar[str | None] = None
    defaults: ClassVar[dict[str, Any]] = {}
    fallback: ClassVar[dict[str, Any]] = {}

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            if getattr(self, f.name) is None and f.name in self.job_defaults():
                setattr(self, f.name, self.job_defaults()[f.name])
        check_literals(self)

    @classmethod
    def job_defaults(cls) -> dict[str, Any]:
        """The group fallbacks overridden by the job's own ``defaults``."""
        out: dict[str, Any] = {}
        for klass in reversed(cls.__mro__):
            out.update(klass.__dict__.get("fallback", {}))
        for klass in reversed(cls.__mro__):
            out.update(klass.__dict__.get("defaults", {}))
        return out


@dataclass(kw_only=True)
class OutputArgs(JobArgs):
    """Where a job writes, and whether it may replace its own earlier output."""

    group_title: ClassVar[str | None] = "output"
    fallback: ClassVar[dict[str, Any]] = {"out": "runs/out"}

    out: str = field(default=None, metadata={"help": "output folder"})  # type: ignore[assignment]
    overwrite: bool = field(
        default=False,
        metadata={
            "help": "replace --out if it holds this job's output from an earlier run (a folder "
            "holding anything else is refused)"
        },
    )


@dataclass(kw_only=True)
class ThreadArgs(JobArgs):
    """CPU threads of torch (and faiss, BLAS where the job uses them)."""

    group_title: ClassVar[str | None] = "threads"
    fallback: ClassVar[dict[str, Any]] = {"threads": 2}

    threads: int = field(default=None, metadata={"help": "CPU threads (torch, faiss, BLAS)"})  # type: ignore[assignment]

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int(type(self).__name__, "threads", self.threads, 1)
