"""`recdistill demo` (`make demo`): the whole chain in one command, on MovieLens-100K or
your own data (``--dataset ratings.csv --items movies.csv --columns ...``: the own-data flags
of every job, or a ``data:`` section in ``--config``).

The dataset -> embedding teacher (+ EASE^R) soft labels -> hard-only and distilled
students -> pruned and int8 student -> FAISS indexes -> benchmark report, all under ``out``;
then the same chain on the ``cold_items`` protocol under ``out/cold`` and on ``temporal``
(leave-last-out, students with a sequential user encoder) under ``out/temporal``.
``threads`` reaches every step but the benchmark, which times on its own default (1 thread)
unless ``--overrides '{benchmark: {threads: N}}'`` says otherwise. The collaborative model
(EASE^R or ALS) is fit once per chain: prepare, labels and benchmark share the chain's
``RunLayout.collab_cache`` folder. Each step logs one INFO line when it starts and one with
its seconds when it ends. Each step records a key (its config, the keys of the steps it reads and the data's
fingerprint: :mod:`pipelines.experiments.steps`); a rerun reuses a step whose key is
unchanged and redoes it (and what follows) when it changed.

``overrides`` passes settings to the steps' own configs: a mapping (or its YAML/JSON text on
the command line) of step name -> {field: value}, e.g.
``--overrides '{labels: {n_negatives: 10, max_users: 100}, compress: {finetune_epochs: 2}}'``.
Steps: ``prepare``, ``labels``, ``student_hard``, ``student_distilled``, ``compress``,
``benchmark``; fields are those of the step's job (``recdistill <job> --help``). Fields the
demo sets itself (paths between steps, dataset, protocol, teacher, seed, epochs) are refused:
use the demo's own field.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import yaml

from common.config import check_int
from common.io import write_json
from common.versions import source_commit
from pipelines.baselines import prepare
from pipelines.compression import compress
from pipelines.core.config import config_fields, make_config
from pipelines.core.layout import RunLayout
from pipelines.data import load_dataset
from pipelines.evaluation import benchmark
from pipelines.experiments.steps import STEP_FILE as STEP_FILE  # each step's marker
from pipelines.experiments.steps import Step, StepGraph
from pipelines.labels import generate_labels
from pipelines.labels.config import TeacherName
from pipelines.labels.schema import META_FILE
from pipelines.training import train_student
from student.model_config import UserEncoder

logger = logging.getLogger(__name__)

COLD_KL = 1.0  # the transductive distilled student: weight of the KL over cold candidates
# the temporal chain's distilled student: users whose lists enter each step's soft terms. A
# sequence step is ~10 users, so 128 lists a step cost 3.5x the hard steps; on ML-100K
# (split 0, seed 0) 32 gave validation NDCG@10 0.1181 in 103 s against 0.1203 in 247 s
# (docs/results.md): the demo keeps to its 15 minutes with 32
TEMPORAL_SOFT_USERS = 32


@dataclass
class DemoConfig:
    dataset: str = field(
        default="ml-100k",
        metadata={
            "help": "dataset spec: ml-100k, grouplens:/path, synthetic:..., or your own "
            "interactions file (with the own-data flags below)",
            "group": "data",
        },
    )
    protocol: Literal["random", "temporal"] = field(
        default="random", metadata={"help": "split protocol", "group": "data"}
    )
    threads: int = field(
        default=2,
        metadata={
            "help": "CPU threads of every step but the benchmark, which times on 1 thread "
            "(--overrides '{benchmark: {threads: N}}' to change it)",
            "group": "threads",
        },
    )
    teacher: TeacherName = field(
        default="embedding", metadata={"help": "LLM part of the teacher: embedding or causal_lm"}
    )
    teacher_model: str | None = field(
        default=None, metadata={"help": "teacher model (default: the packaged one)"}
    )
    seed: int = field(default=0, metadata={"help": "training seed"})
    epochs: int = field(default=40, metadata={"help": "maximum student epochs"})
    cold_start: bool = field(
        default=True,
        metadata={
            "help": "also run the cold-start chain (cold_items protocol) under <out>/cold: "
            "content-map teacher, content-tower students with id dropout, int8, cold report"
        },
    )
    cold_transductive: bool = field(
        default=True,
        metadata={
            "help": "cold chain: also make labels, the distilled student and its int8 form with "
            "the cold-test items known to the label job (--cold-setting transductive) under "
            "<out>/cold/transductive, for the report's cold_transductive segment; the cold "
            "chain itself is inductive"
        },
    )
    temporal_chain: bool = field(
        default=True,
        metadata={
            "help": "also run the sequential chain (temporal protocol: leave-last-out) under "
            "<out>/temporal: the teacher with its sequence parts, hard and distilled students "
            "with a sequential user encoder, compression, report (skipped when --protocol is "
            "temporal: the main chain is that chain)"
        },
    )
    user_encoder: UserEncoder = field(
        default="sasrec",
        metadata={
            "help": "the user encoder of the students of a temporal chain (TwoTowerConfig."
            "user_encoder); the random and cold chains keep the mean of the history"
        },
    )
    item_id_dropout: float = field(
        default=0.5, metadata={"help": "cold chain: the students' item id dropout (DropoutNet)"}
    )
    user_id_dropout: float = field(
        default=0.3,
        metadata={
            "help": "cold chain: the students' user id dropout, so they also serve new users "
            "from a history alone"
        },
    )
    out: str = field(
        default="runs/demo",
        metadata={"help": "output folder for every artifact", "group": "output"},
    )
    overrides: str | dict = field(
        default="",
        metadata={
            "help": "per-step config fields, YAML/JSON: '{labels: {n_negatives: 10}, "
            "student_hard: {user_hidden: [64]}}' (steps: prepare, labels, student_hard, "
            "student_distilled, compress, benchmark and the cold chain's cold_labels, "
            "cold_student_hard, cold_student_distilled, cold_compress, cold_benchmark, "
            "cold_transductive_labels, cold_transductive_student_distilled, "
            "cold_transductive_compress, and "
            "the temporal chain's temporal_labels, ..., temporal_benchmark); a mapping in "
            "--config files"
        },
    )

    def __post_init__(self):
        if self.protocol not in ("random", "temporal"):
            raise ValueError(
                f"DemoConfig.protocol={self.protocol!r}; expected 'random' or 'temporal'"
            )
        check_int("DemoConfig", "threads", self.threads, 1)
        for name in STEPS:
            self.step_overrides(name)  # validates every step's overrides

    def step_overrides(self, name: str) -> dict:
        """The override fields of step ``name`` (checked against its config class)."""
        raw = self.overrides
        steps = yaml.safe_load(raw) if isinstance(raw, str) else raw
        steps = steps or {}
        if not isinstance(steps, dict) or not all(isinstance(v, dict) for v in steps.values()):
            raise ValueError(
                f"DemoConfig.overrides={raw!r}; expected a mapping of step -> {{field: value}}"
            )
        unknown = sorted(set(steps) - set(STEPS))
        if unknown:
            raise ValueError(
                f"DemoConfig.overrides: unknown step(s) {unknown}; expected some of {list(STEPS)}"
            )
        cls, wired = STEPS[name]
        mine = steps.get(name, {})
        allowed = set(config_fields(cls)) - wired
        bad = sorted(set(mine) - allowed)
        if bad:
            set_here = sorted(set(bad) & wired)
            raise ValueError(
                f"DemoConfig.overrides[{name!r}]: field(s) {bad} cannot be overridden"
                + (f" ({set_here} are set by the demo itself)" if set_here else "")
                + f"; expected fields of {cls.__name__} other than {sorted(wired)}"
            )
        return dict(mine)


_DATA = {"dataset", "protocol", "out"}
# step -> (config class, fields the demo sets itself)
STEPS: dict[str, tuple[type, set[str]]] = {
    "prepare": (prepare.PrepareConfig, {"dataset", "out"}),
    "labels": (
        generate_labels.GenerateLabelsConfig,
        _DATA | {"teacher", "model", "overwrite"},
    ),
    "student_hard": (train_student.TrainStudentConfig, _DATA | {"no_teacher", "seed", "epochs"}),
    "student_distilled": (train_student.TrainStudentConfig, _DATA | {"labels", "seed", "epochs"}),
    "compress": (compress.CompressConfig, _DATA | {"model"}),
    "benchmark": (
        benchmark.BenchmarkConfig,
        _DATA
        | {
            "labels",
            "student_hard",
            "student_distilled",
            "student_pruned",
            "student_int8",
            "student_int8_fast",
        },
    ),
}
_CONTENT = {"labels", "use_text", "item_id_dropout", "user_id_dropout"}
# the cold-start chain's steps (same configs, protocol cold_items)
STEPS |= {
    "cold_labels": STEPS["labels"],
    "cold_student_hard": (STEPS["student_hard"][0], STEPS["student_hard"][1] | _CONTENT),
    "cold_student_distilled": (STEPS["student_distilled"][0], STEPS["student_distilled"][1] | _CONTENT),
    "cold_compress": STEPS["compress"],
    "cold_benchmark": STEPS["benchmark"],
}  # fmt: skip
# the cold chain's transductive steps (cold_setting transductive, under cold/transductive)
STEPS |= {f"cold_transductive_{name}": (STEPS[f"cold_{name}"][0],
                                        STEPS[f"cold_{name}"][1] | {"cold_setting"})
          for name in ("labels", "student_distilled", "compress")}  # fmt: skip
# the sequential chain's steps (same configs, protocol temporal)
STEPS |= {f"temporal_{name}": STEPS[name] for name in
          ("labels", "student_hard", "student_distilled", "compress", "benchmark")}  # fmt: skip
CHAINS = {"main": "", "cold": "cold_", "temporal": "temporal_"}  # chain -> step-name prefix


def _student(c: DemoConfig, run: RunLayout, step: str, protocol: str, extra: dict) -> Step:
    """A train-student step; ``step`` is its name, its folder is the name less its chain's
    prefix (``cold_``, ``temporal_``)."""
    prefix = next((p for p in CHAINS.values() if p and step.startswith(p)), "")
    folder = run.student(step.removeprefix(prefix))
    cfg = make_config(
        train_student.TrainStudentConfig,
        dataset=c.dataset,
        protocol=protocol,
        seed=c.seed,
        epochs=c.epochs,
        out=str(folder),
        **{"threads": c.threads, **extra, **c.step_overrides(step)},
    )
    if step == f"{prefix}student_hard" and prefix != "cold_":
        inputs = ("prepare",)
    else:  # the labels of its chain (the cold hard student reads their content features)
        inputs = (f"{prefix}labels",)
    return Step(step, train_student.run, cfg, folder, inputs, "metrics.json")


def _protocol(c: DemoConfig, kind: str) -> str:
    return {"main": c.protocol, "cold": "cold_items", "temporal": "temporal"}[kind]


def _students(c: DemoConfig, run: RunLayout, kind: str) -> tuple[Step, Step]:
    """The hard-only and the distilled student of chain ``kind``. Under the temporal
    protocol both read the history in order (``user_encoder``). In the cold chain both see
    the items' content (genres, year, the teacher's frozen text embedding) and drop item ids
    with ``item_id_dropout`` and user ids with ``user_id_dropout`` (so they also serve new
    users from a history); only the distilled one learns from the teacher's soft labels. The
    cold chain is inductive (no item without a train interaction is in a label or negative),
    so both score a cold item with their content head, fit after training
    (``student.content_head``); the transductive students (``_transductive_steps``) keep the
    item MLP and learn the cold items from the teacher's scores of them."""
    p, protocol = CHAINS[kind], _protocol(c, kind)
    extra: dict = {"labels": str(run.labels)}
    if kind == "cold":  # inductive: a cold item is scored by the content head (fit after training)
        extra |= _cold_student_fields(c) | {"content_head": True}
    if protocol == "temporal":
        extra["user_encoder"] = c.user_encoder
    hard_extra = {k: v for k, v in extra.items() if kind == "cold" or k != "labels"}
    dist_extra = dict(extra)  # the inductive cold chain's labels hold no cold candidates
    if protocol == "temporal":
        dist_extra["soft_users"] = TEMPORAL_SOFT_USERS
    return (
        _student(c, run, f"{p}student_hard", protocol, {**hard_extra, "no_teacher": True}),
        _student(c, run, f"{p}student_distilled", protocol, dist_extra),
    )


