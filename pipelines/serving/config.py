"""``ServeConfig``: what ``recdistill serve`` loads and how the server runs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from common.config import check_choice
from student.serving.config import INDEX_KINDS, IndexKind

MAX_K = 1000  # the default largest k
MAX_K_LIMIT = 100_000


@dataclass
class ServeConfig:
    run: str | None = field(
        default="runs/demo",
        metadata={"help": "a finished run folder (recdistill demo --out): model, index, data"},
    )
    model: str | None = field(
        default=None,
        metadata={"help": "student folder to serve instead of the run's (int8 or plain)"},
    )
    index: str | None = field(
        default=None,
        metadata={"help": "saved ItemIndex folder (default: <run>/index, else built at start)"},
    )
    index_type: IndexKind = field(
        default="flat",
        metadata={"help": f"kind of the index built at start, one of {INDEX_KINDS}"},
    )
    host: str = field(default="127.0.0.1", metadata={"help": "address to bind"})
    port: int = field(default=8000, metadata={"help": "port to bind (0 = any free port)"})
    workers: int = field(
        default=1,
        metadata={
            "help": "server processes on the one port (pipelines.serving.workers), each with "
            "its own model copy, the index file memory-mapped and shared; reload reaches all"
        },
    )
    torch_threads: int = field(
        default=1, metadata={"help": "torch intra-op threads of the compute thread"}
    )
    faiss_threads: int = field(
        default=1, metadata={"help": "faiss OpenMP threads of the compute thread"}
    )
    micro_batch: bool = field(
        default=True,
        metadata={"help": "join concurrent /recommend requests into one tower call and search"},
    )
    max_batch: int = field(default=128, metadata={"help": "most requests in one micro-batch"})
    max_wait_ms: float = field(
        default=0.0,
        metadata={
            "help": "longest an idle compute thread waits for requests already being parsed "
            "(0 = never: batches form from the requests queued while it is busy; README)"
        },
    )
    batch_independent: bool = field(
        default=True,
        metadata={
            "help": "run int8 Linear layers with the dequant kernel: qlinear quantizes "
            "activations per call, so a user's answer would depend on its micro-batch"
        },
    )
    max_k: int = field(default=MAX_K, metadata={"help": "largest k a request may ask"})
    max_batch_queries: int = field(
        default=1000, metadata={"help": "most queries in one /recommend/batch request"}
    )
    max_body_bytes: int = field(
        default=1 << 20, metadata={"help": "largest request body accepted (413 above)"}
    )
    max_batch_items: int = field(
        default=100_000,
        metadata={"help": "most items in one /recommend/batch answer (sum of k; 413 above)"},
    )
    header_timeout_s: float = field(
        default=10.0,
        metadata={"help": "close a connection whose request headers are unfinished after this"},
    )
    idle_timeout_s: float = field(
        default=5.0, metadata={"help": "close an idle keep-alive connection after this"}
    )
    admin_anywhere: bool = field(
        default=False,
        metadata={"help": "accept /admin/reload from any address (default: loopback only)"},
    )
    sighup: bool = field(default=True, metadata={"help": "reload the run on SIGHUP"})
    access_log: bool = field(default=False, metadata={"help": "uvicorn access log lines"})
    engine: Literal["uvicorn", "ray"] = field(
        default="uvicorn",
        metadata={"help": "uvicorn: one process; ray: a Ray Serve deployment (docs/ray.md)"},
    )
    replicas: int = field(default=1, metadata={"help": "Ray Serve replicas (--engine ray)"})
    ray_address: str | None = field(
        default=None,
        metadata={"help": "Ray cluster to join (--engine ray; default: start a local Ray)"},
    )
    out: str | None = field(
        default=None,
        metadata={
            "help": "folder for serving.json (what is loaded: paths, fingerprints, address), "
            "rewritten at start and on every reload; None = write nothing"
        },
    )

    def __post_init__(self) -> None:
        if self.index_type not in INDEX_KINDS:
            raise ValueError(
                f"ServeConfig.index_type={self.index_type!r}; expected one of {INDEX_KINDS}"
            )
        check_choice("ServeConfig", "engine", self.engine, ("uvicorn", "ray"))
        if self.engine != "ray" and (self.replicas != 1 or self.ray_address):
            raise ValueError(
                "ServeConfig.replicas/ray_address apply to --engine ray only; "
                f"engine is {self.engine!r}"
            )
        if self.engine == "ray" and self.workers != 1:
            raise ValueError(
                f"ServeConfig.workers={self.workers} applies to --engine uvicorn; with --engine "
                "ray give --replicas"
            )
        for name, low, high in (
            ("port", 0, 65535),
            ("workers", 1, 256),
            ("torch_threads", 1, 256),
            ("faiss_threads", 1, 256),
            ("max_batch", 1, 1 << 16),
            ("max_k", 1, MAX_K_LIMIT),
            ("max_batch_queries", 1, 1 << 16),
            ("max_body_bytes", 64, 1 << 30),
            ("max_batch_items", 1, 1 << 30),
            ("replicas", 1, 1024),
        ):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not low <= v <= high:
                raise ValueError(
                    f"ServeConfig.{name}={v!r}; expected an integer in [{low}, {high}]"
                )
        for name, high in (
            ("max_wait_ms", 1000),
            ("header_timeout_s", 3600),
            ("idle_timeout_s", 3600),
        ):
            v = getattr(self, name)
            low = 0 if name == "max_wait_ms" else 0.01
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not low <= v <= high:
                raise ValueError(f"ServeConfig.{name}={v!r}; expected a number in [{low}, {high}]")
