"""The students as the benchmark's scorers: each given folder loaded and checked against the
data and split, scored on train + validation histories (new users on theirs), sized and
timed; under ``cold_items`` the transductive students' ``cold_transductive`` segment."""

from __future__ import annotations

from dataclasses import replace

import torch

from pipelines.core import provenance
from pipelines.data import histories
from pipelines.evaluation.segments import Scorer, Segment

STUDENTS = ("student_hard", "student_distilled", "student_pruned", "student_int8",
            "student_int8_fast")  # fmt: skip
# cold_items: the students trained with --cold-setting transductive -> the model whose
# segments.cold_transductive they give
TRANSDUCTIVE = {"transductive_distilled": "student_distilled", "transductive_int8": "student_int8"}


def load_students(c, data, split, names=STUDENTS) -> tuple[dict, set[str]]:
    """name -> the student model of each given folder (config fields ``names``), checked
    against the data and split, and the names of those taken unchecked (no provenance,
    ``--allow-unchecked``)."""
    from student.loading import load_student

    out, unchecked = {}, set()
    for name in (n for n in names if getattr(c, n)):
        out[name] = load_student(getattr(c, name))
        what, allow = f"the {name} model", c.allow_unchecked
        if not provenance.check(getattr(c, name), out[name].provenance, data, split, what=what,
                                allow_unchecked=allow):  # fmt: skip
            unchecked.add(name)
    return out, unchecked


def student_scorers(
    students: dict, unchecked: set[str], data, split, segments: list[Segment]
) -> list[Scorer]:
    """Each student on train + valid histories, new users on theirs; ``unchecked`` ones marked."""
    from student.compress import measure_latency
    from student.model import count_parameters, model_bytes
    from student.scoring import score_fn

    need_new = any("new_users" in seg.needs for seg in segments)
    out, known = [], split.known_before("test")
    for name, model in students.items():
        length = model.config.history_len
        hist = torch.as_tensor(histories(known, data.n_users, length, data.n_items))
        new_fn = None
        if need_new:
            new_hist = histories(split.known_before("new_test"), data.n_users, length, data.n_items)
            new_fn = score_fn(model, torch.as_tensor(new_hist), new_users=True)
        info = {"provenance": "unchecked"} if name in unchecked else {}
        ms = measure_latency(model, (1,), ("user",), num_threads=1)  # one user, one thread
        info["user_encode_ms_batch1"] = ms["user"]["1"]
        out.append(
            Scorer(name, score_fn(model, hist), new_fn=new_fn, params=count_parameters(model),
                   nbytes=model_bytes(model), timed=True, info=info)
        )  # fmt: skip
    return out


def transductive(c, data, split, segments: list[Segment], results) -> Segment | None:
    """The ``cold`` segment again as ``cold_transductive``: the students trained with the
    cold-test items in their catalogue (``--transductive-*``, checked against the
    transductive split) give their model's result there; a scorer that no training catalogue
    changes (references, the teacher: both read train only) keeps its ``cold`` result; a
    student without a transductive counterpart gets None. Fills ``results`` in place; None
    (no segment) when no ``--transductive-*`` folder is given."""
    if not any(getattr(c, k) for k in TRANSDUCTIVE):
        return None
    seg = replace(next(s for s in segments if s.name == "cold"), name="cold_transductive")
    t_split = replace(split, cold_setting="transductive")
    loaded, unchecked = load_students(c, data, t_split, tuple(TRANSDUCTIVE))
    named = {TRANSDUCTIVE[k]: m for k, m in loaded.items()}
    marked = {TRANSDUCTIVE[k] for k in unchecked}
    by_name = {s.name: s for s in student_scorers(named, marked, data, split, [seg])}
    for name, res in results.items():
        if name in by_name:
            by_name[name].tie_seed = c.tie_seed
            res[seg.name] = by_name[name].score(seg, c.bootstrap)
        else:
            res[seg.name] = None if name.startswith("student_") else res["cold"]
    return seg
