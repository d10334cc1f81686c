"""`recdistill`: one console script, one subcommand per job.

Each subcommand maps to a config dataclass and a ``run(config) -> dict``. ``recdistill --help``
lists the jobs from the static table below; ``recdistill <job> ...`` imports that job's module
only, and parses ``--config file.yaml`` plus flags with the parser
``pipelines.core.config.ConfigParser`` builds from the config's annotations.

Errors: a job's own errors are printed as one line, ``recdistill <job>: error: <what is
wrong, where, what was expected>``, with no traceback (``--debug`` prints it too), and the
process exits with

- 0: done;
- 1: an unexpected error (a bug: the traceback is always printed);
- 2: bad input: flags or ``--config``, data (``DataError``), labels (``LabelError``), an
  artifact folder that is missing, truncated, of another kind or made for other data
  (``ArtifactError``), any other ``ValueError``;
- 3: the environment: a missing optional dependency (``ImportError``) or an operating-system
  error other than a missing file (full disk, permissions), named with its path;
- 130: interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import sys
import traceback

# subcommand -> (module, config class, one-line help). Modules are imported on use so that
# `recdistill prepare` does not pay for torch imports.
JOBS: dict[str, tuple[str, str, str]] = {
    "prepare": (
        "pipelines.baselines.prepare",
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
        "pipelines.experiments.ablation",
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
        "the whole chain in one command, on ml-100k or your own data (--items, --columns, ...),"
        " reusing finished steps",
    ),
    "report-readme": (
        "pipelines.evaluation.readme_tables",
        "ReportReadmeConfig",
        "rewrite the README's result tables from one make demo run (--check: exit 1 if stale)",
    ),
    "index-bench": (
        "pipelines.evaluation.index_bench",
        "IndexBenchConfig",
        "FAISS item indexes at catalogue scale on synthetic embeddings",
    ),
    "bench-ray": (
        "pipelines.experiments.bench_ray",
        "BenchRayConfig",
        "soft-label throughput in-process vs on Ray Data with 1 and 2 actors",
    ),
    "bench-serve": (
        "pipelines.experiments.bench_serve",
        "BenchServeConfig",
        "load test of recdistill serve over loopback vs a naive server and an empty endpoint",
    ),
    "bench-scale": (
        "pipelines.experiments.bench_scale",
        "BenchScaleConfig",
        "the whole chain on synthetic data at growing sizes: time, peak RSS, growth exponents",
    ),
    "bench-prefix": (
        "pipelines.experiments.bench_prefix",
        "BenchPrefixConfig",
        "naive vs shared-prefix yes/no scoring with a real causal LM teacher",
    ),
}

logger = logging.getLogger("recdistill")

# Your own data: these flags of every job with a ``dataset`` field are folded into that one
# spec string (``pipelines.data.loaders.TableSpec``), which the job records and fingerprints.
DATASET_FLAGS: dict[str, str] = {
    "items": "item table (CSV/TSV/Parquet): item_id plus any of title, year, genres, text",
    "users": "user table (CSV/TSV/Parquet): user_id plus any of age, gender, occupation",
    "columns": "interaction column names, ours=yours: user_id=uid,item_id=asin,rating=stars,"
    "timestamp=ts",
    "item_columns": "item table column names, ours=yours: title=name,genres=categories,"
    "text=description",
    "user_columns": "user table column names, ours=yours: age=user_age,occupation=job",
    "genre_sep": "separator of the genres cell of the item table (default '|')",
}


class _TopParser(argparse.ArgumentParser):
    def error(self, message: str):  # one line and a hint, as the jobs' parsers
        self.exit(2, f"{self.prog}: error: {message}\nsee {self.prog} --help\n")


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser: ``-v`` and the job names (no job module is imported)."""
    parser = _TopParser(prog="recdistill", description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument(
        "--debug", action="store_true", help="print the traceback of an error (see exit codes)"
    )
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
    parser.add_argument(
        "--debug", action="store_true", help="print the traceback of an error (see exit codes)"
    )
    if "dataset" in parser.field_names():
        group = parser.data_group()
        group.description = (
            "your own data: --items, --users, --columns, ... are folded into --dataset "
            "(data/README.md walks through it); a --config file takes them all as one "
            "section, data: {dataset: ratings.csv, items: movies.csv, columns: ...}"
        )
        _dataset_flags(group)
        parser.file_keys |= set(DATASET_FLAGS)
    return parser, module


def _dataset_flags(group) -> None:
    for name, help_ in DATASET_FLAGS.items():
        flags = [f"--{name.replace('_', '-')}"] + ([f"--{name}"] if "_" in name else [])
        metavar = "FILE" if name in ("items", "users") else "SEP" if name == "genre_sep" else "MAP"
        group.add_argument(*flags, dest=f"dataset_{name}", metavar=metavar, help=help_)


def with_dataset_flags(parser, config):
    """``config`` with the own-data flags (from the command line or the ``--config`` file of
    ``parser``'s last parse) folded into ``config.dataset``, its local paths made absolute."""
    import dataclasses

    from pipelines.data.loaders import table_spec
    from pipelines.data.tables import absolute_spec

    opts = {k: getattr(parser.namespace, f"dataset_{k}", None) for k in DATASET_FLAGS}
    try:
        spec = table_spec(config.dataset, **opts)
        # local paths recorded absolute: the run reads its data from any working folder
        return dataclasses.replace(config, dataset=absolute_spec(spec))
    except ValueError as e:
        parser.error(str(e))


# libraries' INFO lines that say nothing to a user: faiss's loader logs each CPU variant it
# could not load (``Could not load library with AVX512 support ... ModuleNotFoundError``)
QUIET_LOGGERS = ("faiss.loader",)


def setup_logging(verbose: bool = False) -> None:
    """The CLI's logging: INFO (DEBUG with ``-v``) to stderr; library noise at WARNING; the
    Hugging Face progress bars (hub, datasets, transformers) only on a terminal."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    if sys.stderr.isatty():
        return
    import os

    # read when the library is first imported (datasets is, later, by the jobs that use it)
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    os.environ["HF_DATASETS_DISABLE_PROGRESS_BARS"] = "1"
    from huggingface_hub.utils import disable_progress_bars
    from transformers.utils import logging as hf_logging

    disable_progress_bars()  # already imported (the parser is transformers')
    hf_logging.disable_progress_bar()
    if "datasets" in sys.modules:
        sys.modules["datasets"].disable_progress_bars()


EXIT_BAD_INPUT = 2
EXIT_ENVIRONMENT = 3
EXIT_BUG = 1
EXIT_INTERRUPTED = 130


def error_line(exc: BaseException) -> tuple[int, str]:
    """(exit code, one-line message) for an error raised by a job."""
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED, "interrupted"
    if isinstance(exc, (FileNotFoundError, NotADirectoryError, IsADirectoryError)):
        return EXIT_BAD_INPUT, _os_text(exc)
    if isinstance(exc, OSError):
        return EXIT_ENVIRONMENT, _os_text(exc)
    if isinstance(exc, ImportError):
        return EXIT_ENVIRONMENT, str(exc)
    if isinstance(exc, ValueError):  # DataError, LabelError, ArtifactError are ValueErrors
        return EXIT_BAD_INPUT, " ".join(str(exc).split()) or type(exc).__name__
    return EXIT_BUG, f"{type(exc).__name__}: {exc} (a bug in recdistill; please report it)"


def _os_text(exc: OSError) -> str:
    text = exc.strerror or str(exc)
    if exc.filename and str(exc.filename) not in text:
        text = f"{exc.filename}: {text}"
    if exc.errno == errno.ENOSPC:
        text += "; free some space or choose another --out"
    return " ".join(text.split())


def main(argv: list[str] | None = None) -> dict:
    """Run ``recdistill <job> [flags]``; returns the job's result. On an error, prints one line
    to stderr and raises ``SystemExit`` with the code in the module docstring."""
    argv = list(sys.argv[1:] if argv is None else argv)
    i = 0
    while i < len(argv) and argv[i].startswith("-"):
        i += 1
    top = build_parser().parse_args(argv[: i + 1])  # exits on --help or a bad job name
    rest = argv[i + 1 :]
    debug = top.debug or "--debug" in rest  # before or after the job name
    parser, module = job_parser(top.command)
    config = parser.parse_config(rest)
    if "dataset" in parser.field_names():
        config = with_dataset_flags(parser, config)
    setup_logging(top.verbose)
    try:
        result = module.run(config)
    except (Exception, KeyboardInterrupt) as exc:
        code, text = error_line(exc)
        if debug or code == EXIT_BUG:
            traceback.print_exc()
        sys.stderr.write(f"recdistill {top.command}: error: {text}\n")
        raise SystemExit(code) from None
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
