"""The cold-start benchmark (``recdistill benchmark --protocol cold_items``).

Segments, each with a 95% bootstrap interval over users, at K = 10 and 20:

- **cold**: each user with a cold-test interaction (and a warm train interaction) ranks the
  cold-test items only; targets are that user's cold-test items;
- **warm**: the warm test part, ranked over the warm items (train and validation excluded);
- **all**: the warm test part plus the cold-test items, ranked over the whole catalogue (the
  user's train, validation and cold-validation items excluded);
- **new_users**: each new user (no training interaction at all) is given the first 5 warm
  interactions by time as a history at query time and ranks the warm items (the history
  excluded); targets are the rest of that user's warm interactions.

Reference scorers beside the teacher and the students: random, genre profile, zero-shot text
(the LLM's item embeddings, no training), the content map with and without the LLM embedding
(``pipelines.baselines.content_map``), and popularity / the collaborative model (EASE^R, or ALS
past EASE^R's memory budget: ``pipelines.baselines.collab``, named after its kind), which cannot
score a cold item (``"cold": null``) but can score a new user from a history (ALS: the
history folded into a user vector). Every reference scorer reads a
user's profile from train plus the new users' histories (fitting reads train only; a new user
has no train row, so the other segments are unchanged). The teacher has labels for training
users only (``"new_users": null``); the students score new users with ``encode_users(None,
history)``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from common.io import artifact_path, load_npy
from pipelines.baselines.content_map import cold_truth, content_features, fit_content_map
from pipelines.core.metrics import bootstrap_ci, evaluate, paired_bootstrap
from pipelines.data.features import item_features

logger = logging.getLogger(__name__)

SEGMENTS = ("cold", "warm", "all", "new_users")
KEYS = ("ndcg@10", "ndcg@20", "recall@10", "recall@20", "mrr@10")


def segment_tasks(split) -> dict[str, dict]:
    """For each segment: ``truth`` [U, I], ``exclude`` [U, I] or None, ``items`` (rankable)."""
    n_items = split.n_items
    cold = np.r_[split.cold_valid_items, split.cold_test_items]
    warm_items = np.setdiff1d(np.arange(n_items), cold)
    seen = split.seen_for("test")
    seen_all = (seen + split.matrix("cold_valid")).astype(bool).astype(np.float32).tocsr()
    has_train = sp.diags((np.diff(split.matrix("train").indptr) > 0).astype(np.float32))
    all_truth = (has_train @ (split.matrix("test") + split.matrix("cold_test"))).tocsr()
    return {
        "cold": {"truth": cold_truth(split, "cold_test"), "exclude": None,
                 "items": split.cold_test_items},
        "warm": {"truth": split.matrix("test"), "exclude": seen, "items": warm_items},
        "all": {"truth": all_truth.astype(bool).astype(np.float32).tocsr(), "exclude": seen_all,
                "items": None},
        "new_users": {"truth": split.matrix("new_test"), "exclude": split.matrix("new_history"),
                      "items": warm_items},
    }  # fmt: skip


def profile_matrix(split) -> sp.csr_matrix:
    """Train plus the new users' query-time histories: what a scorer reads a user from."""
    return (
        (split.matrix("train") + split.matrix("new_history"))
        .astype(bool)
        .astype(np.float32)
        .tocsr()
    )


def evaluate_segments(
    score_fn,
    tasks: dict,
    bootstrap: int,
    cold_ok: bool = True,
    new_ok: bool = True,
    new_fn=None,
    users: dict[str, np.ndarray] | None = None,
) -> dict:
    """``score_fn(users [B]) -> [B, I]`` on every segment; ``cold_ok=False``: "cold": None,
    ``new_ok=False``: "new_users": None. ``new_fn`` scores the new users (default
    ``score_fn``). ``users`` (per segment, e.g. a seeded sample): only those users (default:
    all with a held-out item in the segment)."""
    out = {}
    for name, t in tasks.items():
        if (name == "cold" and not cold_ok) or (name == "new_users" and not new_ok):
            out[name] = None
            continue
        fn = new_fn if name == "new_users" and new_fn is not None else score_fn
        m = evaluate(
            fn,
            t["truth"],
            t["exclude"],
            items=t["items"],
            return_per_user=True,
            users=None if users is None else users.get(name),
        )
        per = m["per_user"]["ndcg@20"]
        _, lo, hi = bootstrap_ci(per, n=bootstrap)
        out[name] = {k: m[k] for k in KEYS} | {
            "ndcg@20_ci": [lo, hi],
            "users": m["users"],
            "_per_user": per,
        }
    return out


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


