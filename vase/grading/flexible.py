"""Flexible answer extraction: the field's second score next to the strict one.

lm-evaluation-harness reports ``strict-match`` (the required format) and ``flexible-extract``
(the last number) side by side; this module is the flexible half. It reads only the answer part
of an output (after the thinking block) and tries these rules in order, the first that finds
something wins; the rule's name is recorded as ``flex_rule``:

math
    1. ``boxed``: the content of the last balanced, non-empty ``\\boxed{}`` (the strict answer).
    2. ``answer_phrase``: the span after the last "answer is", "answer:" or "answer =" (also
       "final answer is ..."), up to the end of its line or sentence; its leading number if it
       starts with one, else the whole span when short (a LaTeX expression), else its first number.
    3. ``equals``: the right-hand side of a trailing "= ..." (only punctuation, ``$`` or ``*``
       may follow it before the end of the text), when it is short, holds a digit and no word
       (LaTeX commands aside).
    4. ``last_number``: the last number in the answer text (thousands commas removed).
    The extracted text is compared with the gold answer by plain numeric equality when both are
    numbers, else by Math-Verify (:func:`vase.grading.math_grader.check_math`).
choice
    1. ``strict``: what the strict rule finds (:func:`extract_choice`: the boxed letter, then an
       "answer is (X)" phrase).
    2. ``letter``: the last standalone letter among the task's choices ("(B)", "B.", "B)", a
       bare "B"); a capital "A" followed by a lowercase word is the article, not a choice.
code
    ``strict``: the strict verdict (a program either passes its tests or not).

Nothing found gives ``correct_flex=False`` with no rule. Extraction never raises (it only runs
linear regular expressions over the text); :func:`vase.grading.grade` keeps the never-raises
guarantee for the comparison step.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from .extract import LETTERS, extract_choice, last_boxed

#: Longest span kept as a whole (a LaTeX expression) by the ``answer_phrase`` and ``equals`` rules.
MAX_EXPRESSION_CHARS = 40

_NUMBER_RE = re.compile(r"(?<![\w.])-?\d+(?:,\d{3})*(?:\.\d+)?(?:/\d+)?(?:[eE][-+]?\d+(?![\w]))?")
_ANSWER_PHRASE_RE = re.compile(r"(?i:\banswer)\s*(?:(?i:is)\s*:?|:|=)[ \t]*")
_TRAILING_EQUALS_RE = re.compile(r"=[ \t]*([^=\n]{1,200}?)[\s.,;:!$*]*\Z")
_SENTENCE_END_RE = re.compile(r"\n|\.(?:\s|\Z)|;|,\s|\s(?:because|since|which|so)\s")
_LATEX_COMMAND_RE = re.compile(r"\\[A-Za-z]+")
_WORD_RE = re.compile(r"[A-Za-z]{2,}")
_DECORATION = " \t$*_`'\"()[]"
_LETTER_RE = re.compile(r"(?<![A-Za-z0-9])\(?([A-Z])\)?(?![A-Za-z0-9'])")


@dataclass(frozen=True)
class FlexAnswer:
    """What the flexible rules took from an answer text: ``text`` and the ``rule`` that found it
    (both None when nothing was found)."""

    text: str | None
    rule: str | None


NOTHING = FlexAnswer(None, None)


def _clean(span: str) -> str:
    span = span.strip().strip(_DECORATION).strip()
    return span.rstrip(".").strip()


def _number_text(s: str) -> str:
    return s.replace(",", "")


def last_number(text: str | None) -> str | None:
    """The last number in ``text`` ("-12", "4,371" -> "4371", "0.5"), or None."""
    if not text:
        return None
    found = None
    for m in _NUMBER_RE.finditer(text):
        found = m.group(0)
    return _number_text(found) if found is not None else None


def _span_value(span: str) -> str | None:
    span = _clean(span)
    if not span:
        return None
    head = _NUMBER_RE.match(span)
    if head is not None:
        return _number_text(head.group(0))
    if len(span) <= MAX_EXPRESSION_CHARS:
        return span
    first = _NUMBER_RE.search(span)
    return _number_text(first.group(0)) if first else None


def answer_phrase(text: str | None) -> str | None:
    """The value after the last "answer is"/"answer:"/"answer =" phrase, or None."""
    if not text:
        return None
    last = None
    for m in _ANSWER_PHRASE_RE.finditer(text):
        last = m
    if last is None:
        return None
    rest = text[last.end(): last.end() + 400]
    end = _SENTENCE_END_RE.search(rest)
    return _span_value(rest[: end.start()] if end else rest)


def trailing_equals(text: str | None) -> str | None:
    """The right-hand side of a "= ..." that ends the text, when short and holding a digit."""
    if not text:
        return None
    m = _TRAILING_EQUALS_RE.search(text[-400:])
    if m is None:
        return None
    value = _clean(m.group(1))
    if not value or len(value) > MAX_EXPRESSION_CHARS or not any(c.isdigit() for c in value):
        return None
    if _WORD_RE.search(_LATEX_COMMAND_RE.sub("", value)):
        return None  # prose after the "=", not a value
    head = _NUMBER_RE.fullmatch(value)
    return _number_text(head.group(0)) if head else value


def extract_math_flex(answer_text: str | None) -> FlexAnswer:
    """The flexible math answer of an answer text (rules in the module docstring)."""
    if not answer_text:
        return NOTHING
    box = last_boxed(answer_text)
    if box.balanced and box.content and box.content.strip():
        return FlexAnswer(box.content, "boxed")
    for rule, finder in (("answer_phrase", answer_phrase), ("equals", trailing_equals),
                         ("last_number", last_number)):
        value = finder(answer_text)
        if value:
            return FlexAnswer(value, rule)
    return NOTHING


def _is_article(text: str, m: re.Match[str]) -> bool:
    return m.group(0) == "A" and re.match(r" [a-z]", text[m.end(): m.end() + 2]) is not None


def extract_choice_flex(answer_text: str | None, n_choices: int = 4,
                        choices: list[str] | None = None) -> FlexAnswer:
    """The flexible choice letter of an answer text (rules in the module docstring)."""
    if not answer_text:
        return NOTHING
    valid = LETTERS[: max(1, min(n_choices, len(LETTERS)))]
    strict = extract_choice(answer_text, n_choices=n_choices, choices=choices)
    if strict is not None:
        return FlexAnswer(strict, "strict")
    found = None
    for m in _LETTER_RE.finditer(answer_text):
        if m.group(1) in valid and not _is_article(answer_text, m):
            found = m.group(1)
    return FlexAnswer(found, "letter") if found else NOTHING


def as_number(s: str) -> float | None:
    """``s`` as a finite float when it is a plain number (commas allowed), else None."""
    if not _NUMBER_RE.fullmatch(s.strip()):
        return None
    try:
        x = float(_number_text(s.strip()))
    except ValueError:
        return None
    return x if math.isfinite(x) else None


def numbers_equal(gold: str, pred: str) -> bool | None:
    """Plain numeric equality when both are numbers (None when either is not)."""
    g, p = as_number(gold), as_number(pred)
    if g is None or p is None:
        return None
    return math.isclose(g, p, rel_tol=1e-9, abs_tol=1e-12)
