"""Splits and the matrices/histories built from them.

- ``random``: per user, a seeded shuffle, 80/10/10 train/validation/test (the default for
  reports: about 10k test interactions on MovieLens-100K).
- ``temporal``: leave-last-out per user: the last interaction is test, the second-to-last
  validation. Realistic, but one test item per user.
- ``cold_items`` (item cold start in the style of ALDI, Huang et al. 2023): a seeded 20% of the items are cold and every interaction
  with them leaves training; the cold items are split 50/50, by item, into cold-validation and
  cold-test items (parts ``cold_valid`` and ``cold_test``); the warm interactions are split per
  user 80/10/10 as in ``random``. Only the items' content reaches training for cold items.
  New users as well: a seeded 10% of the users (among those with at least 6 warm
  interactions) leave training altogether; their first 5 warm interactions by time are the
  history given at query time (part ``new_history``), the rest of their warm interactions
  are the targets (part ``new_test``). Their interactions with cold items are dropped, so
  the two cold cases are measured apart.
  Two settings say what the training side knows of the cold-test items (``cold_setting``):
  ``inductive`` (the default: they arrive after training, so no label, candidate, negative or
  fine-tune of the training side holds them; a model scores them from content at test time)
  and ``transductive`` (they are in the catalogue at training time, without interactions, so
  the label job may score them). :meth:`Split.training_items` is the catalogue the training
  side may draw from: every item, or under ``inductive`` the items with a train interaction
  (the cold-validation items then serve model selection only, as in ALDI's code).
Users with fewer than 3 interactions keep them all in train. No interaction is in two parts.

Ties: interactions of one user in the same second are ordered by a seeded shuffle (seeded
from the split seed; rule ``seeded_shuffle``, :data:`TIE_RULE`). The loaded data keeps no file
order (it is sorted by user, timestamp and item id on load), so without the shuffle the "last"
interaction of a second would be its highest item id. Under ``temporal`` the shuffle decides
which of a second's interactions is test and which validation, under ``cold_items`` which are
a new user's first 5; under ``random`` the parts are the same sets as without it. Every part
keeps that order: rows by (user, timestamp, seeded shuffle within a second).

The future is unknown at training time: the training side (candidates, labels, adaptation,
students, compression fine-tunes) gets ``training_split(...)``, a view with no test part at
all, so reading it raises :class:`LeakError` instead of being merely avoided. Only evaluation
calls ``make_split``. ``Split.fingerprint`` covers protocol, seed, the tie rule, train and
validation, so an artifact made from the training view carries the same fingerprint as the
full split.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, replace
from typing import Literal, get_args

import numpy as np
import pandas as pd
import scipy.sparse as sp

from pipelines.data.dataset import InteractionData

ProtocolName = Literal["random", "temporal", "cold_items"]
PROTOCOLS: tuple[str, ...] = get_args(ProtocolName)
ColdSetting = Literal["inductive", "transductive"]
COLD_SETTINGS: tuple[str, ...] = get_args(ColdSetting)
logger = logging.getLogger(__name__)
PARTS = ("train", "valid", "test", "cold_valid", "cold_test", "new_history", "new_test")
COLD_FRACTION = 0.2
NEW_USER_FRACTION = 0.1
NEW_USER_HISTORY = 5  # interactions given at query time; the rest are targets
HELD_OUT = ("test", "cold_test", "new_history", "new_test")  # not in the training view
TIE_RULE = "seeded_shuffle"  # the order of one user's interactions within a second
TIE_STREAM = 2  # the tie shuffle's seed is [split seed, TIE_STREAM] (1: the new users)


class LeakError(RuntimeError):
    """The training side asked for the test part, which its view of the split does not have."""


@dataclass
class Split:
    """Train/validation/test interaction frames (same columns as ``InteractionData.interactions``).

    ``test`` (and ``cold_test``) are ``None`` in the training view (:meth:`training_view`).
    Under ``cold_items``, ``cold_valid``/``cold_test`` hold every interaction with the
    cold-validation/cold-test items (``cold_valid_items``/``cold_test_items``, sorted indices);
    ``train``/``valid``/``test`` hold warm items only, and ``new_history``/``new_test`` the
    new users' (``new_users``, sorted indices) query-time histories and targets."""

    protocol: str
    seed: int
    n_users: int
    n_items: int
    train: pd.DataFrame
    valid: pd.DataFrame
    test: pd.DataFrame | None
    cold_valid: pd.DataFrame | None = None
    cold_test: pd.DataFrame | None = None
    cold_valid_items: np.ndarray | None = None
    cold_test_items: np.ndarray | None = None
    new_history: pd.DataFrame | None = None
    new_test: pd.DataFrame | None = None
    new_users: np.ndarray | None = None
    cold_setting: str = "inductive"  # cold_items only: what training knows of cold-test items

    @property
    def ties(self) -> str:
        """The rule that orders one user's interactions within a second (:data:`TIE_RULE`)."""
        return TIE_RULE

    @property
    def has_test(self) -> bool:
        return self.test is not None

    @property
    def is_cold(self) -> bool:
        return self.protocol == "cold_items"

    def training_view(self) -> Split:
        """The same split without its test parts: what training-side code may see."""
        return replace(
            self,
            test=None,
            cold_test=None,
            cold_test_items=None,
            new_history=None,
            new_test=None,
            new_users=None,
        )

    def training_items(self) -> np.ndarray:
        """Sorted item indices the training side may draw from (candidates, negatives,
        samples): all items, or under ``cold_items`` with the ``inductive`` setting the items
        with a train interaction only. The cold-test items are unknown until test time, and
        the cold-validation items, like them, reach training only through model selection
        (their validation interactions), so a cold ranking of both (ALDI's rule) compares
        items the model never trained on."""
        if not (self.is_cold and self.cold_setting == "inductive"):
            return np.arange(self.n_items)
        return np.flatnonzero(np.bincount(self.train["item"].to_numpy(), minlength=self.n_items))

    def cold_items(self, name: str) -> np.ndarray:
        """Sorted item indices of the cold part ``name`` ("cold_valid" or "cold_test")."""
        self.part(name)
        return getattr(self, f"{name}_items")

    def part(self, name: str) -> pd.DataFrame:
        if name not in PARTS:
            raise ValueError(f"split part {name!r}; expected one of {PARTS}")
        if name.startswith(("cold_", "new_")) and not self.is_cold:
            raise ValueError(f"split part {name!r} exists only under protocol 'cold_items'")
        if name in HELD_OUT and getattr(self, name) is None:
            raise LeakError(
                "the training view of the split has no test part: training-side code must not "
                "read it (evaluation builds the full split with make_split)"
            )
        return getattr(self, name)

    def matrix(self, name: str, binary: bool = True) -> sp.csr_matrix:
        return to_csr(self.part(name), self.n_users, self.n_items, binary=binary)

    def seen_for(self, name: str) -> sp.csr_matrix:
        """Items to exclude when ranking for part ``name``: train, plus validation for test."""
        seen = self.matrix("train")
        if name == "test":
            seen = (seen + self.matrix("valid")).astype(bool).astype(np.float32).tocsr()
        return seen

    def known_before(self, name: str) -> pd.DataFrame:
        """The interactions a model scoring part ``name`` may read as the users' input: all
        that happened before it. ``valid``: train; ``test``: train + validation (the
        validation interaction precedes the test one under leave-last-out); ``new_test``: the
        new users' query-time histories. Rows in split order (user, time, tie order)."""
        if name in ("train", "valid", "cold_valid"):
            return self.train
        if name in ("test", "cold_test"):
            both = pd.concat([self.train, self.valid], ignore_index=True)
            # stable: among equal timestamps a train row stays before the validation one
            return both.sort_values(["user", "timestamp"], kind="stable").reset_index(drop=True)
        if name in ("new_history", "new_test"):
            return self.part("new_history")
        raise ValueError(f"known_before({name!r}); expected one of {PARTS}")

    def fingerprint(self) -> str:
        """Hash of protocol, seed, tie rule (and the cold setting), train and validation (the
        test part follows from the dataset, protocol and seed; the training view has none)."""
        setting = f":cold={self.cold_setting}" if self.is_cold else ""
        h = hashlib.sha256(f"{self.protocol}:{self.seed}:ties={self.ties}{setting}".encode())
        for name in ("train", "valid", "cold_valid"):
            if name == "cold_valid" and not self.is_cold:
                continue
            f = self.part(name)
            h.update(f["user"].to_numpy().tobytes())
            h.update(f["item"].to_numpy().tobytes())
        if self.is_cold:
            h.update(np.asarray(self.cold_valid_items, np.int64).tobytes())
        return h.hexdigest()[:16]


