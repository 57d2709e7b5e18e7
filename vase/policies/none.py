"""No eviction: the full cache, the upper bound every method is measured against."""

from __future__ import annotations

from dataclasses import dataclass

from .base import Policy, register


@register
@dataclass(frozen=True)
class FullCache(Policy):
    name = "full"
    kind = "none"
    description = "No eviction: every KV pair is kept."
