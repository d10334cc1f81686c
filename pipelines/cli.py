"""`recdistill`: one console script, one subcommand per job.

Each subcommand maps to a config dataclass and a ``run(config) -> dict``; this module only
parses (``--config file.yaml`` plus flag overrides; unknown flags are rejected).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from pipelines.core.config import add_config_args, config_from_args

# subcommand -> (module, config class, one-line help). Modules are imported on use so that
# `recdistill prepare` does not pay for torch/transformers imports.
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
    "demo": (
        "pipelines.demo",
        "DemoConfig",
        "the whole chain on the packaged defaults, reusing finished steps",
    ),
}

logger = logging.getLogger("recdistill")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="recdistill", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module, cls_name, help_) in JOBS.items():
        cls = getattr(importlib.import_module(module), cls_name)
        p = sub.add_parser(name, help=help_, description=help_)
        add_config_args(p, cls)
    return parser


def main(argv: list[str] | None = None) -> dict:
    parser = build_parser()
    args = parser.parse_args(argv)
    verbose = args.__dict__.pop("verbose")
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    module_name, cls_name, _ = JOBS[args.command]
    module = importlib.import_module(module_name)
    try:
        config = config_from_args(getattr(module, cls_name), args)
    except ValueError as e:
        parser.error(str(e))
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
