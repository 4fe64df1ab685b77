"""Serving a trained run over HTTP (`unigrf serve`, docs/serving.md).

- `recommender.py` (pure torch, no Ray): load a run directory, map raw ids, and answer
  recommendation queries with the cascade's rule — one forward over the history, retrieval's
  top-C, the ranking head on those C as continuations of the history's key/value cache, the
  combined score, top-k;
- `settings.py`: the serving settings (replicas, autoscaling, batching, device) from a YAML
  file and the command's options;
- `schema.py`: the HTTP request/response schema (pydantic) and the error answers;
- `app.py` (Ray Serve): the deployment, its FastAPI ingress and `serve_run`.

Importing this package imports neither Ray nor torch.
"""
