"""Answer extraction from model output: boxed expressions, choice letters, code blocks."""

from __future__ import annotations

import re
from dataclasses import dataclass

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"

_BOXED_RE = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")


@dataclass(frozen=True)
class Boxed:
    """The last ``\\boxed{...}`` of a text. ``found``: a ``\\boxed`` occurs at all;
    ``balanced``: its braces close; ``content``: the inside (None unless balanced)."""

    found: bool
    balanced: bool
    content: str | None
    start: int = -1


def last_boxed(text: str | None) -> Boxed:
    """The content of the last ``\\boxed{...}`` (or ``\\fbox{...}``) in ``text``.

    Nested braces are matched; escaped braces (``\\{``) do not count. ``\\boxed 5`` (no
    braces) yields the following token. A last ``\\boxed{`` that never closes gives
    ``found=True, balanced=False`` (a truncated answer), never an earlier box.
    """
    if not text:
        return Boxed(False, False, None)
    matches = list(_BOXED_RE.finditer(text))
    if not matches:
        return Boxed(False, False, None)
    m = matches[-1]
    i = m.end()
    n = len(text)
    while i < n and text[i] in " \t":
        i += 1
    if i >= n:
        return Boxed(True, False, None, m.start())
    if text[i] != "{":
        tok = re.match(r"[^\s$]+", text[i:])
        if tok is None:
            return Boxed(True, False, None, m.start())
        return Boxed(True, True, tok.group(0).rstrip(".,"), m.start())
    depth = 0
    j = i
    while j < n:
        c = text[j]
        if c == "\\" and j + 1 < n:
            j += 2
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return Boxed(True, True, text[i + 1:j].strip(), m.start())
        j += 1
    return Boxed(True, False, None, m.start())


_CHOICE_CLEAN_RE = re.compile(r"\\(?:text|textbf|mathrm|mathbf|mbox)\s*\{([^{}]*)\}")
_ANSWER_PATTERNS = [
    re.compile(r"(?i:answer)\s*(?:(?i:is)|:|=)?\s*[:\-]?\s*(?i:option|choice)?\s*[\(\[\*]*\s*([A-Z])\s*[\)\]\*]*(?![A-Za-z])"),
    re.compile(r"(?i:correct\s+(?:option|choice)\s+is)\s*[\(\[\*]*\s*([A-Z])(?![A-Za-z])"),
    re.compile(r"(?i:option|choice)\s*[\(\[\*]*\s*([A-Z])\s*[\)\]\*]*\s*(?i:is\s+correct)"),
]


def clean_choice_text(s: str) -> str:
    s = s.strip().strip("$").strip()
    prev = None
    while prev != s:
        prev = s
        s = _CHOICE_CLEAN_RE.sub(r"\1", s).strip()
    return s


def extract_choice(text: str | None, n_choices: int = 4, choices: list[str] | None = None) -> str | None:
    """The chosen letter: the last ``\\boxed{}`` first (a letter, ``(B)``, ``B)``, ``B. ...`` or
    the exact text of a choice), then the last "answer is (X)"-style phrase, then a bare letter
    as the whole answer. Only letters among the first ``n_choices`` count."""
    if not text:
        return None
    valid = LETTERS[: max(1, min(n_choices, len(LETTERS)))]
    box = last_boxed(text)
    if box.balanced and box.content is not None:
        c = clean_choice_text(box.content)
        m = re.fullmatch(r"[\(\[]?\s*([A-Z])\s*[\)\]]?\.?", c)
        if m and m.group(1) in valid:
            return m.group(1)
        m = re.match(r"[\(\[]?([A-Z])[\)\]\.:]\s", c + " ")
        if m and m.group(1) in valid:
            return m.group(1)
        if choices:
            norm = [clean_choice_text(x).lower() for x in choices]
            if c.lower() in norm:
                return valid[norm.index(c.lower())] if norm.index(c.lower()) < len(valid) else None
    best: tuple[int, str] | None = None
    for pat in _ANSWER_PATTERNS:
        for m in pat.finditer(text):
            if m.group(1) in valid and (best is None or m.start() >= best[0]):
                best = (m.start(), m.group(1))
    if best is not None:
        return best[1]
    m = re.fullmatch(r"\s*[\(\[]?([A-Z])[\)\]]?\.?\s*", text)
    if m and m.group(1) in valid:
        return m.group(1)
    return None


_CODE_BLOCK_RE = re.compile(r"```[ \t]*([A-Za-z0-9_+\-]*)[^\n]*\n(.*?)```", re.DOTALL)


def extract_code(text: str | None) -> str | None:
    """The last fenced ```python (or ```py/```python3) block; failing that, the last fenced
    block without a language. An unterminated block does not count."""
    if not text:
        return None
    python_blocks: list[str] = []
    bare_blocks: list[str] = []
    for m in _CODE_BLOCK_RE.finditer(text):
        lang = m.group(1).lower()
        if lang in ("python", "python3", "py"):
            python_blocks.append(m.group(2))
        elif lang == "":
            bare_blocks.append(m.group(2))
    if python_blocks:
        return python_blocks[-1]
    if bare_blocks:
        return bare_blocks[-1]
    return None
