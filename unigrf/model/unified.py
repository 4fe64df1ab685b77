"""UniGRF: one autoregressive model for retrieval and ranking [SPEC §1].

A user's history is one interleaved sequence (i_1, b_1, …, i_N, b_N) of item and feedback
(rating level) tokens — item tokens at even indices, feedback tokens at odd ones — read by one
causal backbone. Outputs are told apart by position:
- at item token i_k (the item is seen, its feedback not yet) the ranking head f_φ predicts
  like_k (BCE against `likes`);
- at feedback token b_k the hidden state is a retrieval query for i_{k+1} (`next_items[:, k]`),
  scored against the item embedding table (the same table that embeds input items): cosine or
  dot product (`ModelConfig.similarity`), trained by the loss `LossConfig` names
  (`unigrf.model.retrieval_losses`: full softmax, sampled softmax, BCE, gBCE).

With `feedback_tokens=False` (the `item_only` variant) the sequence is the items alone
(i_1, …, i_N), as in SASRec and the HSTU retrieval benchmark: item token i_k is the query for
i_{k+1} and there is no ranking. Everything below is written for a `stride` of tokens per
interaction (2 interleaved, 1 item-only): interaction k's item token is at stride·k, the query
it leaves for the next item at stride·k + stride − 1.

Token positions are the token indices, so `max_positions = stride·max_len + 2` covers
evaluation batches (history + one appended target) and packed candidates (position
stride·length). Backbones with absolute positions (SASRec: `Backbone.recency_positions`) get
them counted back from the row's last item slot instead (`_positions`), as SASRec.pytorch's
left padding does. A token is padding where its item is 0 (right padding): keys at padding
are masked and the mask is causal, so padding never changes a real position's output.
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from unigrf.config import LossConfig, ModelConfig
from unigrf.kernels import Dropout
from unigrf.model.backbones import BackboneContext, build_backbone
from unigrf.model.ranking_prior import PriorStats, RankingPrior
from unigrf.model.retrieval_losses import RetrievalLoss, rows_of

HardNegativeScope = Literal["all", "anchor"]


class Prefix(NamedTuple):
    """An encoded prefix, ready to score tokens placed right after it (see `encode_prefix`).

    context: the backbone's per-layer keys/values over S = stride·W prefix tokens;
    key_valid [B, S] bool: prefix tokens a following token may attend (index < stride·length);
    next_position [B] long: the backbone position of a token placed after the prefix (index
    stride·length, see `UniGRF._positions`);
    next_time [B] long | None: its timestamp; query [B, D]: the retrieval query at the
    prefix's last query token (zeros where the prefix is empty); user_term [B] | None: the
    ranking prior's user term over the prefix (`RankingPrior.next_user_term`), None without it.
    """

    context: BackboneContext
    key_valid: Tensor
    next_position: Tensor
    next_time: Tensor | None
    query: Tensor
    user_term: Tensor | None = None

    def select(self, rows: Tensor) -> Prefix:
        """The prefix of batch rows `rows` [R] alone, its keys cut to the longest of them.

        Exact: a following token's output depends on its own row only, and the cut keys are
        padding (key_valid False) in every selected row — right padding makes the valid keys
        of a row a leading run, so `key_valid.sum(1)` is where each row's keys end."""
        valid = self.key_valid[rows]
        s = max(int(valid.sum(dim=1).max()) if len(rows) else 0, 1)
        ctx = self.context
        context = BackboneContext(
            tuple(k[rows, :, :s] for k in ctx.keys),
            tuple(v[rows, :, :s] for v in ctx.values),
            ctx.positions[rows, :s],
            ctx.timestamps[rows, :s] if ctx.timestamps is not None else None,
        )
        next_time = self.next_time[rows] if self.next_time is not None else None
        user_term = self.user_term[rows] if self.user_term is not None else None
        return Prefix(context, valid[:, :s], self.next_position[rows], next_time, self.query[rows], user_term)


def anchor_columns(next_items: Tensor) -> Tensor:
    """[B, N] retrieval targets -> [B] the last column with a target (−1 where none)."""
    cols = torch.arange(next_items.shape[1], device=next_items.device)
    return torch.where(next_items > 0, cols, -1).amax(dim=1)


