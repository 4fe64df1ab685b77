"""The Ray Serve deployment of a run: a FastAPI ingress over `Recommender` (docs/serving.md).

Routes: `POST /recommend` (schema.py), `GET /health`, `GET /info`. Each replica loads the run
named by its `user_config` (`ServeSettings.replica_config`) in `reconfigure`, beside the run it
already holds, and switches between two batches. Deploying another run under the same
application name is a rolling update with surge (`max_surge_percent=100`): each new replica
loads the new run while the old ones keep answering, and an old replica drains its requests
before it stops — no dropped request (tests/test_serving.py checks it under load). Through a
Serve config file (`serve deploy`), where only the user_config changes, the same `reconfigure`
updates the replicas in place without restarting them.

Requests are batched with `@serve.batch`: the queries that arrive within
`batch_wait_timeout_s` (at most `max_batch_size`) share one forward pass. A request is parsed
and checked before it joins a batch, so a bad one is answered 4xx alone; the batch runs in a
worker thread (`asyncio.to_thread`), so the replica's event loop keeps accepting requests and
health checks while the model works.
"""

import asyncio
from pathlib import Path
from typing import Any

import torch
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from ray import serve

from unigrf.provenance import git_commit
from unigrf.serving.recommender import Answer, InputError, Query, Recommender, answer_to_json, load_run
from unigrf.serving.schema import RequestError, parse_body
from unigrf.serving.settings import ServeSettings

DEPLOYMENT_NAME = "Recommender"

api = FastAPI(
    title="UniGRF recommendations",
    description="One generative model retrieves and ranks: POST /recommend (docs/serving.md).",
)


def load_recommender(config: dict[str, Any]) -> Recommender:
    """A replica's `Recommender` from its user_config (settings.replica_config)."""
    torch.set_num_threads(int(config["torch_threads"]))
    device = torch.device(config["device"])
    run = load_run(config["run_dir"], config["prepared_dir"], device)
    return Recommender(run, config["mode"], device, int(config["max_history"]))


def _error(status: int, body: dict[str, Any]) -> JSONResponse:
    return JSONResponse(body, status_code=status)


@serve.deployment(name=DEPLOYMENT_NAME)
@serve.ingress(api)
class RecommenderDeployment:
    """One replica: a loaded run and its batching queue."""

    def __init__(self) -> None:
        self.recommender: Recommender | None = None
        self.config: dict[str, Any] = {}
        self.serving_commit = git_commit()

    async def reconfigure(self, config: dict[str, Any]) -> None:
        """Load `config`'s run beside the current one, then switch (requests keep flowing)."""
        recommender = await asyncio.to_thread(load_recommender, config)
        self.batched.set_max_batch_size(int(config["max_batch_size"]))
        self.batched.set_batch_wait_timeout_s(float(config["batch_wait_timeout_s"]))
        self.recommender, self.config = recommender, dict(config)

    def check_health(self) -> None:
        if self.recommender is None:
            raise RuntimeError("no run loaded")

    @api.get("/health")
    async def health(self) -> dict[str, Any]:
        return {"status": "ok", "run": self.recommender.run.name if self.recommender else None}

    @api.get("/info")
    async def info(self) -> JSONResponse:
        rec = self.recommender
        body = rec.run.info()
        body["serving"] = {
            "mode": rec.mode,
            "device": str(rec.device),
            "torch_threads": torch.get_num_threads(),
            "max_batch_size": self.config.get("max_batch_size"),
            "batch_wait_timeout_s": self.config.get("batch_wait_timeout_s"),
            "max_history": rec.max_history,
            "commit": self.serving_commit,
            "replica": serve.get_replica_context().replica_tag,
        }
        return JSONResponse(body)

    @api.post("/recommend")
    async def recommend(self, request: Request) -> JSONResponse:
        try:
            query = parse_body(await request.body())
            self.recommender.check(query)
        except RequestError as err:
            return _error(err.status, err.body)
        except InputError as err:
            return _error(422, {"error": str(err), "fields": [{"field": err.field, "message": err.message}]})
        result, run = await self.batched(query)
        if isinstance(result, InputError):  # the run was replaced between check and batch
            return _error(
                422, {"error": str(result), "fields": [{"field": result.field, "message": result.message}]}
            )
        return JSONResponse(answer_to_json(result, run))

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.005)
    async def batched(self, queries: list[Query]) -> list[tuple[Answer | InputError, str]]:
        """One forward pass for the queries gathered (sizes set by `reconfigure`)."""
        recommender = self.recommender  # this batch's run, even if a reconfigure swaps it
        results: list[Answer | InputError | None] = [None] * len(queries)
        valid = []
        for i, query in enumerate(queries):
            try:
                recommender.check(query)
                valid.append(i)
            except InputError as err:
                results[i] = err
        if valid:
            answers = await asyncio.to_thread(recommender.recommend, [queries[i] for i in valid])
            for i, answer in zip(valid, answers):
                results[i] = answer
        return [(r, recommender.run.name) for r in results]


def build_app(
    settings: ServeSettings, run_dir: str | Path, prepared_dir: str | Path, num_gpus: float
) -> serve.Application:
    """The application of `run_dir` under `settings` (replicas or autoscaling, resources,
    batching; `num_gpus` per replica, resolved by the caller from the cluster)."""
    options: dict[str, Any] = {
        "ray_actor_options": {"num_cpus": settings.num_cpus, "num_gpus": num_gpus},
        "max_ongoing_requests": settings.max_ongoing_requests,
        "user_config": settings.replica_config(run_dir, prepared_dir, num_gpus),
        # a redeploy (another run) starts each new replica before its old one stops
        "max_surge_percent": 100,
    }
    if settings.autoscaling is not None:
        scaling = settings.autoscaling
        options["autoscaling_config"] = {
            "min_replicas": scaling.min_replicas,
            "max_replicas": scaling.max_replicas,
            "target_ongoing_requests": scaling.target_ongoing_requests,
        }
    else:
        options["num_replicas"] = settings.replicas
    return RecommenderDeployment.options(**options).bind()
