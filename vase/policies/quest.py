"""Quest: selection, not eviction. The full cache stays; each decode step attends to the top pages."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import InvalidParameter, Policy, register


@register
@dataclass(frozen=True)
class Quest(Policy):
    name = "quest"
    kind = "selection"
    page_size: int = 16
    description = (
        "Quest: pages of 16 tokens ranked by an upper bound of q.k from per-page min/max keys; each step "
        "attends to the top pages within the token budget (full cache kept)."
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.page_size < 1:
            raise InvalidParameter("page_size", "must be >= 1", self.page_size)

    def validate(self, budget: int, residual: int) -> None:
        if budget < self.page_size:
            raise InvalidParameter("budget", f"must be >= page_size ({self.page_size})", budget)

    def select(self, query: torch.Tensor, keys: torch.Tensor, lengths: list[int], budget: int) -> torch.Tensor:
        """Boolean mask [B, Hq, 1, L] of the slots each query head may attend to this step.

        query [B, Hq, 1, D]; keys [B, H, L, D]. The page holding the newest token is always chosen.
        """
        batch, q_heads, _, head_dim = query.shape
        kv_heads, length = keys.shape[1], keys.shape[2]
        groups = q_heads // kv_heads
        page = self.page_size
        n_pages = -(-length // page)
        padded = n_pages * page
        k = keys.float()
        slot = torch.arange(padded, device=keys.device)
        valid = slot[None, :] < torch.tensor(lengths, device=keys.device)[:, None]  # [B, padded]
        if padded > length:
            k = torch.nn.functional.pad(k, (0, 0, 0, padded - length))
        k = k.view(batch, kv_heads, n_pages, page, head_dim)
        valid_pages = valid.view(batch, 1, n_pages, page, 1)
        big = torch.finfo(k.dtype).max
        k_max = k.masked_fill(~valid_pages, -big).amax(dim=3)  # [B, H, P, D]
        k_min = k.masked_fill(~valid_pages, big).amin(dim=3)
        q = query.float().view(batch, kv_heads, groups, head_dim)
        # Upper bound of q.k over a page: per dimension, the larger of q*min and q*max.
        bound = torch.maximum(q.unsqueeze(3) * k_max.unsqueeze(2), q.unsqueeze(3) * k_min.unsqueeze(2)).sum(-1)
        page_valid = valid.view(batch, n_pages, page).any(-1)  # [B, P]
        bound = bound.masked_fill(~page_valid[:, None, None, :], float("-inf"))
        last_page = torch.tensor([(n - 1) // page for n in lengths], device=keys.device)
        bound.scatter_(-1, last_page.view(batch, 1, 1, 1).expand(batch, kv_heads, groups, 1), float("inf"))
        n_select = min(max(budget // page, 1), n_pages)
        chosen = bound.topk(n_select, dim=-1).indices  # [B, H, G, n]
        page_mask = torch.zeros(batch, kv_heads, groups, n_pages, dtype=torch.bool, device=keys.device)
        page_mask.scatter_(-1, chosen, True)
        slot_mask = page_mask.repeat_interleave(page, dim=-1)[..., :length] & valid[:, None, None, :length]
        return slot_mask.reshape(batch, q_heads, 1, length)
