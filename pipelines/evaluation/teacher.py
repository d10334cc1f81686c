"""The teacher as a scorer, read from its label folder: its saved full-catalogue top-k
(``random`` / ``temporal``), or under ``cold_items`` that top-k with its ranking of the cold
items placed below. Its labels cover training users only, so it cannot score a new user.

The test segment is ranked with ``teacher_topk_test``, the teacher reading each user's train +
validation (what precedes the test interaction). A label folder made before that file existed
holds only ``teacher_topk`` (input: train): it is used, and the report's evaluation section
says so (``teacher_input_note``); regenerate the labels for the train + valid input. Under
``cold_items`` the teacher reads train (its content-map rankings have no other input)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.io import artifact_path, load_npy
from pipelines.core.metrics import bootstrap_ci, per_user_metrics
from pipelines.evaluation.segments import Scored, Scorer, Segment


def teacher_scorers(labels_dir, meta: dict | None, data, split) -> list[Scorer]:
    """The teacher where its labels ranked the catalogue: its saved top-k, or under
    ``cold_items`` its rankings with the cold items below (labels of training users only)."""
    if meta is None:
        return []
    info = {"parts": meta["teacher"]["parts"], "mix": meta["teacher"]["mix"]["weights"]}
    if split.is_cold and meta.get("teacher_topk_cold"):
        fn = cold_teacher(Path(labels_dir), meta, data.n_items)
        info["cold_mix"] = meta["teacher"]["mix"]["cold"]["weights"]
        return [Scorer("teacher", fn, can=frozenset({"cold_items"}), info=info)]
    if not split.is_cold and meta.get("teacher_topk"):
        key = "teacher_topk_test" if meta.get("teacher_topk_test") else "teacher_topk"
        ranked, users = load_teacher_topk(labels_dir, meta, data.n_users, key)
        note = None
        if key == "teacher_topk":
            note = (
                f"the teacher's test ranking reads train only: {labels_dir} has no "
                "teacher_topk_test (labels made before it); regenerate them for train + valid"
            )
        info = {"teacher_top10_overlap": 1.0} | info | {"test_input": TEST_INPUT[key]}
        valid = None  # the ranking a validation score must use: input train, train excluded
        if key == "teacher_topk_test":
            v_ranked, v_users = load_teacher_topk(labels_dir, meta, data.n_users)
            valid = RankedTeacher("teacher", None, frozenset(), ranked=v_ranked, users=v_users)
        return [RankedTeacher("teacher", None, frozenset(), info=info, ranked=ranked, users=users,
                              input_note=note, valid=valid)]  # fmt: skip
    return []


TEST_INPUT = {"teacher_topk_test": "train + valid", "teacher_topk": "train"}


@dataclass
class RankedTeacher(Scorer):
    """The teacher's saved top-k [R, k] of ``users`` [R] (sorted): ranks the segment's users
    it has a top-k for, the segment's excluded items dropped from each list."""

    ranked: np.ndarray | None = None
    users: np.ndarray | None = None
    input_note: str | None = None  # the ranking reads less than the segment's known input
    valid: RankedTeacher | None = None  # the train-input ranking, for validation (None: self)

    def score(self, seg: Segment, bootstrap: int) -> Scored | None:
        if seg.items is not None:
            return None
        t_users = np.intersect1d(seg.users, self.users)
        full = np.zeros((len(t_users), self.ranked.shape[1]), dtype=np.int64)
        top = self.ranked[np.searchsorted(self.users, t_users)]
        for r, (u, row) in enumerate(zip(t_users, top)):
            row = row[~np.isin(row, seg.exclude[u].indices)]
            full[r, : len(row)] = row
        per = per_user_metrics(full[:, :20], [seg.truth[u].indices for u in t_users])
        _, lo, hi = bootstrap_ci(per[seg.ci_metric], n=bootstrap)
        note = {"teacher_users": int(len(t_users))}
        if len(t_users) < len(seg.users):
            note["teacher_note"] = (
                f"teacher metrics and top-10 agreement on the {len(t_users)} evaluation "
                f"users of the teacher's top-k sample ({len(self.users)} users)"
            )
        if self.input_note:
            note["teacher_input_note"] = self.input_note
        means = {k: float(v.mean()) for k, v in per.items()} | {"users": int(len(t_users))}
        rows = np.searchsorted(seg.users, t_users)
        return Scored(means, per[seg.ci_metric], [lo, hi], full[:, :10], rows, note)


def load_teacher_topk(
    labels_dir, meta: dict, n_users: int, key: str = "teacher_topk"
) -> tuple[np.ndarray, np.ndarray]:
    """The teacher's saved top-k ``key`` [U, k] (``teacher_topk``: input train, train items
    excluded; ``teacher_topk_test``: input and exclusions train + valid) and its users [U]
    (sorted): all ``n_users`` users, or the label job's ``--topk-users`` sample
    (``teacher_topk_users.npy``)."""
    ranked = load_npy(artifact_path(labels_dir, meta[key], key))
    if meta.get("teacher_topk_users"):
        users = load_npy(
            artifact_path(labels_dir, meta["teacher_topk_users"], "teacher_topk_users")
        ).astype(np.int64)
    else:
        users = np.arange(n_users)
    if len(users) != len(ranked):
        raise ValueError(
            f"{labels_dir}: {key} has {len(ranked)} rows for {len(users)} users; "
            "regenerate the labels"
        )
    return ranked, users


def ranked_scorer(ranked: np.ndarray, n_items: int):
    """A score function from ranked lists [U, K] (best first): listed items score K - rank,
    the rest a large negative number (ranked after every listed item)."""

    def fn(users: np.ndarray) -> np.ndarray:
        s = np.full((len(users), n_items), -1e9, dtype=np.float32)
        k = ranked.shape[1]
        rows = np.repeat(np.arange(len(users)), k)
        s[rows, ranked[users].reshape(-1)] = np.tile(
            np.arange(k, 0, -1, dtype=np.float32), len(users)
        )
        return s

    return fn


def cold_teacher(labels_dir: Path, meta: dict, n_items: int):
    """The ``cold_items`` teacher's score function: its full-catalogue top-k, with its ranking
    of the items without train interactions placed below (for the cold segment)."""
    if meta.get("teacher_topk_users"):
        raise ValueError(
            f"{labels_dir}: the teacher top-k covers a sample of users (generate-labels "
            "--topk-users); the cold report ranks every test user with it: regenerate the labels "
            "with --topk-users 0"
        )
    top = load_npy(artifact_path(labels_dir, meta["teacher_topk"], "teacher_topk")).astype(np.int64)
    cold = load_npy(
        artifact_path(labels_dir, meta["teacher_topk_cold"], "teacher_topk_cold")
    ).astype(np.int64)
    warm_fn, cold_fn = ranked_scorer(top, n_items), ranked_scorer(cold, n_items)

    def fn(users: np.ndarray) -> np.ndarray:
        # the cold ranking decides among cold items; the full top-k (which holds cold items
        # too, on the same scale) decides everything it lists
        s = cold_fn(users) - 2e6
        w = warm_fn(users)
        listed = w > -1e8
        s[listed] = w[listed]
        return s

    return fn
