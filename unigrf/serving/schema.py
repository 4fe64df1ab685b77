"""The HTTP schema of `POST /recommend` (pydantic) and the error answers (docs/serving.md).

Request body:

    {"history": [{"item": "50", "rating": 5, "timestamp": 881250949}, ...],
     "k": 10,                 # optional, 1..C (the run's cascade_top_c); default 10
     "time": 881251000}       # optional: when the recommendation is for (default: the latest
                              # history timestamp); the candidates sit at this time

`item` is the dataset's raw id (a string; an integer is taken as its decimal string). Unknown
fields are refused, so a misspelt key is an error rather than a silently empty history.

Errors never reach a replica's health: `parse_body` turns every malformed body into a
`RequestError` with its status — 400 for a body that is not JSON, 422 for JSON that does not
fit the schema or the run (`Recommender.check`: k out of range, a rating the dataset does not
have, a history over the configured maximum) — and a message naming the field.
"""

from __future__ import annotations

import json
import math
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr, ValidationError

from unigrf.serving.recommender import Interaction, Query

DEFAULT_K = 10


class RequestError(ValueError):
    """A request answered with a 4xx status: `status`, and `body` (JSON: error, fields)."""

    def __init__(self, status: int, message: str, fields: list[dict[str, str]] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = {"error": message, "fields": fields or []}


class InteractionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    item: StrictStr | StrictInt
    rating: StrictFloat | StrictInt
    timestamp: StrictInt


class RecommendIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    history: list[InteractionIn]
    k: StrictInt = Field(default=DEFAULT_K)
    time: StrictInt | None = None


def _location(loc: tuple[Any, ...]) -> str:
    """("history", 3, "rating") -> "history[3].rating"."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("str", "int", "float"):
            continue  # pydantic's union-member labels
        else:
            out += f".{part}" if out else str(part)
    return out or "body"


def parse_body(body: bytes) -> Query:
    """The request body -> a `Query`, or RequestError(400 not JSON / 422 not the schema)."""
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise RequestError(400, f"request body is not valid JSON: {err}") from None
    if not isinstance(data, dict):
        raise RequestError(422, f"request body must be a JSON object, got {type(data).__name__}")
    try:
        request = RecommendIn.model_validate(data)
    except ValidationError as err:
        messages: dict[str, list[str]] = {}  # a union reports each member's failure: join them
        for e in err.errors(include_url=False):
            found = messages.setdefault(_location(tuple(e["loc"])), [])
            if e["msg"] not in found:
                found.append(e["msg"])
        fields = [{"field": where, "message": " or ".join(msgs)} for where, msgs in messages.items()]
        summary = "; ".join(f"{f['field']}: {f['message']}" for f in fields[:3])
        raise RequestError(422, f"request does not fit the schema: {summary}", fields) from None
    history = []
    for i, event in enumerate(request.history):
        rating = float(event.rating)
        if not math.isfinite(rating):
            where = f"history[{i}].rating"
            raise RequestError(
                422, f"{where}: must be finite", [{"field": where, "message": "must be finite"}]
            )
        history.append(Interaction(str(event.item), rating, int(event.timestamp)))
    return Query(tuple(history), int(request.k), request.time)
