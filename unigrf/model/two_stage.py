"""The separately trained two-stage pipeline [SPEC §1.4]: a retrieval-only UniGRF and a
ranking-only UniGRF behind the single-model API.

The two models share no parameter, so stepping one optimizer over their summed losses is the
same as training each alone (each loss's gradient reaches only its own model; with the
`fixed` weighter each loss has weight 1, and each model's gradient norm is clipped alone).
Model selection is per stage too: `fit` keeps each model's own best epoch (see
`unigrf.training.loop.Selection`).
"""

from __future__ import annotations

from torch import Tensor, nn

from unigrf.config import LossConfig, ModelConfig
from unigrf.model.ranking_prior import PriorStats
from unigrf.model.unified import Prefix, UniGRF


class TwoStage(nn.Module):
    """`retriever` trains and serves retrieval, `ranker` trains and serves ranking."""

    has_ranking = True

    def __init__(
        self,
        cfg: ModelConfig,
        num_items: int,
        num_levels: int,
        max_len: int,
        loss: LossConfig | None = None,
        item_counts: Tensor | None = None,
        prior_stats: PriorStats | None = None,
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.num_items, self.num_levels, self.max_len = num_items, num_levels, max_len
        self.retriever = UniGRF(
            cfg, num_items, num_levels, max_len, loss, item_counts, prior_stats=prior_stats
        )
        self.ranker = UniGRF(cfg, num_items, num_levels, max_len, loss, item_counts, prior_stats=prior_stats)

    @classmethod
    def of(cls, retriever: UniGRF, ranker: UniGRF) -> TwoStage:
        """The pipeline of two trained models (e.g. two snapshots of one UniGRF run: per-stage
        model selection); `retriever` and `ranker` are used as they are, not copied."""
        pipeline = cls.__new__(cls)
        nn.Module.__init__(pipeline)
        pipeline.cfg = retriever.cfg
        pipeline.num_items, pipeline.num_levels = retriever.num_items, retriever.num_levels
        pipeline.max_len = retriever.max_len
        pipeline.retriever, pipeline.ranker = retriever, ranker
        return pipeline

    def losses(
        self,
        batch: dict[str, Tensor],
        hard_negatives: Tensor | None = None,
        retrieval: bool = True,
        ranking: bool = True,
        hard_negative_scope: str | None = None,
    ) -> dict[str, Tensor]:
        """{"retrieval": the retriever's retrieval loss, "ranking": the ranker's ranking loss}."""
        out: dict[str, Tensor] = {}
        if retrieval:
            out.update(self.retriever.losses(batch, hard_negatives, True, False, hard_negative_scope))
        if ranking:
            out.update(self.ranker.losses(batch, None, False, True))
        return out

    def score_eval(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """(the retriever's scores [B, num_items + 1], the ranker's target logit [B])."""
        h_query, _ = self.retriever.eval_states(batch)
        _, h_target = self.ranker.eval_states(batch)
        scores = self.retriever.queries(h_query) @ self.retriever.item_table().T
        return scores, self.ranker.target_logit(h_target, batch)

    def eval_prefix(self, batch: dict[str, Tensor]) -> tuple[Tensor, Prefix]:
        """(the retriever's scores [B, num_items + 1], the ranker's encoded history)."""
        scores, _ = self.retriever.eval_prefix(batch)
        prefix = self.ranker.encode_prefix(
            batch["items"], batch["feedback"], batch.get("timestamps"), batch["lengths"]
        )
        return scores, prefix

    def score_candidates(
        self,
        items: Tensor | None,
        feedback: Tensor | None,
        timestamps: Tensor | None,
        lengths: Tensor,
        candidates: Tensor,
        prefix: Prefix | None = None,
    ) -> Tensor:
        """The ranker's like logits [B, K] for candidates [B, K] (see UniGRF.score_candidates)."""
        return self.ranker.score_candidates(items, feedback, timestamps, lengths, candidates, prefix)

    def item_table(self) -> Tensor:
        return self.retriever.item_table()

    @property
    def retrieval_temperature(self) -> float:
        """The retriever's (P(next item) in the cascade's combined score comes from it)."""
        return self.retriever.retrieval_temperature

    def shared_parameters(self) -> list[nn.Parameter]:
        """None: the stages share nothing (the two_stage variant uses the fixed weighter)."""
        return []
