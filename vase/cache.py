"""A transformers Cache that keeps a fixed token budget per layer, KV head and batch row.

Layout and rules (see the algorithm spec):
- Each layer preallocates `max(prompt_len, budget) + residual` slots per row and KV head once and
  fills them in place; nothing grows during decode (methods without eviction size the buffer for
  prompt + max_new_tokens instead, and grow by doubling only if told too little). After an eviction
  the buffers shrink to what the rows can still reach before their next eviction (`budget +
  residual` once every row has evicted), so a long prompt's slots are not held once the cache is
  at the budget.
- Rows are stored left-aligned: a row's tokens occupy slots [0, length[row]). Prompts arrive
  right-padded, so padding sits past a row's length and is never attended to nor kept.
- After each single-token append, a row whose length exceeds the budget and is a multiple of the
  residual evicts (with `evict_after_prefill`, a row whose prompt exceeds the budget also evicts
  once at the end of the prefill, so the cache is at the budget before the first token; the
  authors' code evicts only during decoding, so reference-exact runs leave it off): the policy
  scores every slot but the last `residual`, the top `budget - residual` stay (in position order;
  in the order the policy ranks them when the cache is reference-exact), the recency window moves
  right behind them.
  The eviction runs after that step's attention, as in the authors' implementation.
- `positions` holds each slot's original token position, so callers can ask which positions
  layer l, head h holds; rotary positions keep counting the logical length. Slot order is
  position order except in reference-exact mode, where positions follow their tokens' slots.
- Reference-exact (`CacheConfig.reference_exact`) reproduces the authors' code: kept tokens are
  written back in the policy's ranking order (so smoothing runs over score-ranked neighbours from
  the second eviction on) and policies score in the model dtype.

The attention itself runs in `vase.attention`, registered through transformers' AttentionInterface;
the model finds this cache through the `cache=` keyword that generation passes to the forward.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers.cache_utils import Cache, CacheLayerMixin

from .policies import EvictionContext, InvalidParameter, Policy, build_policy, validate_geometry
from .policies.scores import value_magnitude
from .traces import EvictionEvent

EventSink = Callable[[EvictionEvent], None]

# Spare slots a no-eviction cache starts with when the caller gives no generation length.
_DEFAULT_GROWTH = 256


@dataclass(frozen=True)
class CacheConfig:
    """Everything that defines one cache: the method and the shared geometry rules."""

    policy: Policy
    budget: int | None
    residual: int = 64
    reference_exact: bool = False
    evict_after_prefill: bool = False

    @classmethod
    def build(
        cls, method: str, params: dict[str, Any] | None = None, *, budget: int | None = None, residual: int = 64,
        reference_exact: bool = False,
        evict_after_prefill: bool = False,
    ) -> CacheConfig:
        policy = build_policy(method, params)
        validate_geometry(budget, residual, kind=policy.kind)
        if not isinstance(evict_after_prefill, bool):
            raise InvalidParameter("evict_after_prefill", "must be true or false", evict_after_prefill)
        if policy.kind != "none":
            policy.validate(budget, residual)  # type: ignore[arg-type]
        if not isinstance(reference_exact, bool):
            raise InvalidParameter("reference_exact", "must be a boolean", reference_exact)
        return cls(policy=policy, budget=budget if policy.kind != "none" else None, residual=residual,
                   reference_exact=reference_exact, evict_after_prefill=evict_after_prefill)

    @property
    def evicts(self) -> bool:
        return self.policy.kind == "eviction"

    @property
    def keep(self) -> int:
        assert self.budget is not None
        return self.budget - self.residual


def compact_in_place(stored: torch.Tensor, kept: torch.Tensor) -> None:
    """Move the kept slots to the front: stored[.., i, :] = stored[.., kept[.., i], :] for i < K.

    stored [.., H, C] or [.., H, C, D], contiguous; kept [.., H, K]. Whole slots are copied (one
    index_select of rows, not an element-wise gather), in one operation per tensor: on a CPU shared by
    other processes, every further parallel region costs a wait for a descheduled thread.
    """
    keep = kept.shape[-1]
    groups = kept.numel() // keep  # (row, head) pairs
    capacity = stored.shape[kept.dim() - 1]
    feature = stored.shape[-1] if stored.dim() > kept.dim() else 1
    offsets = torch.arange(groups, device=kept.device).unsqueeze(1) * capacity
    rows = (kept.reshape(groups, keep) + offsets).reshape(-1)
    moved = stored.view(groups * capacity, feature).index_select(0, rows)
    stored.view(groups, capacity, feature)[:, :keep] = moved.view(groups, keep, feature)


class EvictionLayer(CacheLayerMixin):
    """One decoder layer's keys, values, original positions and query window."""

    is_sliding = False

    def __init__(self, cache: EvictionCache, layer_idx: int):
        super().__init__()
        self.cache = cache
        self.layer_idx = layer_idx
        self.lengths: list[int] = []  # physical length per row
        self.logical: list[int] = []  # tokens seen per row (prompt + fed)
        self.positions: torch.Tensor | None = None  # [B, H, C] original positions
        self.queries: torch.Tensor | None = None  # [B, Hq, R, D] recent queries (circular)
        self.query_slot = 0
        self.accumulated: torch.Tensor | None = None  # [B, H, C] H2O attention mass
        self.row_states: list[dict] = []
        # Set by `update`, read by the attention function within the same forward.
        self.starts: list[int] = []
        self.pending_tokens = 0

    # -- transformers contract -------------------------------------------------------------
    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        batch, heads, q_len, head_dim = key_states.shape
        self.dtype, self.device = key_states.dtype, key_states.device
        capacity = self.cache.initial_capacity(q_len)
        self.keys = key_states.new_zeros(batch, heads, capacity, head_dim)
        self.values = value_states.new_zeros(batch, heads, capacity, value_states.shape[-1])
        self.positions = torch.zeros(batch, heads, capacity, dtype=torch.long, device=self.device)
        if self.cache.config.policy.needs_attention_weights:
            self.accumulated = torch.zeros(batch, heads, capacity, dtype=torch.float32, device=self.device)
        self.lengths = [0] * batch
        self.logical = [0] * batch
        self.row_states = [{} for _ in range(batch)]
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        q_len = key_states.shape[2]
        if not any(self.lengths) and not self.cache.prompt_lengths:
            self.cache.set_prompt_lengths([q_len] * key_states.shape[0])
        if q_len > 1 and any(self.lengths) and self.cache.config.evicts:
            raise ValueError("an eviction cache takes one token per step after the prompt")
        starts = list(self.lengths)
        end = max(starts) + q_len
        if end > self.capacity:
            self._grow(end)
        if q_len == 1:
            # Decode: one vectorised write per tensor, whatever each row's length.
            rows = torch.arange(len(starts), device=self.device)
            slots = torch.tensor(starts, device=self.device)
            self.keys[rows, :, slots] = key_states[:, :, 0]
            self.values[rows, :, slots] = value_states[:, :, 0]
            self.positions[rows, :, slots] = torch.tensor(self.logical, device=self.device).unsqueeze(1)
        elif len(set(starts)) == 1 and len(set(self.logical)) == 1:  # a prompt: every row alike
            s, first = starts[0], self.logical[0]
            self.keys[:, :, s : s + q_len] = key_states
            self.values[:, :, s : s + q_len] = value_states
            self.positions[:, :, s : s + q_len] = torch.arange(first, first + q_len, device=self.device)
        else:
            for row, s in enumerate(starts):
                first = self.logical[row]
                self.keys[row, :, s : s + q_len] = key_states[row]
                self.values[row, :, s : s + q_len] = value_states[row]
                self.positions[row, :, s : s + q_len] = torch.arange(first, first + q_len, device=self.device)
        self.starts = starts
        self.pending_tokens = q_len
        return self.keys[:, :, :end], self.values[:, :, :end]

    def get_seq_length(self) -> int:
        return max(self.logical, default=0)

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return max(self.lengths, default=0) + query_length, 0

    def get_max_length(self) -> int:
        return self.capacity if self.is_initialized else -1

    def reset(self) -> None:
        self.__init__(self.cache, self.layer_idx)

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        """Keep only the given rows (rows that finished leave; the buffers shrink with them)."""
        if not self.is_initialized:
            return
        idx = indices.to(self.device)
        rows = indices.tolist()
        self.keys = self.keys[idx].contiguous()
        self.values = self.values[idx].contiguous()
        self.positions = self.positions[idx].contiguous()
        if self.queries is not None:
            self.queries = self.queries[idx].contiguous()
        if self.accumulated is not None:
            self.accumulated = self.accumulated[idx].contiguous()
        self.lengths = [self.lengths[r] for r in rows]
        self.logical = [self.logical[r] for r in rows]
        self.row_states = [self.row_states[r] for r in rows]

    def load_prefill(self, keys: torch.Tensor, values: torch.Tensor, queries: torch.Tensor | None,
                     accumulated: torch.Tensor | None, *, rows: torch.Tensor) -> None:
        """Fill an empty layer with prompts prefilled elsewhere (`prefill_state` of a right-padded
        batch of distinct prompts; this cache's row r takes prefilled row `rows[r]`) and commit them
        as the prefill would, the end-of-prefill eviction included."""
        length = keys.shape[2]
        self.lazy_initialization(keys[rows], values[rows])
        self.keys[:, :, :length] = keys[rows]
        self.values[:, :, :length] = values[rows]
        self.positions[:, :, :length] = torch.arange(length, device=self.device)
        if queries is not None and self.cache.config.policy.needs_queries:
            self.queries = queries[rows]
            self.query_slot = 0
        if accumulated is not None and self.accumulated is not None:
            self.accumulated[:, :, :length] = accumulated[rows]
        self.starts = [0] * len(rows)
        self.pending_tokens = length
        self.finish_forward()

    def prefill_state(self) -> tuple[torch.Tensor, ...]:
        """The prompts' keys, values, recent queries and attention mass (see `load_prefill`)."""
        length = max(self.lengths)
        return (self.keys[:, :, :length].clone(), self.values[:, :, :length].clone(),
                None if self.queries is None else self.queries.clone(),
                None if self.accumulated is None else self.accumulated[:, :, :length].clone())

    # -- what the attention function calls -------------------------------------------------
    @property
    def capacity(self) -> int:
        return self.keys.shape[2] if self.is_initialized else 0

    def visible_lengths(self) -> list[int]:
        """Per row, the slots the current forward's queries may see (up to the last written)."""
        return [s + self.pending_tokens for s in self.starts]

    def record_queries(self, query: torch.Tensor) -> None:
        """Keep the last `residual` post-RoPE queries of each row (circular buffer)."""
        if not self.cache.records_queries:
            return
        window = self.cache.config.residual
        q_len = query.shape[2]
        if self.queries is None:
            batch, q_heads, _, head_dim = query.shape
            self.queries = query.new_zeros(batch, q_heads, window, head_dim)
            self.query_slot = 0
        if q_len == 1:
            self.queries[:, :, self.query_slot] = query[:, :, 0]
            self.query_slot = (self.query_slot + 1) % window
            return
        # A prompt: each row's last `window` real queries, right-aligned so the circular order
        # (oldest at query_slot) holds for every row whatever its prompt length.
        for row, real in enumerate(self.cache.prompt_lengths):
            n = min(real, window)
            self.queries[row, :, window - n :] = query[row, :, real - n : real]
        self.query_slot = 0

    def newest_query(self) -> torch.Tensor:
        assert self.queries is not None
        return self.queries[:, :, (self.query_slot - 1) % self.queries.shape[2]].unsqueeze(2)

    def accumulate_attention(self, weights: torch.Tensor) -> None:
        """Add this step's attention mass (summed over queries, averaged over the GQA group) per slot."""
        assert self.accumulated is not None
        batch, q_heads, q_len, length = weights.shape
        heads = self.keys.shape[1]
        weights = weights.float()
        if q_len > 1:  # a right-padded prompt: padding queries add no mass
            real = torch.tensor(self.cache.prompt_lengths, device=weights.device).view(batch, 1, 1, 1)
            weights = weights * (torch.arange(q_len, device=weights.device).view(1, 1, -1, 1) < real)
        mass = weights.sum(dim=2).view(batch, heads, q_heads // heads, length).mean(dim=2)
        self.accumulated[:, :, :length] += mass

    def finish_forward(self) -> None:
        """Commit the tokens written by `update`, then evict in rows where it is due."""
        q_len = self.pending_tokens
        if q_len > 1 and not any(self.starts):
            # Prompt: rows are right-padded; only each row's real tokens count.
            self.lengths = list(self.cache.prompt_lengths)
            self.logical = list(self.cache.prompt_lengths)
        else:
            self.lengths = [s + q_len for s in self.starts]
            self.logical = [n + q_len for n in self.logical]
        self.pending_tokens = 0
        config = self.cache.config
        if not config.evicts or (q_len != 1 and not (config.evict_after_prefill and not any(self.starts))):
            return
        budget, residual = config.budget, config.residual
        due: dict[int, list[int]] = {}
        for row, length in enumerate(self.lengths):
            # A prompt over the budget evicts at once (evict_after_prefill); a decode step on the schedule.
            if length > budget and (q_len > 1 or length % residual == 0):
                due.setdefault(length, []).append(row)
        for length, rows in due.items():
            started = self.cache.clock()
            self._evict(rows, length)
            self.cache.eviction_seconds += self.cache.clock() - started
        if due:
            self._release_slots()

    # -- eviction ----------------------------------------------------------------------------
    def _evict(self, rows: list[int], length: int) -> None:
        config = self.cache.config
        budget, residual, keep = config.budget, config.residual, config.keep
        n_candidates = length - residual
        whole_batch = len(rows) == len(self.lengths)
        sel: slice | torch.Tensor = slice(None) if whole_batch else torch.tensor(rows, device=self.device)

        policy = config.policy
        ctx = EvictionContext(
            keys=self.keys[sel, :, :n_candidates],
            values=self.values[sel, :, :n_candidates],
            positions=self.positions[sel, :, :n_candidates],
            budget=budget,
            residual=residual,
            queries=self.queries[sel] if policy.needs_queries else None,
            newest_query=self.newest_query()[sel] if policy.needs_queries else None,
            accumulated_attention=self.accumulated[sel, :, :n_candidates] if self.accumulated is not None else None,
            generators=[self.cache.eviction_generators[r] for r in rows],
            row_states=[self.row_states[r] for r in rows],
            reference_exact=config.reference_exact,
        )
        scores = policy.score(ctx)
        # Reference-exact keeps the scoring dtype for the top-k too: ties then break as theirs do.
        scores = scores if config.reference_exact else scores.float()
        # -inf (e.g. zero sampling weight) must still rank above nothing; +inf marks reserved slots.
        lowest = torch.finfo(scores.dtype).min
        scores = torch.nan_to_num(scores, nan=lowest, neginf=lowest)
        kept = scores.topk(keep, dim=-1).indices
        if not config.reference_exact:
            kept = kept.sort(dim=-1).values  # slot order == position order

        sink = self.cache.trace_sink
        if sink is not None:
            self._report(sink, rows, ctx, scores, kept, length)

        window = slice(n_candidates, length)
        # (where in the layer, which part of `kept`): the whole batch in one go, or each evicting
        # row on its own.
        targets = [(slice(None), slice(None))] if whole_batch else list(zip(rows, range(len(rows))))
        for target, i in targets:
            for stored in (self.keys, self.values, self.positions):
                compact_in_place(stored[target], kept[i])
                stored[target, :, keep:budget] = stored[target, :, window]
            if self.accumulated is not None:
                self._move_accumulated(target, kept[i], window)
        for row in rows:
            self.lengths[row] = budget
        if self.layer_idx == 0:
            for row in rows:
                self.cache.evictions[row] += 1

    def _release_slots(self) -> None:
        """After an eviction, give back the slots no row can need any more.

        A row that has evicted holds `budget` slots; one that has not yet (prompts of different
        lengths evict at different steps) holds its own length. Either grows only up to its next
        eviction, at the first multiple of `residual` above both its length and the budget (the
        budget is a multiple of `residual`), so the longest row's next eviction length is all the
        capacity needed: `budget + residual` once every row has evicted, at most
        `max(budget, longest row) + residual` before. The prompt's extra slots are freed at the
        first eviction instead of being held for the whole generation. Slots below that bound keep
        their contents, so the attention, the policies and the traces see exactly what they saw.
        """
        config = self.cache.config
        residual = config.residual
        needed = (max(config.budget, *self.lengths) // residual + 1) * residual
        if needed >= self.capacity:
            return

        def fitted(t: torch.Tensor) -> torch.Tensor:
            # A contiguous copy: a view would keep the old storage alive, and compaction needs
            # contiguous buffers.
            return t[:, :, :needed].clone(memory_format=torch.contiguous_format)

        self.keys, self.values, self.positions = fitted(self.keys), fitted(self.values), fitted(self.positions)
        if self.accumulated is not None:
            self.accumulated = fitted(self.accumulated)

    def _move_accumulated(self, row: int | slice, kept: torch.Tensor, window: slice) -> None:
        """H2O mass follows its tokens: kept slots first, then the window; freed slots restart at 0."""
        keep, budget = self.cache.config.keep, self.cache.config.budget
        acc = self.accumulated[row]
        kept_mass = acc[..., : window.start].gather(-1, kept)
        window_mass = acc[..., window].clone()
        acc[..., budget:] = 0.0
        acc[..., keep:budget] = window_mass
        acc[..., :keep] = kept_mass

    def _report(
        self, sink: EventSink, rows: list[int], ctx: EvictionContext, scores: torch.Tensor, kept: torch.Tensor,
        length: int,
    ) -> None:
        magnitude = value_magnitude(ctx.values, "range")
        n = ctx.num_candidates
        # Events list positions ascending, whatever order the slots hold them in.
        kept = kept.gather(-1, ctx.positions.gather(-1, kept).argsort(dim=-1))
        for i, row in enumerate(rows):
            is_kept = torch.zeros(kept.shape[1], n, dtype=torch.bool, device=kept.device)
            is_kept.scatter_(1, kept[i], True)
            evicted = (~is_kept).nonzero()[:, 1].view(kept.shape[1], n - kept.shape[2])
            evicted = evicted.gather(-1, ctx.positions[i].gather(1, evicted).argsort(dim=-1))
            sink(
                EvictionEvent(
                    row=self.cache.row_ids[row],
                    layer=self.layer_idx,
                    logical_length=self.logical[row],
                    prompt_length=self.cache.original_prompt_lengths[self.cache.row_ids[row]],
                    residual=ctx.residual,
                    kept_positions=ctx.positions[i].gather(1, kept[i]).cpu(),
                    evicted_positions=ctx.positions[i].gather(1, evicted).cpu(),
                    kept_scores=scores[i].gather(1, kept[i]).float().cpu(),
                    kept_magnitude=magnitude[i].gather(1, kept[i]).cpu(),
                    evicted_magnitude=magnitude[i].gather(1, evicted).cpu(),
                )
            )

    def _grow(self, needed: int) -> None:
        if self.cache.config.evicts:
            raise RuntimeError(f"eviction cache overflow: need {needed} slots, have {self.capacity}")
        capacity = max(needed, 2 * self.capacity)

        def grown(t: torch.Tensor) -> torch.Tensor:
            out = t.new_zeros(*t.shape[:2], capacity, *t.shape[3:])
            out[:, :, : t.shape[2]] = t
            return out

        self.keys, self.values, self.positions = grown(self.keys), grown(self.values), grown(self.positions)
        if self.accumulated is not None:
            self.accumulated = grown(self.accumulated)

    # -- inspection ----------------------------------------------------------------------------
    def held_positions(self, row: int, head: int) -> torch.Tensor:
        """Original positions layer holds for (row, head), in slot order."""
        return self.positions[row, head, : self.lengths[row]].clone()

    def nbytes(self) -> int:
        if not self.is_initialized:
            return 0
        return self.keys.nbytes + self.values.nbytes


class EvictionCache(Cache):
    """A list of `EvictionLayer`s sharing one policy, geometry, per-row generators and trace sink."""

    def __init__(
        self,
        config: CacheConfig,
        num_layers: int,
        *,
        batch_size: int = 1,
        eviction_seeds: Sequence[int] | None = None,
        max_new_tokens: int | None = None,
        trace_sink: EventSink | None = None,
        device: torch.device | str = "cpu",
    ):
        self.config = config
        self.max_new_tokens = max_new_tokens
        self.trace_sink = trace_sink
        seeds = list(eviction_seeds) if eviction_seeds is not None else list(range(batch_size))
        if len(seeds) != batch_size:
            raise InvalidParameter("eviction_seeds", f"needs one seed per row ({batch_size})", len(seeds))
        self.eviction_generators = [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]
        self.row_ids = list(range(batch_size))
        self.evictions = [0] * batch_size
        self.attention_backend = "sdpa"
        # Time spent choosing and compacting (benchmarks read it). `profile` makes the clock wait
        # for queued GPU work, so the figure is exact there at the price of a sync per eviction.
        self.eviction_seconds = 0.0
        self.profile = False
        self.prompt_lengths: list[int] = []
        self.original_prompt_lengths: list[int] = []
        # Keep the last `residual` queries: what the policy scores with (a shared prefill keeps them
        # for whichever policy loads it).
        self.records_queries = config.policy.needs_queries
        super().__init__(layers=[EvictionLayer(self, i) for i in range(num_layers)])

    @classmethod
    def for_model(cls, model, config: CacheConfig, **kwargs) -> EvictionCache:
        text_config = model.config.get_text_config(decoder=True)
        return cls(config, text_config.num_hidden_layers, device=model.device, **kwargs)

    def clock(self) -> float:
        if self.profile and torch.cuda.is_available():
            torch.cuda.synchronize()
        return time.perf_counter()

    def set_prompt_lengths(self, lengths: Sequence[int]) -> None:
        """Real (unpadded) prompt length per row; must be called before a right-padded prefill."""
        self.prompt_lengths = [int(n) for n in lengths]
        self.original_prompt_lengths = list(self.prompt_lengths)

    def initial_capacity(self, prompt_slots: int) -> int:
        if self.config.evicts:
            return max(prompt_slots, self.config.budget) + self.config.residual
        return prompt_slots + (self.max_new_tokens if self.max_new_tokens is not None else _DEFAULT_GROWTH)

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        rows = indices.tolist()
        for layer in self.layers:
            layer.batch_select_indices(indices)
        self.eviction_generators = [self.eviction_generators[r] for r in rows]
        self.row_ids = [self.row_ids[r] for r in rows]
        self.evictions = [self.evictions[r] for r in rows]
        self.prompt_lengths = [self.prompt_lengths[r] for r in rows]

    def nbytes(self) -> int:
        """Bytes held by key and value storage across layers."""
        return sum(layer.nbytes() for layer in self.layers)

    def physical_lengths(self) -> list[int]:
        return list(self.layers[0].lengths)
