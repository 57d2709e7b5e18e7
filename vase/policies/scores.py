"""Score building blocks shared by the policies, each a direct transcription of the spec's formula."""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F

Magnitude = Literal["range", "var", "l2"]
MAGNITUDES: tuple[str, ...] = ("range", "var", "l2")

SMOOTHING_KERNEL = 5


# On a CPU the attention logits are computed a few KV heads at a time, so each thread's share of a
# chunk's logits (G * W * N floats per head) stays in cache through the scaling, softmax and mean.
ATTENTION_CHUNK_BYTES = 4 << 20


def window_attention(
    queries: torch.Tensor, keys: torch.Tensor, *, smoothing: bool, temperature: float = 1.0,
    chunk_bytes: int = ATTENTION_CHUNK_BYTES, dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Attention of a query window over the candidates, one score per KV head and candidate.

    softmax_j(q . k_j / (sqrt(d) * tau)) for each query, averaged over the window; optionally
    average-pooled along the slots (kernel 5, padding 2, stride 1) per query head; then averaged
    over the query heads of each KV head's GQA group. queries [B, Hq, W, D], keys [B, H, N, D].
    On a CPU, at most `chunk_bytes` of logits per thread exist at a time (but always one KV head's).
    The slots are in position order unless the cache runs reference-exact. `dtype` (reference-
    exact): the authors' operations in that dtype (the softmax itself in fp32, as theirs).
    """
    batch, q_heads, window, head_dim = queries.shape
    kv_heads, n = keys.shape[1], keys.shape[2]
    groups = q_heads // kv_heads
    if dtype is not None:
        return _reference_window_attention(queries, keys, smoothing=smoothing, temperature=temperature, dtype=dtype)
    scale = math.sqrt(head_dim) * temperature
    # One [G*W, D] x [D, N] product per KV head: the group's queries share its keys, which are
    # therefore never broadcast (copied) once per query head.
    q = queries.float().reshape(batch * kv_heads, groups * window, head_dim)
    k = keys.float().reshape(batch * kv_heads, n, head_dim)
    weights = q.new_empty(batch * kv_heads, groups, n)
    per_head = groups * window * n * q.element_size()
    on_cpu = q.device.type == "cpu"
    step = max(1, chunk_bytes * torch.get_num_threads() // per_head) if on_cpu else batch * kv_heads
    for first in range(0, batch * kv_heads, step):
        last = min(first + step, batch * kv_heads)
        logits = torch.matmul(q[first:last], k[first:last].transpose(-1, -2)).div_(scale)
        torch.softmax(logits, dim=-1, out=logits)
        torch.mean(logits.view(last - first, groups, window, n), dim=2, out=weights[first:last])
    if smoothing:
        weights = F.avg_pool1d(
            weights.view(batch, q_heads, n),
            kernel_size=SMOOTHING_KERNEL,
            padding=SMOOTHING_KERNEL // 2,
            stride=1,
        )
    return weights.view(batch, kv_heads, groups, n).mean(dim=2)


def value_magnitude(values: torch.Tensor, kind: str = "range", dtype: torch.dtype | None = None) -> torch.Tensor:
    """Magnitude of each value vector over head_dim: range (max - min), variance or L2 norm; in fp32
    unless a `dtype` is given (reference-exact)."""
    v = values.to(dtype or torch.float32)
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


def cur_scores(
    keys: torch.Tensor, values: torch.Tensor, projection: torch.Tensor, dtype: torch.dtype | None = None
) -> torch.Tensor:
    """CUR leverage proxy: ||k_j G||^2 * ||v_j G||^2 normalised over j. projection: [B, D, r]."""
    g = projection.to(keys.dtype).unsqueeze(1)  # [B, 1, D, r]
    k2 = (keys @ g).to(dtype or torch.float32).pow(2).sum(dim=-1)
    v2 = (values @ g).to(dtype or torch.float32).pow(2).sum(dim=-1)
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


def key_redundancy(keys: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """R-KV redundancy: softmax over candidates of each key's mean cosine similarity to the others.

    Self-similarity is zeroed before the mean (the mean runs over all N candidates, as the
    authors' code does). The sum of a key's similarities to every candidate is its dot product with
    the sum of the unit keys, so no N x N similarity matrix is formed: O(N D) instead of O(N^2 D).
    `dtype` (reference-exact): the authors' operations (the N x N matrix) in that dtype.
    """
    if dtype is not None:
        return _reference_key_redundancy(keys, dtype)
    k = keys.float()
    k = k / (k.norm(dim=-1, keepdim=True) + 1e-8)
    n = keys.shape[2]
    total = k.sum(dim=2, keepdim=True)  # [B, H, 1, D]
    to_all = torch.matmul(k, total.transpose(-1, -2)).squeeze(-1)  # [B, H, N], self included
    to_self = k.mul(k).sum(dim=-1)
    return (to_all - to_self).div(n).softmax(dim=-1)


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


# -- reference-exact: the authors' operations, in their order and dtype (ties and bf16 rounding
# then come out as theirs do; the functions above compute the same quantities faster).
def _reference_window_attention(
    queries: torch.Tensor, keys: torch.Tensor, *, smoothing: bool, temperature: float, dtype: torch.dtype
) -> torch.Tensor:
    batch, q_heads, window, head_dim = queries.shape
    kv_heads, n = keys.shape[1], keys.shape[2]
    groups = q_heads // kv_heads
    q = queries.to(dtype).view(batch, kv_heads, groups, window, head_dim)
    k = keys.to(dtype).unsqueeze(2)  # [B, H, 1, N, D]
    logits = torch.matmul(q, k.transpose(-1, -2)) / (math.sqrt(head_dim) * temperature)
    weights = torch.softmax(logits, dim=-1, dtype=torch.float32).to(dtype).mean(dim=-2)  # [B, H, G, N]
    if smoothing:
        weights = F.avg_pool1d(
            weights.reshape(batch, q_heads, n), kernel_size=SMOOTHING_KERNEL, padding=SMOOTHING_KERNEL // 2, stride=1
        ).view(batch, kv_heads, groups, n)
    return weights.mean(dim=2)


def _reference_key_redundancy(keys: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    k = keys.to(dtype)
    k = k / (k.norm(dim=-1, keepdim=True) + 1e-8)
    similarity = k @ k.transpose(-1, -2)  # [B, H, N, N]
    similarity.diagonal(dim1=-2, dim2=-1).zero_()
    return similarity.mean(dim=-2).softmax(dim=-1)
