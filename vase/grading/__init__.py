"""Grading model outputs: ``grade(problem, output_text) -> Verdict``.

Grading is a pure function of (problem, text): re-grading stored outputs is calling it again.
It never raises: a grader failure gives ``status="ungradable"`` with the reason.

- The thinking block is split off first (:func:`vase.prompting.split_thinking`); an unclosed
  ``<think>`` gives ``status="unclosed_thinking"``, ``correct=False``.
- math: the last ``\\boxed{}`` of the answer part, compared with the gold answer by
  Math-Verify (identical normal forms short-circuit), under a wall-clock limit enforced
  without signals (see :mod:`vase.grading.math_grader`).
- choice: the chosen letter (:func:`vase.grading.extract.extract_choice`) against the gold letter.
- code: the last ```python block run against the tests in the sandbox
  (:mod:`vase.grading.sandbox`, :mod:`vase.grading.code_grader`).

Every verdict also carries the flexible score (``correct_flex``, ``extracted_flex``,
``flex_rule``): the rules of :mod:`vase.grading.flexible` (boxed, then the answer phrase, a
trailing "= ...", the last number; the last standalone letter for choices; code unchanged).
"""

from __future__ import annotations

from typing import Any

from vase.prompting import split_thinking

from .code_grader import grade_code, run_tests, stdout_matches, values_match
from .extract import Boxed, extract_choice, extract_code, last_boxed
from .flexible import FlexAnswer, extract_choice_flex, extract_math_flex, numbers_equal
from .math_grader import GraderFailure, GraderTimeout, check_math, shutdown_worker
from .sandbox import SandboxError, SandboxLimits, SandboxResult, run_python, sandbox_info
from .verdict import Verdict, VerdictStatus

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def grade_math(problem: Any, answer_text: str, *, timeout: float | None = None,
               backend: str | None = None) -> Verdict:
    box = last_boxed(answer_text)
    if not box.found:
        return Verdict(False, None, "graded", "no \\boxed{} answer")
    if not box.balanced or box.content is None:
        return Verdict(False, None, "graded", "unbalanced braces in the last \\boxed{")
    pred = box.content
    if not pred.strip():
        return Verdict(False, pred, "graded", "empty \\boxed{}")
    gold = str(problem.answer)
    if not gold.strip():
        return Verdict(None, pred, "ungradable", "problem has no gold answer")
    try:
        check = check_math(gold, pred, timeout=timeout, backend=backend)
    except GraderTimeout as exc:
        return Verdict(None, pred, "ungradable", f"grader timeout: {exc}")
    except GraderFailure as exc:
        return Verdict(None, pred, "ungradable", f"grader failure: {exc}")
    if not check.gold_parsed:
        return Verdict(None, pred, "ungradable", "gold answer could not be parsed")
    if check.correct:
        reason = None
    elif not check.pred_parsed or not check.pred_expr:
        reason = "answer could not be parsed"
    else:
        reason = "wrong answer"
    return Verdict(check.correct, pred, "graded", reason,
                   {"method": check.method, "gold_parsed": check.gold_parsed, "pred_parsed": check.pred_parsed})


def math_flex(problem: Any, answer_text: str, strict: Verdict, *, timeout: float | None = None,
              backend: str | None = None) -> tuple[bool | None, FlexAnswer]:
    """The flexible math verdict: a boxed answer keeps the strict verdict; any other extraction
    is compared by numeric equality, else Math-Verify (None when it cannot decide)."""
    found = extract_math_flex(answer_text)
    if found.rule == "boxed":
        return strict.correct, found
    if found.text is None:
        return False, found
    gold = str(problem.answer)
    if not gold.strip():
        return None, found
    same = numbers_equal(gold, found.text)
    if same is not None:
        return same, found
    try:
        check = check_math(gold, found.text, timeout=timeout, backend=backend)
    except (GraderTimeout, GraderFailure):
        return None, found
    return (check.correct if check.gold_parsed else None), found


def _gold_letter(problem: Any) -> str | None:
    choices = problem.choices or []
    gold = str(problem.answer).strip()
    if len(gold) == 1 and gold.upper() in LETTERS:
        return gold.upper()
    return LETTERS[choices.index(gold)] if gold in choices else None


def grade_choice(problem: Any, answer_text: str) -> Verdict:
    choices = problem.choices or []
    n = len(choices) or 4
    gold = _gold_letter(problem)
    if gold is None:
        return Verdict(None, None, "ungradable", f"gold answer {str(problem.answer).strip()!r} is not a choice letter")
    letter = extract_choice(answer_text, n_choices=n, choices=choices or None)
    flex = extract_choice_flex(answer_text, n_choices=n, choices=choices or None)
    flex_fields = {"correct_flex": flex.text == gold, "extracted_flex": flex.text, "flex_rule": flex.rule}
    if letter is None:
        return Verdict(False, None, "graded", "no answer letter found", **flex_fields)
    return Verdict(letter == gold, letter, "graded", None if letter == gold else "wrong answer", **flex_fields)


def grade(problem: Any, output_text: str | None, *, opened_in_prompt: bool = False,
          math_timeout: float | None = None, math_backend: str | None = None,
          code_limits: SandboxLimits | None = None, code_total_seconds: float | None = None) -> Verdict:
    """Grade one sample of ``problem``. Never raises.

    ``opened_in_prompt``: the prompt ended inside ``<think>`` (see
    :func:`vase.prompting.prompt_opens_thinking`), so the output carries only ``</think>``.
    """
    try:
        text = output_text if isinstance(output_text, str) else ("" if output_text is None else str(output_text))
        _thinking, answer, closed = split_thinking(text, opened_in_prompt=opened_in_prompt)
        if not closed:
            return Verdict(False, None, "unclosed_thinking", "the thinking block was never closed",
                           correct_flex=False)
        kind = getattr(problem, "kind", "math")
        if kind == "math":
            verdict = grade_math(problem, answer, timeout=math_timeout, backend=math_backend)
            try:
                verdict.correct_flex, found = math_flex(problem, answer, verdict, timeout=math_timeout,
                                                        backend=math_backend)
                verdict.extracted_flex, verdict.flex_rule = found.text, found.rule
            except Exception:  # noqa: BLE001 - a flexible-grader failure leaves the strict verdict
                verdict.correct_flex = None
            return verdict
        if kind == "choice":
            return grade_choice(problem, answer)
        if kind == "code":
            kwargs: dict[str, Any] = {"limits": code_limits}
            if code_total_seconds is not None:
                kwargs["total_seconds"] = code_total_seconds
            verdict = grade_code(problem, answer, **kwargs)
            verdict.correct_flex, verdict.extracted_flex, verdict.flex_rule = (
                verdict.correct, verdict.extracted, "strict")
            return verdict
        return Verdict(None, None, "ungradable", f"unknown problem kind {kind!r}")
    except Exception as exc:  # noqa: BLE001 - grading never raises
        return Verdict(None, None, "ungradable", f"{type(exc).__name__}: {exc}"[:500])


__all__ = [
    "Boxed",
    "FlexAnswer",
    "GraderFailure",
    "GraderTimeout",
    "SandboxError",
    "SandboxLimits",
    "SandboxResult",
    "Verdict",
    "VerdictStatus",
    "check_math",
    "extract_choice",
    "extract_choice_flex",
    "extract_code",
    "extract_math_flex",
    "grade",
    "grade_choice",
    "grade_code",
    "grade_math",
    "last_boxed",
    "run_python",
    "run_tests",
    "sandbox_info",
    "shutdown_worker",
    "stdout_matches",
    "values_match",
]