def _cold_student_fields(c: DemoConfig) -> dict:
    """What the cold chain's students add: the content tower and id dropout."""
    return dict(use_text=True, item_id_dropout=c.item_id_dropout, user_id_dropout=c.user_id_dropout)


def chain(
    c: DemoConfig, run: RunLayout, kind: str = "main", cache: Path | None = None
) -> list[Step]:
    """The steps of one chain under ``run``: labels, two students, compress, benchmark; the
    cold chain (``kind="cold"``, step names ``cold_*``) runs them on the ``cold_items``
    protocol, the temporal one (``temporal_*``) on ``temporal`` with sequential students.
    Labels and benchmark read the collaborative fit from ``cache`` (default
    ``run.collab_cache``: the temporal chain shares the main one's, where prepare fit it)."""
    p, cold = CHAINS[kind], kind == "cold"
    common = dict(dataset=c.dataset, protocol=_protocol(c, kind))
    cache = str(cache or run.collab_cache)
    labels_cfg = generate_labels.GenerateLabelsConfig(
        **common,
        teacher=c.teacher,
        model=c.teacher_model,
        overwrite=True,
        out=str(run.labels),
        **{"threads": c.threads, "collab_cache": cache, **c.step_overrides(f"{p}labels")},
    )
    hard, dist = _students(c, run, kind)
    comp_cfg = compress.CompressConfig(
        **common,
        model=str(run.model("student_distilled")),
        out=str(run.compressed),
        **{"threads": c.threads, **c.step_overrides(f"{p}compress")},
    )
    models = {"student_int8": str(run.int8)}
    if not cold:
        models |= {"student_pruned": str(run.pruned), "student_int8_fast": str(run.int8_fast)}
    extra = []
    if cold and c.cold_transductive:
        extra = _transductive_steps(c, run, labels_cfg, comp_cfg)
        models |= {"transductive_distilled": str(run.transductive.model("student_distilled")),
                   "transductive_int8": str(run.transductive.int8)}  # fmt: skip
    bench_cfg = benchmark.BenchmarkConfig(
        **common,
        labels=str(run.labels),
        student_hard=str(run.model("student_hard")),
        student_distilled=str(run.model("student_distilled")),
        **models,
        out=str(run.benchmark),
        **{"collab_cache": cache, **c.step_overrides(f"{p}benchmark")},
    )
    return [
        Step(f"{p}labels", generate_labels.run, labels_cfg, run.labels, (), META_FILE),
        hard,
        dist,
        Step(
            f"{p}compress", compress.run, comp_cfg, run.compressed, (dist.name,), "compression.json"
        ),
        *extra,
        Step(
            f"{p}benchmark",
            benchmark.run,
            bench_cfg,
            run.benchmark,
            (f"{p}labels", hard.name, dist.name, f"{p}compress", *(s.name for s in extra)),
            "report.json",
        ),
    ]


