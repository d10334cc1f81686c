"""Stage 2, baselines: the scorers every report compares against, fit on a split from
``pipelines.data``: popularity, EASE^R and ALS (``collab.fit_collab`` picks one by catalogue
size), the sequence scorers (transition, recency-weighted collaborative), the content map
that scores cold items, and the ``prepare`` job that reports them. One
interface (``scorer.Scorer``): each declares what it can score."""

from pipelines.baselines.als import ALS, ALSConfig, fit_als
from pipelines.baselines.collab import fit_collab
from pipelines.baselines.content_map import ContentMap, fit_content_map
from pipelines.baselines.ease import EASE, fit_ease
from pipelines.baselines.popularity import Popularity
from pipelines.baselines.recency import RecencyCollab, fit_recency
from pipelines.baselines.scorer import Scorer
from pipelines.baselines.transition import Transition, fit_transition

__all__ = [
    "ALS",
    "ALSConfig",
    "EASE",
    "ContentMap",
    "Popularity",
    "RecencyCollab",
    "Scorer",
    "Transition",
    "fit_als",
    "fit_collab",
    "fit_content_map",
    "fit_ease",
    "fit_recency",
    "fit_transition",
]
