"""The data argument group: which dataset, which split. Declared once here; a job that reads a
split inherits it (``class BenchmarkConfig(DataArgs, OutputArgs, ThreadArgs)``). The CLI folds
the own-data flags (``--items``, ``--columns``, ...) into ``dataset`` (``pipelines/cli.py``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from common.config import check_int
from pipelines.core.args import JobArgs
from pipelines.data.splits import ColdSetting, ProtocolName


@dataclass(kw_only=True)
class DataArgs(JobArgs):
    group_title: ClassVar[str | None] = "data"

    dataset: str = field(
        default="ml-100k",
        metadata={
            "help": "dataset spec: ml-100k, grouplens:/path, synthetic:users=..,items=.., or "
            "your own interactions file (see the own-data flags)"
        },
    )
    protocol: ProtocolName = field(default="random", metadata={"help": "split protocol"})
    split_seed: int = field(default=0, metadata={"help": "split seed"})
    cold_setting: ColdSetting = field(
        default="inductive",
        metadata={
            "help": "cold_items only: inductive (the cold-test items arrive after training: no "
            "label, candidate or negative holds them, they are scored from content at test "
            "time) or transductive (known to the label job and the student, without "
            "interactions); part of the split fingerprint"
        },
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int(type(self).__name__, "split_seed", self.split_seed, 0)
