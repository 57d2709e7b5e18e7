"""Score building blocks shared by the policies, each a direct transcription of the spec's formula."""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F

Magnitude = Literal["range", "var", "l2"]
MAGNITUDES: tuple[str, ...] = ("range", "var", "l2")

SMOOTHING_KERNEL = 5


def window_attention(
    queries: torch.Tensor, keys: torch.Tensor, *, smoothing: bool, temperature: float = 1.0
) -> torch.Tensor:
    """Attention of a query window over the candidates, one score per KV head and candidate.

    softmax_j(q . k_j / (sqrt(d) * tau)) for each query, averaged over the window; optionally
    average-pooled along positions (kernel 5, padding 2, stride 1) per query head; then averaged
    over the query heads of each KV head's GQA group. queries [B, Hq, W, D], keys [B, H, N, D].
    """
    batch, q_heads, window, head_dim = queries.shape
    kv_heads, n = keys.shape[1], keys.shape[2]
    groups = q_heads // kv_heads
    q = queries.float().view(batch, kv_heads, groups, window, head_dim)
    k = keys.float().unsqueeze(2)  # [B, H, 1, N, D]
    logits = torch.matmul(q, k.transpose(-1, -2)) / (math.sqrt(head_dim) * temperature)
    weights = torch.softmax(logits, dim=-1).mean(dim=-2)  # [B, H, G, N]
    if smoothing:
        pooled = F.avg_pool1d(
            weights.reshape(batch, q_heads, n),
            kernel_size=SMOOTHING_KERNEL,
            padding=SMOOTHING_KERNEL // 2,
            stride=1,
        )
        weights = pooled.view(batch, kv_heads, groups, n)
    return weights.mean(dim=2)


def value_magnitude(values: torch.Tensor, kind: str = "range") -> torch.Tensor:
    """Magnitude of each value vector over head_dim: range (max - min), variance or L2 norm."""
    v = values.float()
    if kind == "range":
        return v.amax(dim=-1) - v.amin(dim=-1)
    if kind == "var":
        return v.var(dim=-1)
    if kind == "l2":
        return v.norm(dim=-1)
    raise ValueError(f"magnitude must be one of {MAGNITUDES}, got {kind!r}")


def reserve_sinks(scores: torch.Tensor, positions: torch.Tensor, n_sink: int, value: float) -> torch.Tensor:
    """Give the first `n_sink` original positions a fixed score (inf reserves them)."""
    if n_sink <= 0:
        return scores
    return scores.masked_fill(positions < n_sink, value)


def cur_scores(keys: torch.Tensor, values: torch.Tensor, projection: torch.Tensor) -> torch.Tensor:
    """CUR leverage proxy: ||k_j G||^2 * ||v_j G||^2 normalised over j. projection: [B, D, r]."""
    g = projection.to(keys.dtype).unsqueeze(1)  # [B, 1, D, r]
    k2 = (keys @ g).float().pow(2).sum(dim=-1)
    v2 = (values @ g).float().pow(2).sum(dim=-1)
    scores = k2 * v2
    return scores / scores.sum(dim=-1, keepdim=True)


def gaussian_projection(
    generators: list[torch.Generator], head_dim: int, rank: int, device: torch.device
) -> torch.Tensor:
    """One Gaussian matrix G [D, r] scaled by 1/sqrt(r) per batch row, drawn from that row's generator."""
    mats = [
        torch.randn(head_dim, rank, generator=g, device=device) / math.sqrt(rank) for g in generators
    ]
    return torch.stack(mats)


def key_redundancy(keys: torch.Tensor) -> torch.Tensor:
    """R-KV redundancy: softmax over candidates of each key's mean cosine similarity to the others.

    Self-similarity is zeroed before the mean (the mean runs over all N candidates, as the
    authors' code does).
    """
    k = keys.float()
    k = k / (k.norm(dim=-1, keepdim=True) + 1e-8)
    similarity = k @ k.transpose(-1, -2)  # [B, H, N, N]
    n = keys.shape[2]
    similarity.diagonal(dim1=-2, dim2=-1).zero_()
    return similarity.sum(dim=-1).div(n).softmax(dim=-1)


def uniform_noise(generators: list[torch.Generator], shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """Uniform(0,1) noise [B, *shape], each row drawn from its own generator."""
    return torch.stack([torch.rand(shape, generator=g, device=device) for g in generators])


def gumbel_keys(weights: torch.Tensor, generators: list[torch.Generator]) -> torch.Tensor:
    """Keys whose top-k is a draw of k items without replacement with probability proportional to weights.

    log(w) + Gumbel noise (the Gumbel-top-k trick) is the same distribution as drawing items one by
    one, each in proportion to the remaining weights; zero weights get -inf and are drawn last.
    """
    u = uniform_noise(generators, tuple(weights.shape[1:]), weights.device)
    u = u.clamp_(min=torch.finfo(u.dtype).tiny, max=1.0 - torch.finfo(u.dtype).eps)
    gumbel = -torch.log(-torch.log(u))
    return torch.log(weights.float()) + gumbel
