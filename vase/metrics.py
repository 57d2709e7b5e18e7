"""Pure metric functions: pass@k, mean pass@1 with its standard error, repetition-loop
detection (the paper's failure mode under bad eviction), and KV sparsity."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

__all__ = [
    "Counts",
    "LoopInfo",
    "correct_counts",
    "detect_repetition_loop",
    "mean_and_se",
    "mean_pass_at_1",
    "mean_pass_at_1_of_counts",
    "pass_at_k",
    "pass_at_k_curve",
    "pass_at_k_mean",
    "pass_at_k_mean_of_counts",
    "reported_ks",
    "sparsity",
]


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k estimator (Chen et al., 2021) for ``c`` correct out of ``n`` samples:
    ``1 - C(n - c, k) / C(n, k)``, computed as ``1 - prod_{i=n-c+1}^{n} (1 - k / i)``."""
    for name, v in (("n", n), ("c", c), ("k", k)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise TypeError(f"{name} must be an integer")
    if n < 1:
        raise ValueError("n must be >= 1")
    if not 0 <= c <= n:
        raise ValueError("need 0 <= c <= n")
    if not 1 <= k <= n:
        raise ValueError("need 1 <= k <= n")
    if n - c < k:
        return 1.0
    prod = 1.0
    for i in range(n - c + 1, n + 1):
        prod *= 1.0 - k / i
    return 1.0 - prod


def mean_and_se(values: Sequence[float]) -> tuple[float, float]:
    """Mean of ``values`` and its standard error: the sample standard deviation (``ddof=1``)
    over ``sqrt(len(values))``; 0 for one value.

    Empty input raises ValueError: an estimate over no problems does not exist. This is the one
    rule for every estimate here; a caller reporting "nothing graded yet" checks for it first
    (the store's results report None then)."""
    m = len(values)
    if m == 0:
        raise ValueError("need at least one problem")
    mean = math.fsum(values) / m
    if m == 1:
        return mean, 0.0
    var = math.fsum((v - mean) ** 2 for v in values) / (m - 1)
    return mean, math.sqrt(var) / math.sqrt(m)


#: Per problem: (samples graded n, of them correct c).
Counts = Sequence[tuple[int, int]]


def correct_counts(per_problem_correct: Sequence[Sequence[bool]]) -> list[tuple[int, int]]:
    """(n, c) per problem from its samples' verdicts. Problems without samples and ``None``
    verdicts (ungradable samples) raise: decide how to count them first."""
    counts = []
    for i, samples in enumerate(per_problem_correct):
        if len(samples) == 0:
            raise ValueError(f"problem {i} has no samples")
        if any(s is None for s in samples):
            raise ValueError(f"problem {i} has ungraded (None) samples")
        counts.append((len(samples), sum(1 for s in samples if s)))
    return counts


def mean_pass_at_1_of_counts(counts: Counts) -> tuple[float, float]:
    """Mean pass@1 over problems, ``p_i = c_i / n_i``, and its standard error (:func:`mean_and_se`)."""
    return mean_and_se([c / n for n, c in counts])


def pass_at_k_mean_of_counts(counts: Counts, k: int) -> tuple[float, float]:
    """Mean over problems of the unbiased pass@k (each problem needs ``k <= n_i``) and its SE."""
    vals = []
    for i, (n, c) in enumerate(counts):
        if k > n:
            raise ValueError(f"problem {i} has {n} samples, fewer than k={k}")
        vals.append(pass_at_k(n, c, k))
    return mean_and_se(vals)


def reported_ks(min_samples: int) -> list[int]:
    """The k of the pass@k a result reports: 1, 2, 4, 8, ... up to the fewest samples any problem
    has, and that number itself."""
    if min_samples < 1:
        return []
    ks, k = [], 1
    while k <= min_samples:
        ks.append(k)
        k *= 2
    if ks[-1] != min_samples:
        ks.append(min_samples)
    return ks


def pass_at_k_curve(counts: Counts) -> dict[int, float]:
    """{k: mean pass@k over problems} for every k of :func:`reported_ks`."""
    if len(counts) == 0:
        raise ValueError("need at least one problem")
    return {k: pass_at_k_mean_of_counts(counts, k)[0] for k in reported_ks(min(n for n, _ in counts))}


def mean_pass_at_1(per_problem_correct: Sequence[Sequence[bool]]) -> tuple[float, float]:
    """Mean pass@1 over problems and its standard error.

    For problem ``i`` with ``n_i`` samples of which ``c_i`` are correct, ``p_i = c_i / n_i``
    (the pass@1 estimate, i.e. the accuracy averaged over its samples). Returns
    ``(mean_i p_i, SE)`` with ``SE = s / sqrt(m)``, where ``m`` is the number of problems and
    ``s`` the sample standard deviation of the ``p_i`` (``ddof=1``); ``SE = 0`` for one
    problem. Problems may have different numbers of samples; a problem with none raises.
    ``None`` entries (ungradable samples) are not allowed here: decide how to count them first.
    """
    return mean_pass_at_1_of_counts(correct_counts(per_problem_correct))


def pass_at_k_mean(per_problem_correct: Sequence[Sequence[bool]], k: int) -> tuple[float, float]:
    """Mean over problems of the unbiased pass@k (each problem needs ``k <= n_i``) and its
    standard error (sample std, ddof=1, over problems / sqrt(#problems); 0 for one problem)."""
    return pass_at_k_mean_of_counts(correct_counts(per_problem_correct), k)


# -- repetition loops --------------------------------------------------------------------------

@dataclass(frozen=True)
class LoopInfo:
    """A repeating span at the end of a sequence.

    ``span``: one period of the loop (a str for text, a list of ids for token ids) as it last
    occurs; ``start``: index where the looping region begins (characters for text, tokens for
    ids); ``period``: the span length; ``repeats``: how many whole periods the region holds;
    ``coverage``: the region's share of the whole sequence; ``match_rate``: fraction of the
    region's positions equal to the element one period earlier."""

    span: str | list[int]
    start: int
    period: int
    repeats: int
    coverage: float
    match_rate: float


def _as_array(seq: str | Sequence[int] | np.ndarray) -> tuple[np.ndarray, bool]:
    if isinstance(seq, str):
        return np.frombuffer(seq.encode("utf-32-le"), dtype=np.uint32), True
    if hasattr(seq, "detach"):  # a torch tensor
        seq = seq.detach().cpu().numpy()  # type: ignore[union-attr]
    arr = np.asarray(seq)
    if arr.ndim != 1:
        raise ValueError("expected a 1-D sequence of token ids")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise TypeError("token ids must be integers")
    return arr.astype(np.int64, copy=False), False


def detect_repetition_loop(
    seq: str | Sequence[int],
    *,
    min_span: int | None = None,
    min_repeats: int = 4,
    tail_fraction: float = 0.2,
    max_period: int | None = None,
    min_match: float = 0.95,
    min_length: int | None = None,
) -> LoopInfo | None:
    """Flag a sequence whose TAIL is dominated by a repeating span.

    Works on text (character units) and on token id lists/arrays (token units). For each
    candidate period ``p`` in ``[min_span, max_period]`` (smallest first) the last
    ``max(tail_fraction * len, min_repeats * p)`` positions are compared with the positions
    ``p`` earlier; the first ``p`` whose match rate reaches ``min_match`` wins. The looping
    region is then extended backwards as far as the match rate over the region stays at
    least ``min_match``. A loop is reported when the region holds at least ``min_repeats``
    periods and covers at least ``tail_fraction`` of the sequence.

    Defaults: text ``min_span=8`` chars, ``max_period=2048``; ids ``min_span=2`` tokens,
    ``max_period=512``. A loop whose true period is shorter than ``min_span`` is reported with
    its smallest multiple ``>= min_span``. Sequences shorter than ``min_length`` (default 64
    characters / 32 tokens) or than ``min_span * min_repeats`` are never flagged. Cost is
    ``O(len_tail * max_period)`` vectorised numpy comparisons (a 32k-token output with
    ``max_period=512`` takes milliseconds).
    """
    arr, is_text = _as_array(seq)
    n = int(arr.size)
    if min_span is None:
        min_span = 8 if is_text else 2
    if max_period is None:
        max_period = 2048 if is_text else 512
    if min_length is None:
        min_length = 64 if is_text else 32
    if min_span < 1 or max_period < min_span:
        raise ValueError("need 1 <= min_span <= max_period")
    if min_repeats < 2:
        raise ValueError("min_repeats must be >= 2")
    if not 0.0 < tail_fraction <= 1.0:
        raise ValueError("tail_fraction must be in (0, 1]")
    if not 0.0 < min_match <= 1.0:
        raise ValueError("min_match must be in (0, 1]")
    if n < max(min_length, min_span * min_repeats):
        return None

    tail = max(1, math.ceil(tail_fraction * n))
    max_p = min(max_period, n // min_repeats)
    for p in range(min_span, max_p + 1):
        window = max(tail, min_repeats * p) - p  # compared positions: the window minus one period
        if window <= 0 or window + p > n:
            continue
        a = arr[n - window:]
        b = arr[n - window - p: n - p]
        rate = float(np.count_nonzero(a == b)) / window
        if rate < min_match:
            continue
        # Extend the region backwards: eq[j] says arr[j + p] == arr[j].
        eq = arr[p:] == arr[:-p]
        m_eq = eq.size
        mism = (~eq)[::-1].cumsum()  # mismatches among the last j+1 compared positions
        lengths = np.arange(1, m_eq + 1)
        good = np.nonzero(mism <= (1.0 - min_match) * lengths + 1e-9)[0]
        if good.size == 0:
            continue
        j0 = m_eq - (int(good[-1]) + 1)
        # Trim a ragged front: the region starts at the first period-long window that matches.
        cs = np.concatenate(([0], np.cumsum(eq, dtype=np.int64)))
        need = min_match * p - 1e-9
        starts = np.arange(j0, m_eq - p + 1)
        if starts.size:
            ok = (cs[starts + p] - cs[starts]) >= need
            hit = np.nonzero(ok)[0]
            if hit.size:
                j0 = int(starts[hit[0]])
        while j0 < m_eq and not eq[j0]:
            j0 += 1
        start = j0  # the first period is arr[j0 : j0 + p]
        region = n - start
        repeats = region // p
        coverage = region / n
        if repeats < min_repeats or coverage + 1e-12 < tail_fraction:
            continue
        rate_region = float(cs[m_eq] - cs[j0]) / max(1, m_eq - j0)
        last = arr[n - p:]
        span: str | list[int]
        if is_text:
            span = last.astype("<u4").tobytes().decode("utf-32-le")
        else:
            span = [int(x) for x in last]
        return LoopInfo(span=span, start=int(start), period=int(p), repeats=int(repeats),
                        coverage=float(coverage), match_rate=rate_region)
    return None


def sparsity(kept: int | float, logical_length: int | float) -> float:
    """Achieved sparsity as this project reports it: the share of the logical sequence the cache
    still holds, ``kept / logical_length`` (1.0 when nothing was seen). ``kept`` may not exceed
    ``logical_length``."""
    if kept < 0 or logical_length < 0:
        raise ValueError("kept and logical_length must be >= 0")
    if logical_length == 0:
        if kept:
            raise ValueError("kept > logical_length")
        return 1.0
    if kept > logical_length:
        raise ValueError(f"kept ({kept}) > logical_length ({logical_length})")
    return float(kept) / float(logical_length)
