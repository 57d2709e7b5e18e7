"""Public benchmark tasks loaded from the Hugging Face hub (or an offline JSONL copy).

Every hub task first looks for an offline copy: when the environment variable
``VASE_DATA_DIR`` names a folder holding one of the task's local file names (``math.jsonl``
for MATH-500, ``aime24.jsonl``, ... as in the project's shared reasoning data), the task loads
from that file and ``offline`` is True. Otherwise it loads through ``datasets`` by hub id
(network needed; gated sets such as GPQA need a logged-in token).
"""

from __future__ import annotations

import base64
import io
import json
import os
import pickle
import random
import zlib
from pathlib import Path
from typing import Any

from .base import Problem, Task, normalize_answer_value
from .jsonl import read_jsonl

DATA_DIR_ENV = "VASE_DATA_DIR"
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def data_dir() -> Path | None:
    value = os.environ.get(DATA_DIR_ENV, "").strip()
    return Path(value) if value else None


def _first(row: dict[str, Any], keys: tuple[str, ...]) -> tuple[bool, Any]:
    for k in keys:
        if k in row and row[k] is not None:
            return True, row[k]
    return False, None


class HubTask(Task):
    """A hub dataset mapped onto :class:`Problem` rows.

    ``question_fields`` / ``answer_fields`` / ``id_fields`` are tried in order for each row
    (hub copies and offline copies name their fields differently).
    """

    offline_default = False

    def __init__(
        self,
        name: str,
        hub_id: str,
        *,
        config: str | None = None,
        split: str = "test",
        published_size: int | None = None,
        local_files: tuple[str, ...] = (),
        question_fields: tuple[str, ...] = ("problem", "question", "Question"),
        answer_fields: tuple[str, ...] = ("answer",),
        id_fields: tuple[str, ...] = ("id", "unique_id", "problem_idx"),
        kind: str = "math",
        description: str = "",
    ) -> None:
        self.name = name
        self.hub_id = hub_id
        self.config = config
        self.split = split
        self.published_size = published_size
        self.local_files = tuple(local_files) or (f"{name}.jsonl",)
        self.question_fields = question_fields
        self.answer_fields = answer_fields
        self.id_fields = id_fields
        self.kind = kind
        self.description = description or f"{hub_id} ({split})"
        self._rows_cache: dict[str, list[dict[str, Any]]] = {}

    # -- source selection ---------------------------------------------------------------------
    def local_path(self) -> Path | None:
        """The offline copy under ``$VASE_DATA_DIR`` when present."""
        base = data_dir()
        if base is None:
            return None
        for fname in self.local_files:
            p = base / fname
            if p.is_file():
                return p
        return None

    @property
    def offline(self) -> bool:
        return self.local_path() is not None

    def size(self) -> int | None:
        if self.local_path() is not None:
            return len(self._load_all(0))
        return self.published_size

    def _rows(self) -> list[dict[str, Any]]:
        local = self.local_path()
        key = str(local) if local is not None else f"hub:{self.hub_id}:{self.config}:{self.split}"
        if key not in self._rows_cache:
            if local is not None:
                rows = read_jsonl(local)
            else:
                rows = self._hub_rows()
            self._rows_cache[key] = [r for r in rows if self.keep_row(r)]
        return self._rows_cache[key]

    def _hub_rows(self) -> list[dict[str, Any]]:  # pragma: no cover - needs network
        try:
            from datasets import load_dataset
        except ImportError as exc:
            raise RuntimeError("loading hub tasks needs the 'datasets' package") from exc
        args = [self.hub_id] + ([self.config] if self.config else [])
        ds = load_dataset(*args, split=self.split)
        return [dict(r) for r in ds]

    # -- mapping ------------------------------------------------------------------------------
    def keep_row(self, row: dict[str, Any]) -> bool:
        return True

    def row_to_problem(self, row: dict[str, Any], index: int, seed: int) -> Problem:
        ok, question = _first(row, self.question_fields)
        if not ok:
            raise ValueError(
                f"task {self.name!r}: row {index} has none of the question fields "
                f"{list(self.question_fields)} (fields: {sorted(row)})"
            )
        ok, answer = _first(row, self.answer_fields)
        if not ok:
            raise ValueError(
                f"task {self.name!r}: row {index} has none of the answer fields "
                f"{list(self.answer_fields)} (fields: {sorted(row)})"
            )
        ok, pid = _first(row, self.id_fields)
        meta = {
            k: v for k, v in row.items()
            if k not in (*self.question_fields, *self.answer_fields)
            and (isinstance(v, (str, int, float, bool)) or v is None)
        }
        meta["task"] = self.name
        return Problem(
            id=str(pid) if ok else str(index),
            prompt=str(question),
            answer=self.clean_answer(answer),
            kind=self.kind,  # type: ignore[arg-type]
            metadata=meta,
        )

    def clean_answer(self, answer: Any) -> str:
        return normalize_answer_value(answer)

    def _load_all(self, seed: int) -> list[Problem]:
        return [self.row_to_problem(row, i, seed) for i, row in enumerate(self._rows())]


