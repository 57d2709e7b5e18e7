"""The outcome of grading one sample."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

VerdictStatus = Literal["graded", "ungradable", "unclosed_thinking"]


@dataclass
class Verdict:
    """``correct``: True/False when graded (an unclosed thinking block is False), None when the
    grader could not decide (``status="ungradable"``; ``reason`` says why). ``extracted`` is the
    answer taken from the output (boxed content, letter or code), if any.

    The flexible verdict (:mod:`vase.grading.flexible`) sits beside the strict one:
    ``correct_flex`` (None when undecidable), ``extracted_flex`` and ``flex_rule``, the rule
    that extracted it ("boxed", "answer_phrase", "equals", "last_number", "letter", "strict";
    None when nothing was found)."""

    correct: bool | None
    extracted: str | None
    status: VerdictStatus
    reason: str | None = None
    details: dict[str, Any] | None = field(default=None, compare=False)
    correct_flex: bool | None = None
    extracted_flex: str | None = None
    flex_rule: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
