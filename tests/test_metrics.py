"""pass@k, mean pass@1 with its standard error, the repetition-loop detector and sparsity."""

from __future__ import annotations

import math
import random
import time

import numpy as np
import pytest

from vase.metrics import (
    LoopInfo,
    detect_repetition_loop,
    mean_pass_at_1,
    pass_at_k,
    pass_at_k_mean,
    sparsity,
)

# -- pass@k ----------------------------------------------------------------------------------------


def test_pass_at_k_hand_values():
    assert pass_at_k(5, 2, 1) == pytest.approx(0.4)
    assert pass_at_k(5, 2, 2) == pytest.approx(1 - 3 / 10)  # 1 - C(3,2)/C(5,2)
    assert pass_at_k(10, 3, 5) == pytest.approx(1 - 21 / 252)  # 1 - C(7,5)/C(10,5)
    assert pass_at_k(4, 0, 2) == 0.0
    assert pass_at_k(4, 4, 1) == 1.0
    assert pass_at_k(4, 3, 2) == 1.0  # n - c < k


def test_pass_at_k_matches_combinatorial_formula():
    for n in range(1, 13):
        for c in range(n + 1):
            for k in range(1, n + 1):
                expect = 1.0 - math.comb(n - c, k) / math.comb(n, k)
                assert pass_at_k(n, c, k) == pytest.approx(expect, abs=1e-12)


@pytest.mark.parametrize("args", [(0, 0, 1), (3, 4, 1), (3, -1, 1), (3, 1, 0), (3, 1, 4)])
def test_pass_at_k_rejects_bad_input(args):
    with pytest.raises(ValueError):
        pass_at_k(*args)


def test_mean_pass_at_1_and_standard_error_by_hand():
    per_problem = [[True, False], [True, True], [False, False, False, True]]
    mean, se = mean_pass_at_1(per_problem)
    # per-problem pass@1: 0.5, 1.0, 0.25 -> mean 7/12
    assert mean == pytest.approx(7 / 12)
    devs = [0.5 - 7 / 12, 1.0 - 7 / 12, 0.25 - 7 / 12]
    s = math.sqrt(sum(d * d for d in devs) / 2)  # ddof = 1
    assert se == pytest.approx(s / math.sqrt(3))
    assert se == pytest.approx(0.2204793, abs=1e-6)
    assert se == pytest.approx(np.std([0.5, 1.0, 0.25], ddof=1) / math.sqrt(3))


def test_mean_pass_at_1_edge_cases():
    assert mean_pass_at_1([[True, False, True, True]]) == (0.75, 0.0)  # one problem: SE 0
    assert mean_pass_at_1([[True], [True]]) == (1.0, 0.0)
    with pytest.raises(ValueError):
        mean_pass_at_1([])
    with pytest.raises(ValueError):
        mean_pass_at_1([[True], []])
    with pytest.raises(ValueError):
        mean_pass_at_1([[True, None]])  # type: ignore[list-item]


def test_pass_at_k_mean():
    per_problem = [[True, False, False, False], [True, True, False, False]]
    m1, se1 = pass_at_k_mean(per_problem, 1)
    assert (m1, se1) == pytest.approx(mean_pass_at_1(per_problem))
    m2, se2 = pass_at_k_mean(per_problem, 2)
    a, b = 1 - 3 / 6, 1 - 1 / 6  # 1 - C(3,2)/C(4,2), 1 - C(2,2)/C(4,2)
    assert m2 == pytest.approx((a + b) / 2)
    assert se2 == pytest.approx(abs(a - b) / math.sqrt(2) / math.sqrt(2))
    with pytest.raises(ValueError):
        pass_at_k_mean(per_problem, 5)


# -- repetition loops ------------------------------------------------------------------------------

NORMAL = (
    "We want the number of ordered pairs. First note that the product is even, so one of the factors "
    "must be even. Case 1: the first factor is even; there are 12 choices and for each of them the "
    "second factor is free, which gives 12 * 25 = 300 pairs. Case 2: the first factor is odd; then the "
    "second must be even, giving 13 * 12 = 156 pairs. Adding, 300 + 156 = 456. Let me double check the "
    "count of even numbers between 1 and 25: they are 2, 4, ..., 24, twelve of them. So the total is "
    "456 and the answer is \\boxed{456}."
)
LOOP_UNIT = "the answer is 5. Let me check again. "


def normal_text(n_words: int, seed: int = 0) -> str:
    rng = random.Random(seed)
    words = ("the of and to in is we that for it as with be on not this by are or from at which "
             "value sum factor prime number case then so therefore equation root square").split()
    out = []
    for i in range(n_words):
        out.append(rng.choice(words))
        if i % 13 == 12:
            out.append(f"{rng.randint(0, 999)}.")
    return " ".join(out)


