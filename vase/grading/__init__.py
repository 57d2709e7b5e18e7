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
"""

from __future__ import annotations

from typing import Any

from vase.prompting import split_thinking

from .code_grader import grade_code, run_tests, stdout_matches, values_match
from .extract import Boxed, extract_choice, extract_code, last_boxed
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


def grade_choice(problem: Any, answer_text: str) -> Verdict:
    choices = problem.choices or []
    n = len(choices) or 4
    gold = str(problem.answer).strip()
    if not (len(gold) == 1 and gold.upper() in LETTERS):
        if gold in choices:
            gold = LETTERS[choices.index(gold)]
        else:
            return Verdict(None, None, "ungradable", f"gold answer {gold!r} is not a choice letter")
    gold = gold.upper()
    letter = extract_choice(answer_text, n_choices=n, choices=choices or None)
    if letter is None:
        return Verdict(False, None, "graded", "no answer letter found")
    return Verdict(letter == gold, letter, "graded", None if letter == gold else "wrong answer")


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
            return Verdict(False, None, "unclosed_thinking", "the thinking block was never closed")
        kind = getattr(problem, "kind", "math")
        if kind == "math":
            return grade_math(problem, answer, timeout=math_timeout, backend=math_backend)
        if kind == "choice":
            return grade_choice(problem, answer)
        if kind == "code":
            kwargs: dict[str, Any] = {"limits": code_limits}
            if code_total_seconds is not None:
                kwargs["total_seconds"] = code_total_seconds
            return grade_code(problem, answer, **kwargs)
        return Verdict(None, None, "ungradable", f"unknown problem kind {kind!r}")
    except Exception as exc:  # noqa: BLE001 - grading never raises
        return Verdict(None, None, "ungradable", f"{type(exc).__name__}: {exc}"[:500])


__all__ = [
    "Boxed",
    "GraderFailure",
    "GraderTimeout",
    "SandboxError",
    "SandboxLimits",
    "SandboxResult",
    "Verdict",
    "VerdictStatus",
    "check_math",
    "extract_choice",
    "extract_code",
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