def _transductive_steps(c: DemoConfig, run: RunLayout, labels_cfg, comp_cfg) -> list:
    """The cold chain's labels, distilled student and compression again with the cold-test
    items known to the label job (``cold_setting="transductive"``), under
    ``run.transductive``: the report's ``cold_transductive`` segment."""
    t = run.transductive
    names = [f"cold_transductive_{n}" for n in ("labels", "student_distilled", "compress")]
    lab = replace(labels_cfg, cold_setting="transductive", out=str(t.labels),
                  **c.step_overrides(names[0]))  # fmt: skip
    stu = make_config(
        train_student.TrainStudentConfig,
        dataset=c.dataset, protocol="cold_items", cold_setting="transductive", seed=c.seed,
        epochs=c.epochs, labels=str(t.labels), out=str(t.student_distilled),
        **{"threads": c.threads, **_cold_student_fields(c), "w_cold_kl": COLD_KL,
           **c.step_overrides(names[1])},
    )  # fmt: skip
    com = replace(comp_cfg, cold_setting="transductive", model=str(t.model("student_distilled")),
                  out=str(t.compressed), **c.step_overrides(names[2]))  # fmt: skip
    return [
        Step(names[0], generate_labels.run, lab, t.labels, (), META_FILE),
        Step(names[1], train_student.run, stu, t.student_distilled, (names[0],), "metrics.json"),
        Step(names[2], compress.run, com, t.compressed, (names[1],), "compression.json"),
    ]


