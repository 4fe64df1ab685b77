"""Serving a run (unigrf/serving): the recommender against the evaluation path, the request
schema's error answers, and — on Ray Serve over HTTP — the served top-k of 100 ML-100K users
against the offline cascade, bad-input probes, a replica killed under load, a run replaced
under load."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

from unigrf.config import load_config
from unigrf.data.prepare import prepare_dataset
from unigrf.data.sequences import SequenceData
from unigrf.evaluation.cascade_score import combined_scores, retrieval_log_probs
from unigrf.evaluation.evaluate import cascade_candidates
from unigrf.evaluation.metrics import history_mask
from unigrf.serving.recommender import (
    InputError,
    Interaction,
    Query,
    Recommender,
    ServingError,
    cascade_lambda,
    json_safe,
    load_run,
    retrieval_temperature,
)
from unigrf.serving.schema import RequestError, parse_body
from unigrf.serving.settings import ServeSettings, ServeSettingsError, load_settings

# Ray Serve's own config models use a pydantic feature pydantic deprecates: not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore:Using extra keyword arguments on `Field`:DeprecationWarning")

REPO_ROOT = Path(__file__).resolve().parents[1]
SYNTHETIC = [
    "data.dataset=synthetic",
    "data.synthetic.num_users=150",
    "data.synthetic.num_items=60",
    "data.synthetic.mean_seq_len=15",
    "data.synthetic.min_seq_len=5",
    "data.max_len=12",  # shorter than most histories: the recent part is what the model reads
    "model.size=tiny",
    "loss.num_negatives=16",
    "train.batch_size=32",
    "train.epochs=1",
    "enhancer.top_k=10",
    "enhancer.m=4",
    "eval.ks=[10]",
    "eval.cascade_top_c=20",
]


def train_run(results: Path, name: str, *overrides: str, config: Path | None = None) -> Path:
    """A finished `unigrf train` run directory (config.yaml, best_model.pt, metrics.json)."""
    from unigrf.training.run import run_training

    torch.set_num_threads(1)
    cfg = load_config(config, [*overrides, f"results_dir={results}", f"name={name}"])
    run_training(cfg, verbose=False)
    return results / "runs" / name


@pytest.fixture(scope="module")
def synthetic_runs(tmp_path_factory) -> dict[str, Path]:
    """A one-model run (joint selection: one checkpoint; HSTU's time bias on, so timestamps
    reach the scores) and a two_stage run on synthetic data (prepared in-process, no Ray)."""
    results = tmp_path_factory.mktemp("serving-synthetic")
    return {
        "unified": train_run(results, "unified", *SYNTHETIC, "train.selection=joint", "model.time_bias=true"),
        "two_stage": train_run(results, "two", *SYNTHETIC, "train.variant=two_stage"),
    }


def user_queries(run, data: SequenceData, users, k: int) -> list[Query]:
    """Each user's test-split history in raw ids (every interaction before the last), for the
    time of the test target: what `data.eval_batch(users, "test")` encodes."""
    queries = []
    for u in users:
        start, end = data.offsets[u], data.offsets[u + 1] - 1
        history = tuple(
            Interaction(str(run.item_raw[i]), float(r), int(t))
            for i, r, t in zip(data.items[start:end], data.ratings[start:end], data.timestamps[start:end])
        )
        queries.append(Query(history, k, int(data.timestamps[end])))
    return queries


def offline_cascade(model, data: SequenceData, users, temperature: float, top_c: int, lam: float):
    """The evaluation's two-pass path (evaluate.py without `eval_prefix`): `score_eval` over the
    test batch (history + target), the history masked, retrieval's top C, each re-scored by
    `score_candidates` re-encoding the history, ordered by the combined score.
    -> (items [B, C] in answer order, like probabilities [B, C])."""
    batch = data.eval_batch(np.asarray(users), "test")
    model.eval()
    with torch.no_grad():
        scores, _ = model.score_eval(batch)
        scores = scores.float()
        mask = history_mask(batch["history"], data.num_items)
        candidates = cascade_candidates(scores, mask, top_c)
        logits = model.score_candidates(
            batch["items"], batch["feedback"], batch["timestamps"], batch["lengths"], candidates
        ).float()
        logp = retrieval_log_probs(scores, mask, temperature).gather(1, candidates)
        combined = combined_scores(logp, logits, lam)
    order = combined.argsort(dim=1, descending=True, stable=True)
    return candidates.gather(1, order), torch.sigmoid(logits.double()).gather(1, order)


def assert_matches_offline(answers, run, expected_items, expected_probs, k: int) -> None:
    for answer, items, probs in zip(answers, expected_items, expected_probs):
        assert answer["source"] == "model"
        assert [a["item"] for a in answer["items"]] == [str(run.item_raw[i]) for i in items[:k].tolist()]
        served = np.array([a["like_probability"] for a in answer["items"]])
        np.testing.assert_allclose(served, probs[:k].numpy(), atol=1e-5, rtol=0)


# ---------------------------------------------------------------------------------------------
# the recommender (pure torch)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["unified", "two_stage"])
def test_recommender_equals_offline_cascade(synthetic_runs, kind):
    """One pass (UniGRF) or two (TwoStage): the served top-k and like-probabilities are the
    evaluation path's, for histories longer than max_len too (their recent part is read)."""
    run = load_run(synthetic_runs[kind])
    assert run.passes == (1 if kind == "unified" else 2)
    data = SequenceData.load(run.prepared_dir, max_len=run.max_len)
    users = np.arange(40)
    assert (data.lengths[users] - 1 > run.max_len).any()  # some histories are cut
    k = 10
    answers = Recommender(run).recommend(user_queries(run, data, users, k))
    items, probs = offline_cascade(run.model, data, users, run.temperature, run.top_c, run.cascade_lambda)
    body = [json.loads(json.dumps(_as_json(a))) for a in answers]
    assert_matches_offline(body, run, items, probs, k)
    assert any(a.history_truncated for a in answers) and all(a.history_used <= run.max_len for a in answers)