def make_split(
    data: InteractionData, protocol: str = "random", seed: int = 0, cold_setting: str = "inductive"
) -> Split:
    """The split of ``data`` by ``protocol`` and ``seed``; ``cold_setting`` (``cold_items``
    only) what the training side knows of the cold-test items (see the module docstring)."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol={protocol!r}; expected one of {PROTOCOLS}")
    if cold_setting not in COLD_SETTINGS:
        raise ValueError(f"cold_setting={cold_setting!r}; expected one of {COLD_SETTINGS}")
    if protocol == "cold_items":
        return replace(_cold_items_split(data, seed), cold_setting=cold_setting)
    inter = data.interactions.reset_index(drop=True)
    key = _tie_key(len(inter), seed)
    users = inter["user"].to_numpy()
    counts = np.bincount(users, minlength=data.n_users)
    small = int(((counts > 0) & (counts < 3)).sum())
    if small:
        logger.info(
            "%s split: %d users have fewer than 3 interactions; all theirs stay in train "
            "(no validation or test for them)",
            protocol,
            small,
        )
    if protocol == "random":  # drawn over the loaded order: the same sets as before the tie rule
        label = _random_labels(counts, np.random.default_rng(seed))
        return Split(protocol, seed, data.n_users, data.n_items,
                     *(_tie_order(inter[label == i], key) for i in range(3)))  # fmt: skip
    inter = _tie_order(inter, key)  # leave-last-out: the last by (time, seeded tie order)
    users = inter["user"].to_numpy()
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    pos = np.arange(len(inter)) - starts[users]  # position within a user's block: time order
    n_u = counts[users]
    ok = n_u >= 3
    label = np.zeros(len(inter), dtype=np.int8)  # 0 train, 1 valid, 2 test
    label[ok & (pos == n_u - 1)] = 2
    label[ok & (pos == n_u - 2)] = 1
    parts = [inter[label == i].reset_index(drop=True) for i in range(3)]
    return Split(protocol, seed, data.n_users, data.n_items, *parts)


def _random_labels(counts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Per user (rows grouped by user), a seeded 80/10/10: 0 train, 1 valid, 2 test."""
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    label = np.zeros(int(counts.sum()), dtype=np.int8)
    for u in np.flatnonzero(counts >= 3):
        s, n = starts[u], counts[u]
        perm = rng.permutation(n)
        n_test = max(1, int(round(0.1 * n)))
        n_valid = max(1, int(round(0.1 * n)))
        lab = np.zeros(n, dtype=np.int8)
        lab[perm[:n_test]] = 2
        lab[perm[n_test : n_test + n_valid]] = 1
        label[s : s + n] = lab
    return label


