"""Probe of reports/recipe/README.md ("Ranking prior", why the unified model's ranking stays at
the counts): how much of the shared trunk's gradient is the ranking loss's?

For a trained cell's checkpoints (a Ray trial directory of a grid under the results directory),
on the same 32 training batches of its data, the gradient of each loss with respect to the
backbone (the trunk both heads read) separately — its norm, the ratio of the two norms at the
weights the weighter gave them, and their cosine. AdamW normalises each parameter's update by
its gradient's running scale, so where the weighted ranking gradient is a small fraction of the
retrieval one, the trunk's updates follow retrieval whatever the ranking loss says; the ranking
head (its own parameters) still learns, on features shaped for retrieval. No training, no
test data. From the repository root:

    OMP_NUM_THREADS=1 python reports/recipe/ranking-prior/probes/gradient_share.py <trial dir>...
"""

import sys
from pathlib import Path

import numpy as np
import torch

from unigrf.config import config_from_dict, resolve_model_size
from unigrf.training.checkpoint_io import load_state_file
from unigrf.training.prepared import load_data
from unigrf.training.step import build_trainer

BATCHES, BATCH_SIZE = 32, 32


def backbone_gradient(model, batch, task: str) -> torch.Tensor:
    """The flattened gradient of `task`'s loss with respect to the backbone's parameters."""
    model.zero_grad(set_to_none=True)
    loss = model.losses(batch, None, retrieval=task == "retrieval", ranking=task == "ranking")[task]
    loss.backward()
    return torch.cat([p.grad.flatten() for p in model.backbone.parameters() if p.grad is not None])


def w_text(weights) -> str:
    return f"{float(weights['retrieval']):.2f}, {float(weights['ranking']):.2f}"


def probe(checkpoint: Path) -> str:
    state = load_state_file(checkpoint / "state.pt")  # weights_only: a planted file runs no code
    cfg = config_from_dict(state["config"])
    data = load_data(cfg)
    cfg = resolve_model_size(cfg, data.num_train_interactions)
    trainer = build_trainer(cfg, data, torch.device("cpu"))
    model = trainer.model
    model.load_state_dict(state["model"])
    model.train()  # dropout as in training: the gradients the optimizer saw
    weights = state["weighter"]["weights"]
    examples = data.train_examples(cfg.data.train_windows)
    rng = np.random.default_rng(0)
    ratios, cosines, norms = [], [], {"retrieval": [], "ranking": []}
    torch.manual_seed(0)
    for _ in range(BATCHES):
        pick = rng.choice(len(examples), BATCH_SIZE, replace=False)
        batch = data.train_batch(examples.users[pick], examples.ends[pick])
        g = {t: backbone_gradient(model, batch, t) for t in ("retrieval", "ranking")}
        for t in g:
            norms[t].append(float(g[t].norm()))
        w = {t: float(weights[t]) for t in ("retrieval", "ranking")}
        ratios.append(w["ranking"] * norms["ranking"][-1] / (w["retrieval"] * norms["retrieval"][-1]))
        cosines.append(float(torch.nn.functional.cosine_similarity(g["retrieval"], g["ranking"], dim=0)))
    hist = state["history"][-1]
    return (
        f"| {cfg.data.dataset} | {cfg.model.backbone} | prior {'on' if cfg.model.ranking_prior else 'off'} | "
        f"{state['epoch']} | {hist.get('train/loss_ranking', float('nan')):.3f} | "
        f"{np.median(norms['retrieval']):.3g} | {np.median(norms['ranking']):.3g} | "
        f"{w_text(weights)} | {np.median(ratios):.3f} | {np.median(cosines):+.3f} |"
    )


def main() -> None:
    print(
        "| dataset | backbone | prior | epoch | train ranking loss | ‖∇ retrieval‖ | ‖∇ ranking‖ | weights "
        "(retrieval, ranking) | weighted ranking / retrieval | cosine |"
    )
    print("|---|---|---|---:|---:|---:|---:|---|---:|---:|")
    for trial in sys.argv[1:]:
        for checkpoint in sorted(Path(trial).glob("checkpoint_*")):
            print(probe(checkpoint), flush=True)


if __name__ == "__main__":
    main()
