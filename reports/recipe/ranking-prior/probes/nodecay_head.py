"""Probe of reports/recipe/README.md ("Ranking prior", why the prior costs ML-100K): the
defaults on ML-100K with the ranking head's and the prior's parameters exempt from weight decay
(every other parameter decayed at train.weight_decay, as the recipe does). Not a config option:
the optimizer is swapped in this process only. From the repository root:

    OMP_NUM_THREADS=1 python reports/recipe/ranking-prior/probes/nodecay_head.py ranking_only 0 <results>
    OMP_NUM_THREADS=1 python reports/recipe/ranking-prior/probes/nodecay_head.py unigrf 0 <results>

argv: variant seed results_dir."""
import sys

import torch

import unigrf.training.step as step

variant, seed, out = sys.argv[1], sys.argv[2], sys.argv[3]
_built = {}
_orig_build = step.build_model


def build_model(*a, **k):
    m = _orig_build(*a, **k)
    _built["m"] = m
    return m


class GroupedAdamW(torch.optim.AdamW):
    def __init__(self, params, lr, weight_decay, betas):
        m = _built["m"]
        exempt = {id(p) for mod in (m.rank_head, m.ranking_prior) if mod is not None for p in mod.parameters()}
        params = list(params)
        groups = [
            {"params": [p for p in params if id(p) not in exempt], "weight_decay": weight_decay},
            {"params": [p for p in params if id(p) in exempt], "weight_decay": 0.0},
        ]
        print(f"exempt from decay: {sum(p.numel() for p in groups[1]['params'])} parameters", flush=True)
        super().__init__(groups, lr=lr, betas=betas)


step.build_model = build_model
step.torch.optim.AdamW = GroupedAdamW  # step.py calls torch.optim.AdamW
from unigrf.cli import main  # noqa: E402

main(["train", "data.dataset=ml-100k", "data.data_dir=../shared/data/ml-100k", f"train.variant={variant}",
      "model.backbone=hstu", f"train.seed={seed}", f"name=probe-{variant}-{seed}", "--results-dir", out, "--workers", "1"])