def _as_json(answer):
    from unigrf.serving.recommender import answer_to_json

    return answer_to_json(answer, "r")


def test_no_cache_recomputation_gives_the_cached_answer(synthetic_runs):
    """The benchmark's no-cache mode (history re-encoded per candidate) ranks like the cache."""
    run = load_run(synthetic_runs["unified"])
    data = SequenceData.load(run.prepared_dir, max_len=run.max_len)
    queries = user_queries(run, data, range(8), k=run.top_c)
    cached = Recommender(run).recommend(queries)
    recomputed = Recommender(run, mode="no_cache").recommend(queries)
    for a, b in zip(cached, recomputed):
        assert [s.item for s in a.items] == [s.item for s in b.items]
        np.testing.assert_allclose(
            [s.like_probability for s in a.items], [s.like_probability for s in b.items], atol=1e-5
        )


def test_history_order_unknown_items_and_popularity(synthetic_runs):
    run = load_run(synthetic_runs["unified"])
    rec = Recommender(run)
    data = SequenceData.load(run.prepared_dir, max_len=run.max_len)
    (query,) = user_queries(run, data, [3], k=5)
    # newest first (ties kept in order: they are the request's to order), an unknown item
    # twice: the same answer, the unknown id listed once
    newest_first = sorted(query.history, key=lambda e: -e.timestamp)  # stable
    shuffled = (*newest_first, *(Interaction("no-such-item", 3.0, 0),) * 2)
    base, mixed = rec.recommend([query, Query(shuffled, 5, query.time)])
    assert [s.item for s in mixed.items] == [s.item for s in base.items] and mixed.unknown_items == [
        "no-such-item"
    ]
    # the query's time is the candidates' (HSTU's time bias reads it)
    later = rec.recommend([Query(query.history, 5, query.time + 10**7)])[0]
    assert [s.like_probability for s in later.items] != [s.like_probability for s in base.items]
    # nothing known: the most popular items, marked, no like-probability
    (popular,) = rec.recommend([Query((Interaction("x", 1.0, 0),), 4)])
    counts = run.popularity.copy()
    counts[0] = -1
    assert popular.source == "popularity" and popular.unknown_items == ["x"] and popular.history_used == 0
    assert [s.item for s in popular.items] == [
        str(run.item_raw[i]) for i in np.argsort(-counts, kind="stable")[:4]
    ]
    assert all(s.like_probability is None for s in popular.items)
    # answers never include a history item, and come in score order
    seen = {e.item for e in query.history}
    assert not seen & {s.item for s in base.items}
    assert [s.score for s in base.items] == sorted((s.score for s in base.items), reverse=True)