class UniGRF(nn.Module):
    """The unified generative retrieval + ranking model over one backbone."""

    def __init__(
        self,
        cfg: ModelConfig,
        num_items: int,
        num_levels: int,
        max_len: int,
        loss: LossConfig | None = None,
        item_counts: Tensor | None = None,
        feedback_tokens: bool = True,
        prior_stats: PriorStats | None = None,
    ) -> None:
        """`loss` (default `LossConfig()`) and `item_counts` [num_items + 1] (training counts,
        for popularity negatives / log-Q) configure the retrieval loss; `prior_stats` the
        ranking prior (`model.ranking_prior`, `unigrf.model.ranking_prior`)."""
        super().__init__()
        _, _, dim = cfg.resolved_shape()
        self.cfg = cfg
        self.num_items, self.num_levels, self.max_len = num_items, num_levels, max_len
        self.stride = 2 if feedback_tokens else 1
        self.max_positions = self.stride * max_len + 2
        # Set by `build_model` from EnhancerConfig.scope; `losses(hard_negative_scope=...)` overrides.
        self.hard_negative_scope: HardNegativeScope = "all"
        self.item_embedding = nn.Embedding(num_items + 1, dim, padding_idx=0)
        self.feedback_embedding = (
            nn.Embedding(num_levels + 1, dim, padding_idx=0) if feedback_tokens else None
        )
        for emb in (self.item_embedding, self.feedback_embedding):
            if emb is not None:
                nn.init.normal_(emb.weight, std=cfg.embedding_init_std)
                with torch.no_grad():
                    emb.weight[0].zero_()
        self.embed_scale = math.sqrt(dim)  # small-std tables, unit-scale backbone input
        self.input_dropout = Dropout(cfg.dropout)
        self.backbone = build_backbone(cfg, self.max_positions)
        self.rank_head = (
            nn.Sequential(nn.Linear(dim, cfg.ranking_hidden), nn.GELU(), nn.Linear(cfg.ranking_hidden, 1))
            if feedback_tokens
            else None
        )
        self.ranking_prior = (
            RankingPrior(num_items, num_levels, prior_stats)
            if feedback_tokens and cfg.ranking_prior
            else None
        )
        if self.ranking_prior is not None:  # start as the count model: f_phi adds from zero
            nn.init.zeros_(self.rank_head[-1].weight)
            nn.init.zeros_(self.rank_head[-1].bias)
        self.retrieval_loss = RetrievalLoss(loss or LossConfig(), num_items, item_counts)

    @property
    def has_ranking(self) -> bool:
        """Whether the model predicts feedback (False for the item-only retriever)."""
        return self.rank_head is not None

    @property
    def retrieval_temperature(self) -> float:
        """The retrieval loss's temperature: training's logits are similarity / it, so
        softmax(scores / it) is the model's P(next item) (the cascade's combined score)."""
        return float(self.retrieval_loss.cfg.temperature)

    # ---------------------------------------------------------------------------------------
    # encoding and heads
    # ---------------------------------------------------------------------------------------

    def _tokens(self, items: Tensor, feedback: Tensor | None) -> Tensor:
        """items, feedback [B, N] -> token embeddings [B, stride·N, D] (interleaved, or the
        items alone without feedback tokens)."""
        x = self.item_embedding(items)
        if self.feedback_embedding is not None:
            fb = self.feedback_embedding(feedback)
            if self.cfg.feedback_token == "item_rating":  # b_k = rating level + the item it rates
                fb = fb + x
            x = torch.stack([x, fb], dim=2).flatten(1, 2)
        return self.input_dropout(x * self.embed_scale)

    def _per_token(self, t: Tensor) -> Tensor:
        """[B, N] per interaction -> [B, stride·N] per token (an item token and its feedback
        token share the interaction's validity and time)."""
        return t.repeat_interleave(self.stride, dim=1) if self.stride > 1 else t

    def _token_times(self, timestamps: Tensor | None) -> Tensor | None:
        return None if timestamps is None else self._per_token(timestamps)

    def _positions(self, index: Tensor, ref: Tensor) -> Tensor:
        """Backbone positions [B, T] of tokens at interleaved `index` [B, T] in rows whose last
        item slot — the item a training window ends with, an eval batch's appended target, the
        slot candidates are scored in — is token index `ref` [B].

        Position-relative backbones (HSTU's bias, Llama's RoPE) get `index` itself. SASRec's
        learned absolute positions are counted back from `ref`, as SASRec.pytorch's left
        padding does: the item slot is always position max_positions − 2 and its history sits
        at fixed distances before it. Counted from the sequence start instead, the latest items
        sit at a different position for every user and the high positions are trained by the
        longest users only. (A token's position then depends on the row's length, not on the
        tokens after it: outputs stay causal in the tokens.) Tokens after the slot (a training
        window's last feedback token, padding) share position max_positions − 1.
        """
        if not self.backbone.recency_positions:
            return index
        last = self.max_positions - 2
        return (last - (ref[:, None] - index)).clamp(max=last + 1)

    def encode(self, items: Tensor, feedback: Tensor | None, timestamps: Tensor | None = None) -> Tensor:
        """items, feedback, timestamps [B, N] -> hidden [B, stride·N, D] (interaction k's item
        token at stride·k; feedback may be None without feedback tokens)."""
        b, n = items.shape
        t = self.stride * n
        last_item = self.stride * ((items != 0).sum(dim=1) - 1)  # right padding: the last item's token
        positions = self._positions(torch.arange(t, device=items.device).expand(b, t), last_item)
        # attn_mask=None: causal over right-padded rows (equal to causal + key padding at every
        # real token; lets the backbone use fused causal kernels, see backbones/base.py)
        return self.backbone(self._tokens(items, feedback), None, positions, self._token_times(timestamps))

    def rank_logits(
        self,
        h: Tensor,
        items: Tensor | None = None,
        user_term: Tensor | None = None,
        labels: Tensor | None = None,
    ) -> Tensor:
        """h [..., D] -> like logits [...]: the ranking head f_φ, plus with `model.ranking_prior`
        the count-model terms of `items` [...] and the user term [...] (broadcastable;
        `unigrf.model.ranking_prior`), which the prior then needs; `labels` [...]: training
        positions' own labels, left out of their items' counts."""
        if self.rank_head is None:
            raise ValueError("this model has no ranking head (item-only retriever)")
        logits = self.rank_head(h).squeeze(-1)
        if self.ranking_prior is None:
            return logits
        if items is None or user_term is None:
            raise ValueError("rank_logits: the ranking prior needs the items and the user term")
        return logits + self.ranking_prior(items, user_term, labels)

    def target_logit(self, h_target: Tensor, batch: dict[str, Tensor]) -> Tensor:
        """The like logit [B] of each row's appended item (at index `lengths` of an eval batch's
        items) from its hidden state h_target [B, D]."""
        lengths = batch["lengths"]
        user_term = target = None
        if self.ranking_prior is not None:
            target = batch["items"][torch.arange(len(lengths), device=lengths.device), lengths]
            user_term = self.ranking_prior.next_user_term(batch["feedback"], lengths)
        return self.rank_logits(h_target, target, user_term)

    def queries(self, h: Tensor) -> Tensor:
        """h [..., D] -> retrieval queries [..., D] (L2-normalised for cosine similarity)."""
        return F.normalize(h, dim=-1) if self.cfg.similarity == "cosine" else h

    def item_table(self) -> Tensor:
        """[num_items + 1, D] item vectors scored against the queries (L2-normalised for cosine
        similarity; row 0, padding, is all zeros)."""
        w = self.item_embedding.weight
        return F.normalize(w, dim=-1) if self.cfg.similarity == "cosine" else w

    def shared_parameters(self) -> list[nn.Parameter]:
        """The last backbone block's parameters: both tasks' gradients meet there (grad_norm)."""
        return list(self.backbone.blocks[-1].parameters())

    # ---------------------------------------------------------------------------------------
    # training losses
    # ---------------------------------------------------------------------------------------

    def losses(
        self,
        batch: dict[str, Tensor],
        hard_negatives: Tensor | None = None,
        retrieval: bool = True,
        ranking: bool = True,
        hard_negative_scope: HardNegativeScope | None = None,
    ) -> dict[str, Tensor]:
        """Scalar losses of a `train_batch`, means over valid positions (only the keys asked for;
        no ranking without feedback tokens).

        hard_negatives [B, m] item ids (0 = none) join the retrieval loss of every retrieval
        position of their row (scope "all") or of its anchor position only (scope "anchor": the
        last position with a target); the scope defaults to `self.hard_negative_scope`.
        """
        items = batch["items"]
        h = self.encode(items, batch["feedback"], batch.get("timestamps"))
        out: dict[str, Tensor] = {}
        if retrieval:
            scope = hard_negative_scope or self.hard_negative_scope
            h_query = h[:, self.stride - 1 :: self.stride]
            out["retrieval"] = self._retrieval_loss(h_query, batch["next_items"], hard_negatives, scope)
        if ranking and self.has_ranking:
            valid = items != 0
            if valid.any():
                user_terms = (
                    self.ranking_prior.user_terms(batch["feedback"])
                    if self.ranking_prior is not None
                    else None
                )
                labels = batch["likes"][valid]
                logits = self.rank_logits(
                    h[:, 0::2][valid],
                    items[valid],
                    user_terms[valid] if user_terms is not None else None,
                    labels,
                )
                out["ranking"] = F.binary_cross_entropy_with_logits(
                    logits.float(), batch["likes"][valid].float()
                )
            else:
                out["ranking"] = h.sum() * 0.0
        return out

    def _retrieval_loss(
        self, h_query: Tensor, next_items: Tensor, hard_negatives: Tensor | None, scope: HardNegativeScope
    ) -> Tensor:
        """h_query [B, N, D] (outputs at query tokens), next_items [B, N] -> scalar."""
        valid = next_items > 0
        if not valid.any():
            return h_query.sum() * 0.0
        b = next_items.shape[0]
        rows, cols = valid.nonzero(as_tuple=True)  # P retrieval positions
        anchors = anchor_columns(next_items)  # [B]
        anchor_targets = torch.where(
            anchors >= 0, next_items[torch.arange(b, device=next_items.device), anchors.clamp(min=0)], 0
        )
        queries, table = self.queries(h_query), self.item_table()  # [B, N, D], [I + 1, D]
        hard = hard_scores = None
        if hard_negatives is not None and hard_negatives.shape[1] > 0:
            hard = hard_negatives[rows]  # [P, m]
            if scope == "anchor":
                hard = torch.where((cols == anchors[rows])[:, None], hard, 0)
            elif scope != "all":
                raise ValueError(f"enhancer.scope must be 'all' or 'anchor', got {scope!r}")
            # A row's positions share its m negatives: score them per row, [B, N, D] x [B, D, m],
            # instead of gathering a [P, m, D] copy of their vectors (the step's largest copy).
            hard_vectors = rows_of(table, hard_negatives)  # [B, m, D]
            hard_scores = torch.bmm(queries, hard_vectors.transpose(1, 2))[rows, cols]  # [P, m]
        return self.retrieval_loss(
            queries[rows, cols],
            next_items[rows, cols],
            table,
            rows=rows,
            anchor_positives=anchor_targets,
            hard=hard,
            hard_scores=hard_scores,
        )

    # ---------------------------------------------------------------------------------------
    # evaluation and candidate scoring
    # ---------------------------------------------------------------------------------------

    def eval_states(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """One pass over an `eval_batch` -> (hidden at the history's last query token [B, D],
        hidden at the appended target item token [B, D])."""
        h = self.encode(batch["items"], batch["feedback"], batch.get("timestamps"))
        lengths = batch["lengths"]
        rows = torch.arange(h.shape[0], device=h.device)
        return h[rows, (self.stride * lengths - 1).clamp(min=0)], h[rows, self.stride * lengths]

    def score_eval(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """`eval_batch` -> (retrieval scores [B, num_items + 1]: the similarity of the query
        with every item, unmasked; rank_logit [B]: the like logit of the appended target item,
        zeros without a ranking head)."""
        h_query, h_target = self.eval_states(batch)
        scores = self.queries(h_query) @ self.item_table().T
        logit = (
            self.target_logit(h_target, batch) if self.has_ranking else h_target.new_zeros(h_target.shape[0])
        )
        return scores, logit

    def eval_prefix(self, batch: dict[str, Tensor]) -> tuple[Tensor, Prefix]:
        """`eval_batch` -> (retrieval scores [B, num_items + 1] as `score_eval`'s, the encoded
        history for `score_candidates(prefix=...)`): one pass over the history only."""
        prefix = self.encode_prefix(
            batch["items"], batch["feedback"], batch.get("timestamps"), batch["lengths"]
        )
        return prefix.query @ self.item_table().T, prefix

    def encode_prefix(
        self, items: Tensor, feedback: Tensor, timestamps: Tensor | None, lengths: Tensor
    ) -> Prefix:
        """Encode the first `lengths[b]` interactions of each row (items/feedback/timestamps
        [B, ≥ max(lengths)]; anything beyond `lengths` is ignored) and the retrieval query at
        the prefix's last feedback token.

        Tokens placed after the prefix get position stride·length and, when timestamps are given,
        the time of the interaction that follows the prefix if the batch carries it (a
        non-padding item at index `lengths`, as in an eval batch or a training window cut
        before its last item), else the prefix's last timestamp.
        """
        b, width_in = items.shape
        device = items.device
        rows = torch.arange(b, device=device)
        width = max(int(lengths.max()) if b else 0, 1)
        keep = torch.arange(width, device=device)[None, :] < lengths[:, None]  # [B, W]
        fb = torch.where(keep, feedback[:, :width], 0) if feedback is not None else None
        x = self._tokens(torch.where(keep, items[:, :width], 0), fb)
        times = None
        if timestamps is not None:
            times = self._token_times(torch.where(keep, timestamps[:, :width], 0))
        key_valid = self._per_token(keep)  # [B, S]
        s = self.stride * width
        slot = self.stride * lengths  # where a following item goes
        positions = self._positions(torch.arange(s, device=device).expand(b, s), slot)
        last = (slot - 1).clamp(min=0)  # the last query token of each prefix
        context, h_last = self.backbone.build_context(x, None, positions, times, last)  # causal (see encode)
        query = self.queries(h_last) * (lengths > 0)[:, None]

        next_time = None
        if timestamps is not None:
            follow = lengths.clamp(max=width_in - 1)
            follows = (lengths < width_in) & (items[rows, follow] != 0)
            previous = timestamps[rows, (lengths - 1).clamp(min=0)]
            next_time = torch.where(follows, timestamps[rows, follow], previous)
        user_term = None
        if self.ranking_prior is not None and fb is not None:
            user_term = self.ranking_prior.next_user_term(fb, lengths)
        next_position = self._positions(slot[:, None], slot)[:, 0]
        return Prefix(context, key_valid, next_position, next_time, query, user_term)

    def score_candidates(
        self,
        items: Tensor | None,
        feedback: Tensor | None,
        timestamps: Tensor | None,
        lengths: Tensor,
        candidates: Tensor,
        prefix: Prefix | None = None,
    ) -> Tensor:
        """Like logits [B, K] of each candidate [B, K] as the next item after the prefix
        (the first `lengths[b]` interactions).

        Equivalent to one packed pass (prefix then the K candidate tokens, each candidate
        attending the prefix and itself only, all at position stride·length), computed as the
        prefix's cached keys/values (`encode_prefix`, reused when `prefix` is given; then
        items/feedback/timestamps/lengths are not read) plus a K-token continuation
        (`Backbone.forward_packed`).
        """
        if prefix is None:
            if items is None or feedback is None:
                raise ValueError("score_candidates: pass items and feedback, or an encoded prefix")
            prefix = self.encode_prefix(items, feedback, timestamps, lengths)
        x = self.input_dropout(self.item_embedding(candidates) * self.embed_scale)
        h = self.backbone.forward_packed(
            x, prefix.context, prefix.key_valid, prefix.next_position, prefix.next_time
        )
        user_term = prefix.user_term[:, None] if prefix.user_term is not None else None
        return self.rank_logits(h, candidates, user_term)