def _tie_key(n: int, seed: int) -> np.ndarray:
    """[n] float64: the seeded tie order of the loaded rows (:data:`TIE_RULE`)."""
    return np.random.default_rng([seed, TIE_STREAM]).random(n)


def _tie_order(frame: pd.DataFrame, key: np.ndarray) -> pd.DataFrame:
    """``frame`` (rows of the loaded interactions, their index kept) by (user, timestamp, tie
    key): within a second, the seeded shuffle instead of the item id."""
    k = key[frame.index.to_numpy()]
    order = np.lexsort((k, frame["timestamp"].to_numpy(), frame["user"].to_numpy()))
    return frame.iloc[order].reset_index(drop=True)


def _cold_items_split(data: InteractionData, seed: int) -> Split:
    rng = np.random.default_rng(seed)
    perm = rng.permutation(data.n_items)
    n_cold = int(round(COLD_FRACTION * data.n_items))
    cold = perm[:n_cold]
    cold_valid_items, cold_test_items = np.sort(cold[: n_cold // 2]), np.sort(cold[n_cold // 2 :])
    inter = data.interactions.reset_index(drop=True)
    key = _tie_key(len(inter), seed)
    item = inter["item"].to_numpy()
    is_cold = np.zeros(data.n_items, dtype=bool)
    is_cold[cold] = True
    # new users: drawn from their own seeded stream, so the cold items do not move
    user = inter["user"].to_numpy()
    warm_counts = np.bincount(user[~is_cold[item]], minlength=data.n_users)
    eligible = np.flatnonzero(warm_counts > NEW_USER_HISTORY)
    n_new = int(round(NEW_USER_FRACTION * len(eligible)))
    new_users = np.sort(np.random.default_rng([seed, 1]).choice(eligible, n_new, replace=False))
    is_new = np.isin(user, new_users)
    new_warm = _tie_order(inter[is_new & ~is_cold[item]], key)  # the first 5: by time, ties seeded
    pos = new_warm.groupby("user").cumcount().to_numpy()
    kept = inter[~is_new]
    k_item = kept["item"].to_numpy()
    warm = replace(data, interactions=kept[~is_cold[k_item]].reset_index(drop=True))
    s = make_split(warm, "random", seed)  # its parts in its own seeded tie order
    return replace(
        s,
        protocol="cold_items",
        cold_valid=_tie_order(kept[np.isin(k_item, cold_valid_items)], key),
        cold_test=_tie_order(kept[np.isin(k_item, cold_test_items)], key),
        cold_valid_items=cold_valid_items,
        cold_test_items=cold_test_items,
        new_history=new_warm[pos < NEW_USER_HISTORY].reset_index(drop=True),
        new_test=new_warm[pos >= NEW_USER_HISTORY].reset_index(drop=True),
        new_users=new_users,
    )


def training_split(
    data: InteractionData, protocol: str = "random", seed: int = 0, cold_setting: str = "inductive"
) -> Split:
    """The split as the training side sees it: train and validation, no test part."""
    return make_split(data, protocol, seed, cold_setting).training_view()


def to_csr(frame: pd.DataFrame, n_users: int, n_items: int, binary: bool = True) -> sp.csr_matrix:
    vals = np.ones(len(frame), dtype=np.float32) if binary else frame["rating"].to_numpy(np.float32)
    m = sp.csr_matrix(
        (vals, (frame["user"].to_numpy(), frame["item"].to_numpy())), shape=(n_users, n_items)
    )
    m.sum_duplicates()
    return m


def histories(train: pd.DataFrame, n_users: int, max_len: int, pad: int) -> np.ndarray:
    """[n_users, max_len] int64 item indices, most recent first, padded with ``pad``.

    ``train``: interactions (user, item, timestamp), read in (user, timestamp) order with the
    rows of one second in the order given (split parts: the split's tie order); sorted here,
    stably, only when (user, timestamp) is out of order. No loop per user: 20M rows take
    seconds."""
    out = np.full((n_users, max_len), pad, dtype=np.int64)
    users = train["user"].to_numpy()
    ts = train["timestamp"].to_numpy()
    items = train["item"].to_numpy()
    du, dt = np.diff(users), np.diff(ts)
    if not ((du > 0) | ((du == 0) & (dt >= 0))).all():
        order = np.lexsort((ts, users))  # stable: a second's rows keep their given order
        users, items = users[order], items[order]
    end = np.cumsum(np.bincount(users, minlength=n_users))
    back = end[users] - 1 - np.arange(len(users))  # 0 for a user's most recent interaction
    keep = back < max_len
    out[users[keep], back[keep]] = items[keep]
    return out