def test_flags_the_papers_failure_mode():
    text = NORMAL + " " + LOOP_UNIT * 40
    info = detect_repetition_loop(text)
    assert isinstance(info, LoopInfo)
    assert info.period == len(LOOP_UNIT)
    assert info.span == LOOP_UNIT
    # the periodic region starts where text[j] == text[j + period] holds up to the end: the
    # ". " closing NORMAL matches the end of the unit, so it begins two characters early
    first = len(text) - info.period
    while first > 0 and text[first - 1] == text[first - 1 + info.period]:
        first -= 1
    assert first == len(NORMAL) - 1
    assert info.start == first
    assert info.repeats == 40
    assert info.coverage > 0.7 and info.match_rate == 1.0


def test_loop_span_is_a_rotation_when_text_stops_mid_unit():
    text = NORMAL + " " + LOOP_UNIT * 30 + LOOP_UNIT[:10]
    info = detect_repetition_loop(text)
    assert info is not None and info.period == len(LOOP_UNIT)
    assert info.span in (LOOP_UNIT * 2)  # one period, possibly rotated


def test_does_not_flag_normal_text():
    assert detect_repetition_loop(NORMAL) is None
    assert detect_repetition_loop(normal_text(6000)) is None
    # a short repeated closing phrase is not a loop dominating the tail
    assert detect_repetition_loop(normal_text(3000) + " Done. Done. Done.") is None
    # counting upwards repeats a pattern imperfectly: not a loop
    assert detect_repetition_loop(", ".join(str(i) for i in range(1, 2000))) is None
    assert detect_repetition_loop("") is None and detect_repetition_loop("ha ha ha ha") is None


def test_loop_in_the_middle_is_not_flagged():
    text = NORMAL + LOOP_UNIT * 20 + normal_text(2000, seed=5)
    assert detect_repetition_loop(text) is None


def test_nearly_periodic_loop_is_flagged_with_tolerance():
    rng = random.Random(1)
    chunks = []
    for _ in range(60):
        chunks.append("Wait, let me recompute: 3 * 4 = 12, so the total is 12. ")
    text = normal_text(1500) + "".join(chunks)
    chars = list(text)
    tail_start = len(text) - 60 * len(chunks[0])
    for _ in range(20):  # sprinkle a few typos into the loop
        i = rng.randrange(tail_start, len(text))
        chars[i] = "#"
    info = detect_repetition_loop("".join(chars))
    assert info is not None and info.period == len(chunks[0])
    assert detect_repetition_loop("".join(chars), min_match=1.0) is None


def test_token_ids_and_arrays():
    rng = random.Random(0)
    prefix = [rng.randrange(32000) for _ in range(5000)]
    unit = [rng.randrange(32000) for _ in range(23)]
    ids = prefix + unit * 100
    info = detect_repetition_loop(ids)
    assert info is not None and info.period == 23 and info.start == 5000 and info.repeats == 100
    assert info.span == unit
    assert detect_repetition_loop(np.array(ids)).start == 5000
    assert detect_repetition_loop(prefix) is None
    # a degenerate one-token loop is reported through a multiple >= min_span
    deg = detect_repetition_loop(prefix + [7] * 3000)
    assert deg is not None and deg.period == 2 and deg.start == 5000


def test_fast_on_32k_tokens():
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 150000, size=32768).tolist()
    t = time.perf_counter()
    assert detect_repetition_loop(ids) is None
    assert time.perf_counter() - t < 2.0
    looped = ids[:20000] + ids[100:400] * 43
    t = time.perf_counter()
    info = detect_repetition_loop(looped)
    assert time.perf_counter() - t < 2.0
    assert info is not None and info.period == 300 and info.start == 20000
    long_text = normal_text(25000)  # ~150k characters
    t = time.perf_counter()
    assert detect_repetition_loop(long_text) is None
    assert time.perf_counter() - t < 3.0


def test_loop_detector_argument_checks():
    with pytest.raises(ValueError):
        detect_repetition_loop("abc", min_span=0)
    with pytest.raises(ValueError):
        detect_repetition_loop("abc", tail_fraction=0)
    with pytest.raises(ValueError):
        detect_repetition_loop([[1, 2], [3, 4]])
    with pytest.raises(TypeError):
        detect_repetition_loop([0.5, 1.5])


# -- sparsity --------------------------------------------------------------------------------------

def test_sparsity():
    assert sparsity(4096, 16384) == pytest.approx(0.25)
    assert sparsity(100, 100) == 1.0
    assert sparsity(0, 0) == 1.0
    with pytest.raises(ValueError):
        sparsity(10, 5)
    with pytest.raises(ValueError):
        sparsity(-1, 5)
