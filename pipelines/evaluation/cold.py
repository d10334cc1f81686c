"""The cold-start benchmark (``recdistill benchmark --protocol cold_items``).

Segments (``pipelines.evaluation.segments.cold_segments``), each with a 95% bootstrap interval
over users, at K = 10 and 20:

- **cold**: each user with a cold-test interaction (and a warm train interaction) ranks, by
  the benchmark's ``--cold-rule``, either (``aldi``, the default, as ALDI's public code) the
  cold-validation and cold-test items together with the user's other known positives (train,
  validation, cold-validation) excluded, or (``cold_test_only``) the cold-test items alone;
  targets are that user's cold-test items. The students given as ``--student-*`` are trained
  in the split's cold setting (``--cold-setting``, default ``inductive``: the cold-test items
  were in no label, candidate or negative);
- **cold_transductive**: the same ranking for the students given as ``--transductive-*``,
  trained with the cold-test items in their catalogue (``--cold-setting transductive``: known
  to the label job without interactions); a reference scorer or the teacher, which no
  training catalogue changes, keeps its ``cold`` result there, a student without a
  transductive counterpart has None;
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
history folded into a user vector). Every reference scorer reads a user's profile from what
is known before test, train plus validation (``Split.known_before("test")``), and a new
user's from its query-time history; fitting (and the choices made on validation) reads
train only. The teacher (``pipelines.evaluation.teacher``) has labels for
training users only (``"new_users": null``); the students score new users with
``encode_users(None, history)``.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import scipy.sparse as sp

from pipelines.baselines.content_map import content_features, fit_content_map
from pipelines.core.metrics import paired_bootstrap
from pipelines.data import to_csr
from pipelines.data.features import item_features
from pipelines.evaluation.segments import Scored, Scorer

logger = logging.getLogger(__name__)


def profile_matrix(split) -> sp.csr_matrix:
    """[U, I] binary: what a scorer reads a user from at test time, the interactions known
    before test (train + validation) and the new users' query-time histories."""
    known = pd.concat([split.known_before("test"), split.known_before("new_test")])
    return to_csr(known, split.n_users, split.n_items).astype(bool).astype(np.float32).tocsr()


def reference_scorers(
    split, data, text_emb: np.ndarray | None, seed: int = 0, cache: str | None = None
) -> list[Scorer]:
    """Random, genre profile, zero-shot text, popularity, the collaborative model (its fit
    read from ``cache`` when there) and the content maps; popularity and the collaborative
    model cannot score a cold item."""
    from pipelines.baselines.collab import fit_collab
    from pipelines.baselines.popularity import Popularity

    warm_only = frozenset({"new_users"})
    train = split.matrix("train").tocsr()
    prof = profile_matrix(split)
    n_items = split.n_items
    rng = np.random.default_rng(seed)
    noise = rng.random((split.n_users, n_items)).astype(np.float32)
    out = [Scorer("random", lambda u: noise[u])]
    genres = item_features(data)[:, :-2].astype(np.float32)
    g = genres / np.maximum(np.linalg.norm(genres, axis=1, keepdims=True), 1e-9)
    profile = np.asarray(prof @ g)
    profile /= np.maximum(np.linalg.norm(profile, axis=1, keepdims=True), 1e-9)
    out.append(Scorer("genre_profile", lambda u: profile[u] @ g.T))
    if text_emb is not None:
        e = text_emb / np.maximum(np.linalg.norm(text_emb, axis=1, keepdims=True), 1e-9)
        up = np.asarray(prof @ e)
        up /= np.maximum(np.linalg.norm(up, axis=1, keepdims=True), 1e-9)
        out.append(Scorer("zero_shot_text", lambda u: up[u] @ e.T))
    out.append(Scorer("popularity", Popularity(train), can=warm_only))
    collab, _ = fit_collab(split, cache=cache)
    collab_fn = collab.from_histories(prof)  # each user read from its profile row
    reps = collab.user_vectors(prof)  # the same, as the content map reads users
    out.append(Scorer(collab.kind, collab_fn, can=warm_only))
    feats = item_features(data)
    for name, emb in (("content_map", text_emb), ("content_map_no_text", None)):
        if name == "content_map" and emb is None:
            continue
        cm, info = fit_content_map(split, collab, content_features(feats, emb))
        cm = cm.with_users(reps)  # fit on train; a test user read from its profile
        out.append(Scorer(name, _with_collab(cm, collab_fn)))
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
    ("student_distilled", "content_map"),
    ("student_distilled", "student_hard"),
    ("student_int8", "student_distilled"),
    ("content_map", "content_map_no_text"),
)
TRANSDUCTIVE_PAIRS = (  # the cold segment again, the students' catalogue holding the items
    ("student_distilled", "teacher"),
    ("student_distilled", "content_map"),
    ("student_int8", "student_distilled"),
)
NEW_USER_PAIRS = (
    ("student_distilled", "ease"),
    ("student_distilled", "als"),  # the collaborative model is one of these two
    ("student_distilled", "popularity"),
    ("student_distilled", "student_hard"),
    ("student_int8", "student_distilled"),
)


def comparisons(results: dict[str, dict[str, Scored | None]], bootstrap: int) -> dict:
    """NDCG@20 ratios and paired intervals on the cold segment (keys ``a_vs_b``), on its
    transductive form (keys ``cold_transductive:a_vs_b``) and on the new-user segment (keys
    ``new_users:a_vs_b``), the pairs the targets are stated in; ``results``: scorer ->
    segment -> its result (None: cannot score it)."""
    out = {}
    for segment, pairs, prefix in (
        ("cold", COLD_PAIRS, ""),
        ("cold_transductive", TRANSDUCTIVE_PAIRS, "cold_transductive:"),
        ("new_users", NEW_USER_PAIRS, "new_users:"),
    ):
        for a, b in pairs:
            ca, cb = (results.get(n, {}).get(segment) for n in (a, b))
            if ca is None or cb is None:
                continue
            d, lo, hi = paired_bootstrap(ca.per_user, cb.per_user, n=bootstrap)
            ra, rb = ca.means["ndcg@20"], cb.means["ndcg@20"]
            out[f"{prefix}{a}_vs_{b}"] = {
                f"{segment}_ndcg@20_ratio": ra / rb if rb else None,
                f"{segment}_ndcg@20_diff": d,
                f"{segment}_ndcg@20_diff_ci": [lo, hi],
            }
    return out
