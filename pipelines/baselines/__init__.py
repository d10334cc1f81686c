"""Stage 2, baselines: the scorers every report compares against, fit on a split from
``pipelines.data``: popularity, EASE^R and ALS (``collab.fit_collab`` picks one by catalogue
size), the content map that scores cold items, and the ``prepare`` job that reports them. One
interface (``scorer.Scorer``): each declares what it can score."""

from pipelines.baselines.als import ALS, ALSConfig, fit_als
from pipelines.baselines.collab import fit_collab
from pipelines.baselines.content_map import ContentMap, fit_content_map
from pipelines.baselines.ease import EASE, fit_ease
from pipelines.baselines.popularity import Popularity
from pipelines.baselines.scorer import Scorer

__all__ = [
    "ALS",
    "ALSConfig",
    "EASE",
    "ContentMap",
    "Popularity",
    "Scorer",
    "fit_als",
    "fit_collab",
    "fit_content_map",
    "fit_ease",
]
