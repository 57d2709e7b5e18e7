"""Any local JSONL file as a task, through a field mapping."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from .base import PROBLEM_KINDS, Problem, Task, normalize_answer_value

JSONL_PREFIX = "jsonl:"


def read_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Rows of a JSONL file (blank lines skipped); a bad line raises ValueError naming it."""
    rows: list[dict[str, Any]] = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            line = line.strip()
            if not line:
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{lineno}: invalid JSON ({exc.msg})") from exc
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
            rows.append(row)
    return rows


class JsonlTask(Task):
    """Problems from a local JSONL file.

    ``question_field`` / ``answer_field`` name the keys holding the question and the gold
    answer; ``id_field`` (optional) the problem id (the 0-based line index when absent or
    None); ``choices_field`` (optional, for ``kind="choice"``) a list of choice strings, in
    which case ``answer`` may be a letter or the text of the correct choice. Each
    ``question_field``/``answer_field`` may list alternatives separated by ``|``
    (``"problem|question"``): the first key present in a row is used.
    """

    offline_default = True

    def __init__(
        self,
        path: str | os.PathLike[str],
        question_field: str = "problem",
        answer_field: str = "answer",
        id_field: str | None = "id",
        kind: str = "math",
        *,
        choices_field: str | None = None,
        tests_field: str | None = None,
        name: str | None = None,
    ) -> None:
        if kind not in PROBLEM_KINDS:
            raise ValueError(f"kind must be one of {PROBLEM_KINDS}, got {kind!r}")
        self.path = Path(path)
        self.question_field = question_field
        self.answer_field = answer_field
        self.id_field = id_field or None
        self.kind = kind
        self.choices_field = choices_field
        self.tests_field = tests_field
        self.name = name or f"{JSONL_PREFIX}{self.path}"
        self._cache: list[Problem] | None = None

    # -- spec parsing -------------------------------------------------------------------------
    @classmethod
    def from_spec(cls, spec: str) -> JsonlTask:
        """Parse ``jsonl:/path/file.jsonl?question=problem&answer=answer&id=id&kind=math``.

        Query keys: ``question``, ``answer``, ``id``, ``kind``, ``choices``, ``tests``.
        Unknown keys raise ValueError.
        """
        if not spec.startswith(JSONL_PREFIX):
            raise ValueError(f"not a jsonl task spec (must start with {JSONL_PREFIX!r}): {spec!r}")
        body = spec[len(JSONL_PREFIX):]
        path, _, query = body.partition("?")
        if not path:
            raise ValueError(f"jsonl task spec has no path: {spec!r}")
        params = {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}
        allowed = {"question", "answer", "id", "kind", "choices", "tests"}
        unknown = sorted(set(params) - allowed)
        if unknown:
            raise ValueError(
                f"unknown jsonl task option(s) {unknown} in {spec!r}; allowed: {sorted(allowed)}"
            )
        return cls(
            path,
            question_field=params.get("question") or "problem",
            answer_field=params.get("answer") or "answer",
            id_field=params.get("id", "id") or None,
            kind=params.get("kind") or "math",
            choices_field=params.get("choices") or None,
            tests_field=params.get("tests") or None,
            name=spec,
        )

    # -- loading ------------------------------------------------------------------------------
    @staticmethod
    def _pick(row: dict[str, Any], field_spec: str) -> tuple[bool, Any]:
        for key in field_spec.split("|"):
            if key in row:
                return True, row[key]
        return False, None

    def _load_all(self, seed: int) -> list[Problem]:
        if self._cache is None:
            self._cache = self._read()
        return self._cache

    def _read(self) -> list[Problem]:
        if not self.path.is_file():
            raise ValueError(f"task {self.name!r}: JSONL file not found: {self.path}")
        rows = read_jsonl(self.path)
        problems: list[Problem] = []
        for idx, row in enumerate(rows):
            where = f"task {self.name!r}: {self.path} line {idx + 1}"
            ok, question = self._pick(row, self.question_field)
            if not ok:
                raise ValueError(
                    f"{where}: missing question field {self.question_field!r} "
                    f"(row has fields {sorted(row)})"
                )
            ok, answer = self._pick(row, self.answer_field)
            if not ok and self.kind != "code":
                raise ValueError(
                    f"{where}: missing answer field {self.answer_field!r} (row has fields {sorted(row)})"
                )
            if self.id_field is not None and self.id_field in row:
                pid = str(row[self.id_field])
            elif self.id_field is not None and self.id_field != "id":
                raise ValueError(f"{where}: missing id field {self.id_field!r} (row has fields {sorted(row)})")
            else:
                pid = str(idx)
            choices = None
            if self.choices_field:
                if self.choices_field not in row:
                    raise ValueError(f"{where}: missing choices field {self.choices_field!r}")
                choices = [str(c) for c in row[self.choices_field]]
            tests = None
            if self.tests_field:
                if self.tests_field not in row:
                    raise ValueError(f"{where}: missing tests field {self.tests_field!r}")
                tests = row[self.tests_field]
                if isinstance(tests, str):
                    tests = json.loads(tests)
            gold = normalize_answer_value(answer)
            if choices is not None and gold and not (len(gold) == 1 and gold.isalpha()):
                if gold in choices:
                    gold = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"[choices.index(gold)]
            used = {*self.question_field.split("|"), *self.answer_field.split("|")}
            meta = {k: v for k, v in row.items() if k not in used and k != self.id_field}
            meta = {k: v for k, v in meta.items() if isinstance(v, (str, int, float, bool)) or v is None}
            problems.append(
                Problem(
                    id=pid,
                    prompt=str(question),
                    answer=gold,
                    kind=self.kind,  # type: ignore[arg-type]
                    choices=choices,
                    tests=tests,
                    metadata={"source": str(self.path), **meta},
                )
            )
        return problems

    def size(self) -> int | None:
        return len(self._load_all(0))
