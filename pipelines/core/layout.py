"""The folders inside one run (what ``recdistill demo`` writes), spelled once.

``RunLayout(root)`` names each step's output; the demo, the ablation, bench-scale and the
serving load test build their paths from it instead of joining strings.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

MODEL = "model"  # a train-student output keeps its model here


@dataclass(frozen=True)
class RunLayout:
    """Paths of a run rooted at ``root``; nothing is created."""

    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    def student(self, name: str) -> Path:
        """A train-student output folder (``metrics.json`` + ``model/``)."""
        return self.root / name

    def model(self, name: str) -> Path:
        """The model folder of the train-student output ``name``."""
        return self.student(name) / MODEL

    @property
    def prepare(self) -> Path:
        return self.root / "prepare"

    @property
    def labels(self) -> Path:
        return self.root / "labels"

    @property
    def collab_cache(self) -> Path:
        return self.root / "collab_cache"

    @property
    def student_hard(self) -> Path:
        return self.student("student_hard")

    @property
    def student_distilled(self) -> Path:
        return self.student("student_distilled")

    @property
    def compressed(self) -> Path:
        return self.root / "compressed"

    @property
    def pruned(self) -> Path:
        return self.compressed / "pruned"

    @property
    def int8(self) -> Path:
        return self.compressed / "int8"

    @property
    def int8_fast(self) -> Path:
        return self.compressed / "int8_fast"

    @property
    def benchmark(self) -> Path:
        return self.root / "benchmark"

    def servable(self) -> tuple[Path, ...]:
        """Where a run keeps a servable model, preferred first (int8_fast: int8 only where it
        is faster; a train-student output alone has ``model/``)."""
        return (
            self.int8_fast,
            self.int8,
            self.pruned,
            self.model("student_distilled"),
            self.model("student_hard"),
            self.root / MODEL,
        )

    @property
    def cold(self) -> RunLayout:
        """The demo's cold-start chain: the same layout under ``cold/``."""
        return RunLayout(self.root / "cold")

    @property
    def transductive(self) -> RunLayout:
        """The cold chain's transductive students (the cold-test items known to their label
        job): the same layout under ``transductive/``."""
        return RunLayout(self.root / "transductive")

    @property
    def temporal(self) -> RunLayout:
        """The demo's sequential chain (temporal protocol): the same layout under
        ``temporal/``."""
        return RunLayout(self.root / "temporal")
