"""Request and response bodies (pydantic), and what each field expects (for error details)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, model_validator

from pipelines.serving.config import ServeConfig


class RecommendRequest(BaseModel):
    """One user: ``user_id`` (known) or ``history`` (new), not both."""

    model_config = ConfigDict(extra="forbid")

    user_id: StrictStr | None = Field(
        None, description="a known user's id (as in the dataset)", examples=["196"]
    )
    history: list[StrictStr] | None = Field(
        None,
        description="a new user's item ids, most recent first; [] = popularity",
        examples=[["242", "302"]],
    )
    k: StrictInt = Field(10, ge=1, description="how many items (at most max_k, default 1000)")
    exclude_seen: StrictBool = Field(
        True, description="drop the user's train items (known) or history (new)"
    )
    exclude: list[StrictStr] = Field(default_factory=list, description="item ids never returned")

    @model_validator(mode="after")
    def _one_user(self):
        if (self.user_id is None) == (self.history is None):
            raise ValueError("give exactly one of user_id (a known user) or history (a new user)")
        return self


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    queries: list[RecommendRequest] = Field(..., min_length=1, description="recommend bodies")


class ReloadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    run: StrictStr | None = Field(None, description="run folder (default: the configured one)")
    model: StrictStr | None = Field(None, description="student folder override")
    index: StrictStr | None = Field(None, description="index folder override")
    allow_new_dataset: StrictBool = Field(
        False, description="accept a run trained on other data (ids change meaning)"
    )


class Item(BaseModel):
    id: str
    score: float
    title: str


class RecommendResponse(BaseModel):
    user_id: str | None
    items: list[Item]
    source: str = Field(description="'model' or 'popularity' (empty history)")
    model_fingerprint: str
    index_fingerprint: str


EXPECTED = {
    "user_id": 'a string user id known to the served run, e.g. "196"',
    "history": "a list of string item ids of the served catalogue",
    "k": "an integer in [1, {max_k}]",
    "exclude_seen": "true or false",
    "exclude": "a list of string item ids",
    "queries": "a non-empty list of recommend bodies (at most {max_batch_queries})",
    "run": "a run folder path (string)",
    "model": "a student folder path (string)",
    "index": "an index folder path (string)",
    "allow_new_dataset": "true or false",
    "body": "a JSON object",
}


def expected(name: str, config: ServeConfig) -> str:
    """What field ``name`` expects, with the server's limits filled in (a JSON object if the
    name is not a field)."""
    text = EXPECTED.get(name, EXPECTED["body"])
    return text.format(max_k=config.max_k, max_batch_queries=config.max_batch_queries)