def test_check_refuses_what_the_run_cannot_answer(synthetic_runs):
    run = load_run(synthetic_runs["unified"])
    rec = Recommender(run, max_history=30)
    good = Interaction(str(run.item_raw[1]), float(run.rating_values[0]), 5)
    cases = {
        "k": Query((good,), 0),
        "k ": Query((good,), run.top_c + 1),
        "history": Query((good,) * 31, 3),
        "history[1].rating": Query((good, Interaction("1", 2.5, 6)), 3),
        "history[0].timestamp": Query((Interaction("1", 1.0, 2**63),), 3),
        "time": Query((good,), 3, -(2**62)),
    }
    for field, query in cases.items():
        with pytest.raises(InputError) as err:
            rec.check(query)
        assert err.value.field == field.strip()
    rec.check(Query((good,), run.top_c))  # the limits themselves are fine


def test_retrieval_only_run_serves_retrieval_order(tmp_path):
    """An item_only run has no ranking head: its answer is retrieval's order, no like-probability."""
    run = load_run(train_run(tmp_path, "items", *SYNTHETIC, "train.variant=item_only"))
    data = SequenceData.load(run.prepared_dir, max_len=run.max_len)
    (answer,) = Recommender(run).recommend(user_queries(run, data, [5], k=6))
    assert not run.has_ranking and all(s.like_probability is None for s in answer.items)
    assert [s.score for s in answer.items] == [s.retrieval_score for s in answer.items]
    assert [s.score for s in answer.items] == sorted((s.score for s in answer.items), reverse=True)


def test_lambda_temperature_and_json():
    assert cascade_lambda({"cascade_lambda": 0.5}) == (
        0.5,
        "metrics.json cascade_lambda (chosen on validation)",
    )
    lam, source = cascade_lambda({})
    assert math.isinf(lam) and "no cascade_lambda" in source
    assert math.isinf(cascade_lambda(json.loads('{"cascade_lambda": Infinity}'))[0])
    with pytest.raises(ServingError):
        cascade_lambda({"cascade_lambda": -1})
    cfg = load_config(None, ["loss.temperature=0.3"])
    assert retrieval_temperature(torch.nn.Module(), cfg) == 0.3
    holder = torch.nn.Module()
    holder.retrieval_temperature = 0.07
    assert retrieval_temperature(holder, cfg) == 0.07
    assert json_safe({"a": [math.inf, math.nan, 1.5]}) == {"a": ["inf", None, 1.5]}


def test_load_run_errors_name_the_file(synthetic_runs, tmp_path):
    broken = tmp_path / "runs" / "broken"
    broken.mkdir(parents=True)
    shutil.copy(synthetic_runs["unified"] / "config.yaml", broken)
    with pytest.raises(ServingError, match="best_model.pt: missing"):
        load_run(broken)
    with pytest.raises(ServingError, match="prepared dataset file"):
        load_run(synthetic_runs["unified"], tmp_path)
    cfg = load_config(None, [*SYNTHETIC, "data.synthetic.num_items=40"])
    other = prepare_dataset(cfg.data, tmp_path, verbose=False)  # another catalogue
    with pytest.raises(ServingError, match="does not fit"):
        load_run(synthetic_runs["unified"], other)


# ---------------------------------------------------------------------------------------------
# request schema and settings
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        (b"{", 400, None),
        (b"\xff", 400, None),
        (b"[1]", 422, None),
        (b'{"histroy": []}', 422, "histroy"),
        (b'{"history": [{"item": 1.5, "rating": 5, "timestamp": 1}]}', 422, "history[0].item"),
        (b'{"history": [{"item": "1", "rating": "5", "timestamp": 1}]}', 422, "history[0].rating"),
        (b'{"history": [{"item": "1", "rating": 5}]}', 422, "history[0].timestamp"),
        (b'{"history": [{"item": "1", "rating": NaN, "timestamp": 1}]}', 422, "history[0].rating"),
        (b'{"history": [], "k": "3"}', 422, "k"),
        (b'{"history": [], "k": true}', 422, "k"),
    ],
)
def test_parse_body_errors(body, status, field):
    with pytest.raises(RequestError) as err:
        parse_body(body)
    assert err.value.status == status
    if field is not None:
        assert field in [f["field"] for f in err.value.body["fields"]]


def test_parse_body_accepts_the_schema():
    query = parse_body(b'{"history": [{"item": 7, "rating": 4, "timestamp": 9}], "k": 3, "time": 12}')
    assert query == Query((Interaction("7", 4.0, 9),), 3, 12)
    assert parse_body(b'{"history": []}').k == 10


