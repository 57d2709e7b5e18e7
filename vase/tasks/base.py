"""The problem record and the task interface shared by every task source."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

ProblemKind = Literal["math", "choice", "code"]
PROBLEM_KINDS: tuple[str, ...] = ("math", "choice", "code")


@dataclass
class Problem:
    """One benchmark problem.

    ``prompt`` is the question text only; the chat formatting and the answer instruction
    are added by :mod:`vase.prompting`. ``answer`` is the gold answer as a string (a LaTeX
    expression or integer for math, the gold letter for choice problems, empty for code).
    ``choices`` is set for choice problems (in presentation order), ``tests`` for code
    problems (a list of ``{"input", "output", "testtype"}`` dicts, see
    :mod:`vase.grading.code_grader`).
    """

    id: str
    prompt: str
    answer: str
    kind: ProblemKind = "math"
    choices: list[str] | None = None
    tests: list[dict[str, Any]] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in PROBLEM_KINDS:
            raise ValueError(f"Problem.kind must be one of {PROBLEM_KINDS}, got {self.kind!r}")
        self.id = str(self.id)
        self.answer = "" if self.answer is None else str(self.answer)

    @property
    def question(self) -> str:
        """Alias of :attr:`prompt` (the question text)."""
        return self.prompt

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Problem:
        return cls(
            id=data["id"],
            prompt=data["prompt"],
            answer=data.get("answer", ""),
            kind=data.get("kind", "math"),
            choices=data.get("choices"),
            tests=data.get("tests"),
            metadata=dict(data.get("metadata") or {}),
        )


def problems_fingerprint(problems: list[Problem]) -> str:
    """sha256 (hex) of the canonical JSON of ``problems`` (order matters)."""
    h = hashlib.sha256()
    for p in problems:
        h.update(json.dumps(p.to_dict(), sort_keys=True, ensure_ascii=False, default=str).encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()


@runtime_checkable
class TaskProtocol(Protocol):
    name: str

    @property
    def offline(self) -> bool: ...

    def size(self) -> int | None: ...

    def load(self, limit: int | None = None, seed: int = 0) -> list[Problem]: ...

    def fingerprint(self, limit: int | None = None, seed: int = 0) -> str: ...


class Task:
    """Base class: subclasses implement :meth:`_load_all` (every problem, in a fixed order).

    ``load(limit, seed)`` returns the first ``limit`` problems of ``_load_all(seed)``; the seed
    only matters for tasks whose content depends on it (generated tasks, shuffled choices).
    """

    name: str = ""
    description: str = ""
    offline_default: bool = True

    @property
    def offline(self) -> bool:
        """True when the task can be loaded without network access."""
        return self.offline_default

    def size(self) -> int | None:
        """Number of problems (``None`` when unknown before loading)."""
        return len(self._load_all(0))

    def _load_all(self, seed: int) -> list[Problem]:  # pragma: no cover - abstract
        raise NotImplementedError

    def load(self, limit: int | None = None, seed: int = 0) -> list[Problem]:
        if limit is not None:
            if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
                raise ValueError(f"limit must be a non-negative integer or None, got {limit!r}")
        problems = self._load_all(int(seed))
        return list(problems if limit is None else problems[:limit])

    def count(self, limit: int | None = None, seed: int = 0) -> int:
        """``len(load(limit, seed))``; subclasses that know it without loading say so."""
        return len(self.load(limit=limit, seed=seed))

    def head(self, n: int, seed: int = 0) -> list[Problem]:
        """The first ``n`` problems (generated tasks make only those)."""
        return self.load(limit=n, seed=seed)

    def fingerprint(self, limit: int | None = None, seed: int = 0) -> str:
        """sha256 of the problems ``load(limit, seed)`` returns."""
        return problems_fingerprint(self.load(limit=limit, seed=seed))

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "offline": self.offline, "size": self.size()}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


def normalize_answer_value(value: Any) -> str:
    """Gold answers come as int/float/str; integral floats (27.0) become '27'."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()
