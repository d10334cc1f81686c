"""Dense user and item features for the student, built from the interaction data."""

from __future__ import annotations

import numpy as np

from pipelines.data import InteractionData


def item_features(data: InteractionData) -> np.ndarray:
    """[n_items, n_genres + 2] float32: genre multi-hot, standardised year, year-known flag."""
    genres = sorted({g for gs in data.items["genres"] for g in gs})
    col = {g: i for i, g in enumerate(genres)}
    out = np.zeros((data.n_items, len(genres) + 2), dtype=np.float32)
    for j, gs in enumerate(data.items["genres"]):
        for g in gs:
            out[j, col[g]] = 1.0
    year = data.items["year"].to_numpy(dtype=float)
    known = np.isfinite(year)
    if known.any():
        mu, sd = year[known].mean(), year[known].std() + 1e-6
        out[known, -2] = (year[known] - mu) / sd
    out[:, -1] = known
    return out


def user_features(data: InteractionData) -> np.ndarray:
    """[n_users, F] float32: standardised age and one-hot categorical columns where present."""
    parts = []
    u = data.users
    if "age" in u and u["age"].notna().any():
        age = u["age"].to_numpy(dtype=float)
        ok = np.isfinite(age)
        z = np.zeros(len(u), dtype=np.float32)
        z[ok] = (age[ok] - age[ok].mean()) / (age[ok].std() + 1e-6)
        parts.append(z[:, None])
    for col in ("gender", "occupation"):
        if col in u and u[col].notna().any():
            values = u[col].fillna("?").astype(str)
            cats = sorted(values.unique())
            onehot = np.zeros((len(u), len(cats)), dtype=np.float32)
            onehot[np.arange(len(u)), [cats.index(v) for v in values]] = 1.0
            parts.append(onehot)
    if not parts:
        return np.zeros((len(u), 0), dtype=np.float32)
    return np.concatenate(parts, axis=1).astype(np.float32)


def student_features(data: InteractionData) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(user features, item features) that the data actually has, ``None`` for a side with
    none: no user table (or one without age, gender, occupation) gives no user features; an
    item table without genres and years gives no item features."""
    uf = user_features(data)
    has_items = any(len(g) for g in data.items["genres"]) or data.items["year"].notna().any()
    return (uf if uf.shape[1] else None), (item_features(data) if has_items else None)