def run(config: DemoConfig) -> dict:
    c = config
    run_dir = RunLayout(Path(c.out))
    t0 = time.perf_counter()
    graph = StepGraph(load_dataset(c.dataset).fingerprint())
    prep_cfg = prepare.PrepareConfig(
        dataset=c.dataset,
        out=str(run_dir.prepare),
        **{"collab_cache": str(run_dir.collab_cache), **c.step_overrides("prepare")},
    )
    prep = graph.run(Step("prepare", prepare.run, prep_cfg, run_dir.prepare, (), "stats.json"))
    for s in chain(c, run_dir):
        report = graph.run(s).result
    if c.cold_start:
        for s in chain(c, run_dir.cold, "cold"):
            cold = graph.run(s).result
        report["cold"] = cold
    if c.temporal_chain and c.protocol != "temporal":
        for s in chain(c, run_dir.temporal, "temporal", cache=run_dir.collab_cache):
            temporal = graph.run(s).result
        report["temporal"] = temporal
    timings = {name: r.seconds for name, r in graph.runs.items()}
    report["demo"] = {
        "seconds": time.perf_counter() - t0,
        "step_seconds": timings,
        "out": str(run_dir.root),
        "commit": source_commit(),  # the README's tables name it (recdistill report-readme)
    }
    report["prepare"] = prep.result
    write_json(run_dir.root / "demo.json", report["demo"])
    return report


def format_summary(report: dict) -> str:
    parts = [prepare.format_summary(report["prepare"]), benchmark.format_summary(report)]
    if report.get("cold"):
        parts.append(
            "cold start (cold_items protocol):\n" + benchmark.format_summary(report["cold"])
        )
    if report.get("temporal"):
        parts.append(
            "sequential (temporal protocol, leave-last-out):\n"
            + benchmark.format_summary(report["temporal"])
        )
    parts.append(f"demo took {report['demo']['seconds']:.0f}s")
    run_dir = RunLayout(Path(report["demo"].get("out", "runs/demo")))
    hint = f"serve it: recdistill serve --run {run_dir.root}"
    if run_dir.cold.root.is_dir():  # a hint only for a folder this run holds
        hint += (
            "  (the cold chain's students, which also serve new users from a history: "
            f"--run {run_dir.cold.root})"
        )
    if run_dir.temporal.root.is_dir():
        hint += f"; the temporal chain's SASRec students: --run {run_dir.temporal.root}"
    parts.append(hint)
    return "\n\n".join(parts)