def teacher_scorer(labels_dir: Path, meta: dict, n_items: int):
    """The teacher's rankings from its label folder: the full-catalogue top-k, with its ranking
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


def reference_scorers(split, data, text_emb: np.ndarray | None, seed: int = 0) -> dict:
    """name -> (score_fn, can score cold items)."""
    from pipelines.baselines.collab import fit_collab
    from pipelines.baselines.popularity import Popularity

    train = split.matrix("train").tocsr()
    prof = profile_matrix(split)
    n_items = split.n_items
    rng = np.random.default_rng(seed)
    noise = rng.random((split.n_users, n_items)).astype(np.float32)
    out = {"random": (lambda u: noise[u], True)}
    genres = item_features(data)[:, :-2].astype(np.float32)
    g = genres / np.maximum(np.linalg.norm(genres, axis=1, keepdims=True), 1e-9)
    profile = np.asarray(prof @ g)
    profile /= np.maximum(np.linalg.norm(profile, axis=1, keepdims=True), 1e-9)
    out["genre_profile"] = (lambda u: profile[u] @ g.T, True)
    if text_emb is not None:
        e = text_emb / np.maximum(np.linalg.norm(text_emb, axis=1, keepdims=True), 1e-9)
        up = np.asarray(prof @ e)
        up /= np.maximum(np.linalg.norm(up, axis=1, keepdims=True), 1e-9)
        out["zero_shot_text"] = (lambda u: up[u] @ e.T, True)
    out["popularity"] = (Popularity(train), False)
    collab, _ = fit_collab(split)
    collab_fn = collab.from_histories(prof)  # each user read from its profile row
    out[collab.kind] = (collab_fn, False)
    feats = item_features(data)
    for name, emb in (("content_map", text_emb), ("content_map_no_text", None)):
        if name == "content_map" and emb is None:
            continue
        cm, info = fit_content_map(split, collab, content_features(feats, emb))
        out[name] = (_with_collab(cm, collab_fn), True)
        logger.info("%s: lambda %g (cold-valid)", name, info["lambda"])
    return out


def _with_collab(cm, collab):
    """The collaborative model for warm items, the content map's predictions for cold ones."""

    def fn(users: np.ndarray) -> np.ndarray:
        s = collab(users).copy()
        s[:, cm.cold] = cm.score_cold_matrix(users)
        return s

    return fn


COLD_PAIRS = (
    ("teacher", "content_map"),
    ("student_distilled", "teacher"),
    ("student_distilled", "student_hard"),
    ("student_int8", "student_distilled"),
    ("content_map", "content_map_no_text"),
)
NEW_USER_PAIRS = (
    ("student_distilled", "ease"),
    ("student_distilled", "als"),  # the collaborative model is one of these two
    ("student_distilled", "popularity"),
    ("student_distilled", "student_hard"),
    ("student_int8", "student_distilled"),
)


def comparisons(segs: dict[str, dict], bootstrap: int) -> dict:
    """NDCG@20 ratios and paired intervals on the cold segment (keys ``a_vs_b``) and on the
    new-user segment (keys ``new_users:a_vs_b``), the pairs the targets are stated in."""

    def seg(name, segment):
        s = segs.get(name)
        return None if s is None or s.get(segment) is None else s[segment]

    out = {}
    for segment, pairs, prefix in (
        ("cold", COLD_PAIRS, ""),
        ("new_users", NEW_USER_PAIRS, "new_users:"),
    ):
        for a, b in pairs:
            ca, cb = seg(a, segment), seg(b, segment)
            if ca is None or cb is None:
                continue
            d, lo, hi = paired_bootstrap(ca["_per_user"], cb["_per_user"], n=bootstrap)
            out[f"{prefix}{a}_vs_{b}"] = {
                f"{segment}_ndcg@20_ratio": ca["ndcg@20"] / cb["ndcg@20"]
                if cb["ndcg@20"]
                else None,
                f"{segment}_ndcg@20_diff": d,
                f"{segment}_ndcg@20_diff_ci": [lo, hi],
            }
    return out


def strip_per_user(segs: dict) -> dict:
    return {k: (None if v is None else {n: x for n, x in v.items() if n != "_per_user"})
            for k, v in segs.items()}  # fmt: skip
