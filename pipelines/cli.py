"""`recdistill`: one console script, one subcommand per job.

Each subcommand maps to a config dataclass and a ``run(config) -> dict``. ``recdistill --help``
lists the jobs from the static table below; ``recdistill <job> ...`` imports that job's module
only, and parses ``--config file.yaml`` plus flags with the parser
``pipelines.core.config.ConfigParser`` builds from the config's annotations.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# subcommand -> (module, config class, one-line help). Modules are imported on use so that
# `recdistill prepare` does not pay for torch imports.
JOBS: dict[str, tuple[str, str, str]] = {
    "prepare": (
        "pipelines.data.prepare",
        "PrepareConfig",
        "load and split a dataset; print statistics and baselines",
    ),
    "adapt-teacher": (
        "pipelines.labels.adapt_teacher",
        "AdaptTeacherConfig",
        "LoRA-adapt the LLM teacher to the train interactions (yes/no or contrastive)",
    ),
    "generate-labels": (
        "pipelines.labels.generate_labels",
        "GenerateLabelsConfig",
        "score candidates with the teacher; write the soft-label dataset",
    ),
    "train-student": (
        "pipelines.training.train_student",
        "TrainStudentConfig",
        "train the two-tower student (distilled, or --no-teacher)",
    ),
    "ablation": (
        "pipelines.evaluation.ablation",
        "AblationConfig",
        "hard-only vs distilled students over seeds and protocols, with bootstrap intervals",
    ),
    "compress": (
        "pipelines.compression.compress",
        "CompressConfig",
        "prune (physically smaller layers) and int8-quantize a student",
    ),
    "benchmark": (
        "pipelines.evaluation.benchmark",
        "BenchmarkConfig",
        "quality and cost of teacher, baselines, students and FAISS indexes in one report",
    ),
    "serve": (
        "pipelines.serving.serve",
        "ServeConfig",
        "serve a finished run over HTTP (FastAPI/uvicorn): recommend, similar items, reload",
    ),
    "demo": (
        "pipelines.demo",
        "DemoConfig",
        "the whole chain on the packaged defaults, reusing finished steps",
    ),
    "index-bench": (
        "pipelines.evaluation.index_bench",
        "IndexBenchConfig",
        "FAISS item indexes at catalogue scale on synthetic embeddings",
    ),
    "bench-ray": (
        "pipelines.evaluation.bench_ray",
        "BenchRayConfig",
        "soft-label throughput in-process vs on Ray Data with 1 and 2 actors",
    ),
    "bench-serve": (
        "pipelines.evaluation.bench_serve",
        "BenchServeConfig",
        "load test of recdistill serve over loopback vs a naive server and an empty endpoint",
    ),
    "bench-prefix": (
        "pipelines.evaluation.bench_prefix",
        "BenchPrefixConfig",
        "naive vs shared-prefix yes/no scoring with a real causal LM teacher",
    ),
}

logger = logging.getLogger("recdistill")


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser: ``-v`` and the job names (no job module is imported)."""
    parser = argparse.ArgumentParser(
        prog="recdistill", description=__doc__.splitlines()[0], allow_abbrev=False
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="<job>")
    for name, (_, _, help_) in JOBS.items():
        sub.add_parser(name, help=help_, add_help=False)
    return parser


def job_parser(name: str):
    """The parser of job ``name`` (imports its module) and the module."""
    from pipelines.core.config import ConfigParser

    module_name, cls_name, help_ = JOBS[name]
    module = importlib.import_module(module_name)
    parser = ConfigParser(getattr(module, cls_name), prog=f"recdistill {name}", description=help_)
    return parser, module


def main(argv: list[str] | None = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    i = 0
    while i < len(argv) and argv[i].startswith("-"):
        i += 1
    top = build_parser().parse_args(argv[: i + 1])  # exits on --help or a bad job name
    parser, module = job_parser(top.command)
    config = parser.parse_config(argv[i + 1 :])
    logging.basicConfig(
        level=logging.DEBUG if top.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    result = module.run(config)
    summary = getattr(module, "format_summary", None)
    if summary is not None:
        sys.stdout.write(summary(result) + "\n")
    return result


def cli() -> int:
    """Console-script entry point."""
    main()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(cli())