def test_settings_file_and_overrides(tmp_path):
    path = tmp_path / "serve.yaml"
    path.write_text("replicas: 2\nautoscaling:\n  min_replicas: 1\n  max_replicas: 3\nmax_batch_size: 4\n")
    settings = load_settings(path)
    assert settings.replicas == 2 and settings.autoscaling.max_replicas == 3
    assert settings.with_overrides(max_batch_size=16, port=None).max_batch_size == 16
    path.write_text("replicas: 1\nbatch_size: 4\n")
    with pytest.raises(ServeSettingsError, match=r"serve.yaml:2: unknown key batch_size"):
        load_settings(path)
    path.write_text("autoscaling:\n  max: 3\n")
    with pytest.raises(ServeSettingsError, match=r"serve.yaml:2: unknown key autoscaling.max"):
        load_settings(path)
    with pytest.raises(ServeSettingsError, match="max_ongoing_requests"):
        ServeSettings(max_batch_size=64).validate()
    with pytest.raises(ServeSettingsError, match="num_gpus"):
        ServeSettings(device="cuda", num_gpus=0).validate()
    config = ServeSettings(device="auto").replica_config("r", "p", num_gpus=1)
    assert config["device"] == "cuda" and ServeSettings().replica_config("r", "p", 0)["device"] == "cpu"


# ---------------------------------------------------------------------------------------------
# Ray Serve over HTTP, on ML-100K
# ---------------------------------------------------------------------------------------------

APP = "unigrf-test"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ml100k_run(ml100k_dir, ray_cluster, tmp_path_factory) -> Path:
    """A tiny one-model run trained for one epoch on ML-100K (its histories read at max_len
    50), with a finite λ in metrics.json, as the evaluation now chooses one on validation."""
    results = tmp_path_factory.mktemp("serving-ml100k")
    run_dir = train_run(
        results,
        "ml100k",
        f"data.data_dir={ml100k_dir}",
        "data.max_len=50",
        "model.size=tiny",
        "train.epochs=1",
        "train.selection=joint",
        "eval.ks=[10]",
        config=REPO_ROOT / "configs" / "ml-100k.yaml",
    )
    metrics = json.loads((run_dir / "metrics.json").read_text())
    (run_dir / "metrics.json").write_text(json.dumps({**metrics, "cascade_lambda": 1.0}))
    return run_dir


@pytest.fixture(scope="module")
def served(ml100k_run):
    """The ML-100K run on Ray Serve: two replicas (a quarter CPU each), batches of 8."""
    from ray import serve

    from unigrf.serving.deploy import deploy

    settings = ServeSettings(
        port=free_port(), app_name=APP, replicas=2, num_cpus=0.25, max_history=500, max_ongoing_requests=16
    )
    url = deploy(ml100k_run, settings)
    yield url, settings
    serve.shutdown()


def post(url: str, body, timeout: float = 30):
    import requests

    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return requests.post(f"{url}/recommend", data=data, timeout=timeout)


@pytest.mark.ray
def test_http_top_k_equals_offline_for_100_users(served, ml100k_run):
    url, _ = served
    run = load_run(ml100k_run)
    data = SequenceData.load(run.prepared_dir, max_len=run.max_len)
    users = np.random.default_rng(0).choice(data.num_users, 100, replace=False)
    k = 10
    queries = user_queries(run, data, users, k)
    bodies = [
        {
            "history": [{"item": e.item, "rating": e.rating, "timestamp": e.timestamp} for e in q.history],
            "k": k,
            "time": q.time,
        }
        for q in queries
    ]
    with ThreadPoolExecutor(8) as pool:  # concurrent: the replicas batch them
        responses = list(pool.map(lambda b: post(url, b), bodies))
    assert [r.status_code for r in responses] == [200] * 100
    items, probs = offline_cascade(run.model, data, users, run.temperature, run.top_c, 1.0)
    assert_matches_offline([r.json() for r in responses], run, items, probs, k)
    info = __import__("requests").get(f"{url}/info", timeout=10).json()
    assert info["cascade_lambda"] == 1.0 and info["passes_over_history"] == 1 and info["run"] == "ml100k"