class GSM8KTask(HubTask):
    """GSM8K: the gold answer is the number after ``####`` in the solution (commas removed)."""

    def clean_answer(self, answer: Any) -> str:
        text = str(answer)
        if "####" in text:
            text = text.rsplit("####", 1)[1]
        return normalize_answer_value(text.strip().replace(",", ""))


class GPQATask(HubTask):
    """GPQA: four choices (the correct one and three distractors) shuffled with an RNG seeded by
    ``(seed, record id)``; the gold answer is the letter of the correct choice."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("kind", "choice")
        kwargs.setdefault("question_fields", ("Question", "question", "problem"))
        kwargs.setdefault("answer_fields", ("Correct Answer", "correct_answer"))
        kwargs.setdefault("id_fields", ("Record ID", "id"))
        super().__init__(*args, **kwargs)

    def row_to_problem(self, row: dict[str, Any], index: int, seed: int) -> Problem:
        ok, question = _first(row, self.question_fields)
        ok2, correct = _first(row, self.answer_fields)
        if not ok or not ok2:
            raise ValueError(
                f"task {self.name!r}: row {index} needs a question {list(self.question_fields)} and a "
                f"correct answer {list(self.answer_fields)} (fields: {sorted(row)})"
            )
        wrong = []
        for i in (1, 2, 3):
            ok3, w = _first(row, (f"Incorrect Answer {i}", f"incorrect_answer_{i}"))
            if not ok3:
                raise ValueError(f"task {self.name!r}: row {index} lacks 'Incorrect Answer {i}'")
            wrong.append(str(w).strip())
        ok, pid = _first(row, self.id_fields)
        pid = str(pid) if ok else str(index)
        choices = [str(correct).strip(), *wrong]
        rng = random.Random(f"{self.name}:{seed}:{pid}")
        order = list(range(len(choices)))
        rng.shuffle(order)
        shuffled = [choices[i] for i in order]
        gold = LETTERS[order.index(0)]
        meta = {"task": self.name, "seed": seed}
        for k in ("High-level domain", "Subdomain"):
            if k in row:
                meta[k] = row[k]
        return Problem(id=pid, prompt=str(question).strip(), answer=gold, kind="choice",
                       choices=shuffled, metadata=meta)


class _SafeUnpickler(pickle.Unpickler):
    """LiveCodeBench stores private tests as base64(zlib(pickle(json string))). Only plain data
    may be unpickled: any global/class lookup is refused."""

    def find_class(self, module: str, name: str) -> Any:  # noqa: D401
        raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}")


def decode_lcb_tests(raw: Any) -> list[dict[str, Any]]:
    """Decode LiveCodeBench ``public_test_cases``/``private_test_cases`` (JSON, or
    base64-zlib-pickle of JSON) into a list of ``{"input", "output", "testtype"}`` dicts."""
    if raw is None or raw == "":
        return []
    if isinstance(raw, list):
        return list(raw)
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, TypeError):
        blob = zlib.decompress(base64.b64decode(str(raw).encode("utf-8")))
        data = _SafeUnpickler(io.BytesIO(blob)).load()
        if isinstance(data, (bytes, bytearray)):
            data = data.decode("utf-8")
        if isinstance(data, str):
            data = json.loads(data)
    if not isinstance(data, list):
        raise ValueError("LiveCodeBench tests must decode to a list")
    return [dict(t) for t in data]


LCB_STDIN_INSTRUCTION = (
    "Read the inputs from stdin, solve the problem and write the answer to stdout "
    "(do not directly test on the sample inputs). Enclose your code within delimiters as follows.\n"
    "```python\n# YOUR CODE HERE\n```"
)
LCB_STARTER_INSTRUCTION = (
    "You will use the following starter code to write the solution to the problem and enclose "
    "your code within delimiters."
)


class LiveCodeBenchTask(HubTask):
    """LiveCodeBench code generation (``livecodebench/code_generation_lite``).

    ``files`` are the release files read from the hub repo (the set uses a loading script, which
    current ``datasets`` no longer runs, so the JSONL files are read directly): ``test6.jsonl``
    holds the problems added in release v6. Rows are filtered to ``difficulty``; tests are the
    public plus private test cases; functional (LeetCode) problems carry ``func_name`` in the
    metadata and the starter code in the prompt.
    """

    def __init__(self, *args: Any, files: tuple[str, ...] = ("test6.jsonl",),
                 difficulty: str | None = "medium", **kwargs: Any) -> None:
        kwargs.setdefault("kind", "code")
        kwargs.setdefault("question_fields", ("question_content", "problem", "question"))
        kwargs.setdefault("answer_fields", ())
        kwargs.setdefault("id_fields", ("question_id", "id"))
        super().__init__(*args, **kwargs)
        self.files = files
        self.difficulty = difficulty

    def keep_row(self, row: dict[str, Any]) -> bool:
        if self.difficulty is None or "difficulty" not in row:
            return True
        return str(row["difficulty"]).lower() == self.difficulty

    def _hub_rows(self) -> list[dict[str, Any]]:  # pragma: no cover - needs network
        from huggingface_hub import hf_hub_download

        rows: list[dict[str, Any]] = []
        for fname in self.files:
            path = hf_hub_download(self.hub_id, fname, repo_type="dataset")
            rows.extend(read_jsonl(path))
        return rows

    def row_to_problem(self, row: dict[str, Any], index: int, seed: int) -> Problem:
        ok, question = _first(row, self.question_fields)
        if not ok:
            raise ValueError(f"task {self.name!r}: row {index} lacks question_content (fields: {sorted(row)})")
        ok, pid = _first(row, self.id_fields)
        pid = str(pid) if ok else str(index)
        if "tests" in row and row["tests"] is not None:
            tests = decode_lcb_tests(row["tests"])
        else:
            tests = decode_lcb_tests(row.get("public_test_cases")) + decode_lcb_tests(
                row.get("private_test_cases")
            )
        meta_raw = row.get("metadata") or {}
        if isinstance(meta_raw, str):
            meta_raw = json.loads(meta_raw) if meta_raw.strip() else {}
        func_name = meta_raw.get("func_name") or row.get("func_name")
        starter = (row.get("starter_code") or "").strip("\n")
        title = row.get("question_title")
        text = (f"{title}\n\n" if title else "") + str(question).strip() + "\n\n"
        if starter:
            text += f"{LCB_STARTER_INSTRUCTION}\n```python\n{starter}\n```"
        else:
            text += LCB_STDIN_INSTRUCTION
        meta: dict[str, Any] = {"task": self.name, "func_name": func_name, "starter_code": starter}
        for k in ("platform", "difficulty", "contest_date", "contest_id", "question_title"):
            if k in row:
                meta[k] = row[k]
        for t in tests:
            t.setdefault("testtype", "functional" if func_name else "stdin")
        return Problem(id=pid, prompt=text, answer="", kind="code", tests=tests, metadata=meta)


def builtin_hub_tasks() -> list[HubTask]:
    return [
        HubTask("aime24", "HuggingFaceH4/aime_2024", split="train", published_size=30,
                local_files=("aime24.jsonl",), description="AIME 2024 (30 problems)"),
        HubTask("aime25", "math-ai/aime25", split="test", published_size=30,
                local_files=("aime25.jsonl",), description="AIME 2025 I+II (30 problems)"),
        HubTask("aime26", "MathArena/aime_2026", split="train", published_size=30,
                local_files=("aime26.jsonl",), description="AIME 2026 I+II (30 problems)"),
        HubTask("math500", "HuggingFaceH4/MATH-500", split="test", published_size=500,
                local_files=("math500.jsonl", "math.jsonl"),
                id_fields=("unique_id", "id"), description="MATH-500 (500 problems)"),
        HubTask("hmmt25", "MathArena/hmmt_feb_2025", split="train", published_size=30,
                local_files=("hmmt25.jsonl", "hmmt.jsonl"), id_fields=("problem_idx", "id"),
                description="HMMT February 2025 (30 problems)"),
        HubTask("amc", "AI-MO/aimo-validation-amc", split="train", published_size=83,
                local_files=("amc.jsonl",), description="AMC 12 2022-2023 (AI-MO validation, 83 problems)"),
        GSM8KTask("gsm8k", "openai/gsm8k", config="main", split="test", published_size=1319,
                  local_files=("gsm8k.jsonl",), description="GSM8K test (1319 problems)"),
        GPQATask("gpqa-diamond", "Idavidrein/gpqa", config="gpqa_diamond", split="train",
                 published_size=198, local_files=("gpqa-diamond.jsonl", "gpqa_diamond.jsonl"),
                 description="GPQA Diamond (198 questions, gated; choices shuffled by seed)"),
        LiveCodeBenchTask("livecodebench-v6-medium", "livecodebench/code_generation_lite",
                          split="test", published_size=None,
                          local_files=("livecodebench-v6-medium.jsonl", "lcb_v6_medium.jsonl"),
                          description="LiveCodeBench release v6 problems (test6.jsonl), medium difficulty"),
    ]