@pytest.mark.ray
def test_bad_input_is_answered_4xx_and_the_replicas_keep_serving(served):
    import requests

    url, settings = served
    event = {"item": "50", "rating": 5, "timestamp": 881250949}
    probes = [
        (b"{not json", 400),
        (b"", 400),
        (b'"a string"', 422),
        ({"history": "50"}, 422),
        ({"histroy": [event]}, 422),
        ({"history": [{**event, "rating": 3.5}]}, 422),
        ({"history": [{**event, "rating": "five"}]}, 422),
        ({"history": [{"item": "50", "rating": 5}]}, 422),
        ({"history": [event], "k": 0}, 422),
        ({"history": [event], "k": 101}, 422),
        ({"history": [event], "k": -3}, 422),
        ({"history": [event] * (settings.max_history + 1)}, 422),
    ]
    for body, status in probes:
        response = post(url, body)
        assert response.status_code == status, (body, response.text)
        assert response.json()["error"]
    # documented answers: unknown items ignored and listed; nothing known -> popularity
    answer = post(url, {"history": [event, {**event, "item": "nope"}], "k": 3}).json()
    assert answer["source"] == "model" and answer["unknown_items"] == ["nope"] and len(answer["items"]) == 3
    answer = post(url, {"history": [], "k": 3}).json()
    assert answer["source"] == "popularity" and answer["items"][0]["item"] == "50"
    long = [{"item": str(i), "rating": 4, "timestamp": i} for i in range(1, 301)]
    answer = post(url, {"history": long, "k": 5}).json()
    assert answer["history_used"] == 50 and answer["history_truncated"]
    assert requests.get(f"{url}/recommend", timeout=10).status_code == 405
    assert requests.get(f"{url}/nowhere", timeout=10).status_code == 404
    assert requests.get(f"{url}/health", timeout=10).json()["status"] == "ok"
    assert post(url, {"history": [event], "k": 5}).status_code == 200


def replica_actors(app: str) -> list[str]:
    import ray

    return sorted(
        a["name"]
        for a in ray.util.list_named_actors(all_namespaces=True)
        if a["name"].startswith("SERVE_REPLICA::") and f"{app}#" in a["name"]
    )


def running_replicas(app: str) -> int:
    from ray import serve

    deployment = serve.status().applications[app].deployments["Recommender"]
    return deployment.replica_states.get("RUNNING", 0)


class Load:
    """Requests from `threads` threads in a loop until stopped: (status or error, run) per request."""

    def __init__(self, url: str, threads: int = 2) -> None:
        self.url, self.results, self.stop = url, [], threading.Event()
        self.threads = [threading.Thread(target=self._loop, daemon=True) for _ in range(threads)]

    def _loop(self) -> None:
        body = {"history": [{"item": "50", "rating": 5, "timestamp": 881250949}], "k": 5}
        while not self.stop.is_set():
            try:
                r = post(self.url, body, timeout=60)
                self.results.append((r.status_code, r.json().get("run") if r.status_code == 200 else None))
            except Exception as err:  # a dropped connection counts as a failure
                self.results.append((type(err).__name__, None))

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=90)


@pytest.mark.ray
def test_killed_replica_is_replaced_and_the_service_recovers(served):
    import ray

    url, _ = served
    before = replica_actors(APP)
    assert len(before) == 2
    with Load(url) as load:
        time.sleep(2)
        ray.kill(ray.get_actor(before[0], namespace="serve"), no_restart=True)
        # a bound, not a target: on two cores shared with training runs Serve's controller took
        # over 90 s to replace the replica, so the wait stops at 150 s (the test's limit is 300)
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline and not (
            running_replicas(APP) == 2 and before[0] not in replica_actors(APP)
        ):
            time.sleep(1)
        served_after = len(load.results)
        time.sleep(3)
    assert running_replicas(APP) == 2 and before[0] not in replica_actors(APP)
    after = load.results[served_after:]
    assert after and all(status == 200 for status, _ in after)  # recovered: every later request served
    failed = [status for status, _ in load.results if status != 200]
    assert len(failed) <= max(4, len(load.results) // 10), failed  # the kill's window only


@pytest.mark.ray
def test_replacing_the_run_drops_no_request(served, ml100k_run):
    from unigrf.serving.deploy import deploy

    url, settings = served
    other = ml100k_run.parent / "ml100k-b"
    shutil.copytree(ml100k_run, other)
    with Load(url) as load:
        time.sleep(1)
        deploy(other, dataclasses.replace(settings, replicas=1))  # one new replica to start
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(run == "ml100k-b" for _, run in load.results[-4:]):
            time.sleep(0.5)
        time.sleep(1)
    statuses = [status for status, _ in load.results]
    assert statuses and all(status == 200 for status in statuses), sorted(set(map(str, statuses)))
    runs = [run for _, run in load.results]
    assert runs[0] == "ml100k" and runs[-1] == "ml100k-b"
