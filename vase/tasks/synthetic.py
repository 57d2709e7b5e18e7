"""Built-in offline tasks, generated deterministically from a seed, with exact integer answers.

They are small enough for a tiny CPU model, yet each answer depends on tokens far back in the
prompt or the reasoning, so evicting the wrong KV entries shows up as wrong answers:

- ``arith-chain``: a chain of 4-8 small arithmetic steps; every step depends on the last.
- ``fact-recall``: "The code of <name> is <number>." facts, a distractor paragraph, then a
  question about one fact (needle-in-a-haystack).
- ``count-items``: a long comma-separated list of words; how many times does one word occur?

Their difficulty is set by parameters in the task name, ``fact-recall?facts=8&filler=600``
(``PARAMETERS`` of each class: integer ranges with defaults; unknown names, non-integers and
values out of range raise ``TaskParameterError`` naming the parameter and the rule). The
parameters change the problems, so they change the dataset fingerprint and the run's identity.

Problem ``i`` for seed ``s`` is generated from its own RNG (``random.Random("<task>:<s>:<i>")``),
so ``load(limit, seed)`` is always a prefix of a longer load with the same seed, and ``limit``
may exceed the default size.
"""

from __future__ import annotations

import random
from typing import Any

from dataclasses import dataclass
from urllib.parse import parse_qsl

from .base import Problem, Task

NAMES = [
    "Alice", "Bruno", "Chen", "Dalia", "Emeka", "Farah", "Gustav", "Hana", "Ivan", "Jomo",
    "Keiko", "Liam", "Mira", "Nadia", "Oscar", "Priya", "Quinn", "Rosa", "Samir", "Tala",
    "Umar", "Vera", "Wen", "Ximena", "Yusuf", "Zara", "Aiko", "Boris", "Carmen", "Dmitri",
    "Elena", "Felix", "Greta", "Hugo", "Ines", "Jonas", "Kofi", "Lena", "Marco", "Nora",
]
CITIES = [
    "Lisbon", "Nairobi", "Oslo", "Lima", "Hanoi", "Quito", "Tunis", "Riga", "Perth", "Cusco",
    "Porto", "Accra", "Turin", "Kyoto", "Dakar", "Bergen",
]
ADJECTIVES = [
    "quiet", "busy", "bright", "cold", "windy", "calm", "crowded", "pleasant", "grey", "humid",
]
NOUNS = [
    "market", "harbor", "library", "garden", "station", "museum", "bridge", "square", "bakery",
    "theater", "river", "park",
]
VERBS = ["visited", "painted", "photographed", "described", "walked past", "admired", "sketched"]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
ITEMS = [
    "apple", "pear", "plum", "fig", "kiwi", "lime", "mango", "grape", "peach", "melon", "cherry",
    "lemon",
]


def _filler_sentence(rng: random.Random) -> str:
    templates = (
        lambda: f"The {rng.choice(NOUNS)} in {rng.choice(CITIES)} was {rng.choice(ADJECTIVES)} on {rng.choice(DAYS)}.",
        lambda: f"A traveler {rng.choice(VERBS)} the {rng.choice(ADJECTIVES)} {rng.choice(NOUNS)} near the {rng.choice(NOUNS)}.",
        lambda: f"On {rng.choice(DAYS)} the weather in {rng.choice(CITIES)} turned {rng.choice(ADJECTIVES)}.",
        lambda: f"Someone {rng.choice(VERBS)} a {rng.choice(NOUNS)} that looked {rng.choice(ADJECTIVES)} in the evening.",
        lambda: f"The old {rng.choice(NOUNS)} of {rng.choice(CITIES)} is famous for being {rng.choice(ADJECTIVES)}.",
    )
    return rng.choice(templates)()


class TaskParameterError(ValueError):
    """A task parameter broke a rule; `param` names it, `rule` states the rule."""

    def __init__(self, task: str, param: str, rule: str, value: Any = None):
        self.param, self.rule, self.value = param, rule, value
        shown = "" if value is None else f", got {value!r}"
        super().__init__(f"task {task!r} parameter {param}: {rule}{shown}")


@dataclass(frozen=True)
class TaskParameter:
    """An integer difficulty knob of a generated task."""

    default: int
    minimum: int
    maximum: int
    help: str


class GeneratedTask(Task):
    """Base of the seeded generators: subclasses implement :meth:`make_problem` and declare their
    difficulty knobs in ``PARAMETERS`` (read as ``self.params[name]``)."""

    offline_default = True
    default_size = 50
    PARAMETERS: dict[str, TaskParameter] = {}

    def __init__(self, size: int | None = None, **params: int) -> None:
        self._size = int(size) if size is not None else self.default_size
        if self._size < 0:
            raise ValueError("size must be >= 0")
        self.params = self.check_parameters(params)

    @classmethod
    def check_parameters(cls, given: dict[str, Any]) -> dict[str, int]:
        """Defaults overridden by `given`; every value an integer within its range."""
        out = {name: p.default for name, p in cls.PARAMETERS.items()}
        for name, raw in given.items():
            if name not in cls.PARAMETERS:
                known = ", ".join(cls.PARAMETERS) or "none"
                raise TaskParameterError(cls.name, name, f"is not a parameter of this task (known: {known})", raw)
            p = cls.PARAMETERS[name]
            try:
                value = int(raw) if not isinstance(raw, bool) else None
            except (TypeError, ValueError):
                value = None
            if value is None or (isinstance(raw, str) and not raw.strip().lstrip("-").isdigit()):
                raise TaskParameterError(cls.name, name, "must be an integer", raw)
            if not p.minimum <= value <= p.maximum:
                raise TaskParameterError(cls.name, name, f"must be within [{p.minimum}, {p.maximum}]", value)
            out[name] = value
        cls.check_together(out)
        return out

    @classmethod
    def check_together(cls, params: dict[str, int]) -> None:
        """Rules across parameters (e.g. a minimum below a maximum); none by default."""

    @classmethod
    def from_query(cls, query: str) -> GeneratedTask:
        """The task with the parameters of a query string, ``facts=8&filler=600``."""
        try:
            pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=True)
        except ValueError:
            raise TaskParameterError(cls.name, "query", "must be NAME=VALUE pairs joined by '&'", query) from None
        given: dict[str, str] = {}
        for name, value in pairs:
            if name in given:
                raise TaskParameterError(cls.name, name, "must be given once", value)
            given[name] = value
        return cls(**given)

    @classmethod
    def describe_parameters(cls) -> dict[str, dict[str, Any]]:
        return {name: {"default": p.default, "min": p.minimum, "max": p.maximum, "help": p.help}
                for name, p in cls.PARAMETERS.items()}

    def size(self) -> int:
        return self._size

    def make_problem(self, rng: random.Random, index: int, seed: int) -> Problem:  # pragma: no cover
        raise NotImplementedError

    def _problem(self, index: int, seed: int) -> Problem:
        rng = random.Random(f"{self.name}:{seed}:{index}")
        return self.make_problem(rng, index, seed)

    def load(self, limit: int | None = None, seed: int = 0) -> list[Problem]:
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
            raise ValueError(f"limit must be a non-negative integer or None, got {limit!r}")
        n = self._size if limit is None else limit
        return [self._problem(i, int(seed)) for i in range(n)]

    def _load_all(self, seed: int) -> list[Problem]:
        return self.load(None, seed)

    def count(self, limit: int | None = None, seed: int = 0) -> int:
        return self._size if limit is None else limit  # as load(): a limit past the size makes more

    def head(self, n: int, seed: int = 0) -> list[Problem]:
        return [self._problem(i, int(seed)) for i in range(n)]


class ArithChainTask(GeneratedTask):
    """"Start with 7. Add 5. Multiply by 3. Subtract 4. What is the result?" (4-8 steps).

    Values stay non-negative integers no larger than ``max_value``: subtraction never goes
    below zero, multiplication (by 2-5) only while the product stays small, division (by 2-5)
    only when exact. ``metadata["steps"]`` lists the operations as ``[op, operand]`` pairs
    with op in {"add", "subtract", "multiply", "divide"}.
    """

    name = "arith-chain"
    description = "multi-step integer arithmetic chains (4-8 steps), offline, generated from the seed"
    PARAMETERS = {
        "min_steps": TaskParameter(4, 1, 64, "fewest operations in a chain"),
        "max_steps": TaskParameter(8, 1, 64, "most operations in a chain"),
        "max_value": TaskParameter(500, 10, 1_000_000, "largest intermediate value"),
    }

    @classmethod
    def check_together(cls, params: dict[str, int]) -> None:
        if params["min_steps"] > params["max_steps"]:
            raise TaskParameterError(cls.name, "min_steps", f"must be <= max_steps ({params['max_steps']})",
                                     params["min_steps"])

    @property
    def min_steps(self) -> int:
        return self.params["min_steps"]

    @property
    def max_steps(self) -> int:
        return self.params["max_steps"]

    @property
    def max_value(self) -> int:
        return self.params["max_value"]

    def make_problem(self, rng: random.Random, index: int, seed: int) -> Problem:
        value = rng.randint(2, 20)
        start = value
        n_steps = rng.randint(self.min_steps, self.max_steps)
        steps: list[list[Any]] = []
        words: list[str] = []
        for _ in range(n_steps):
            options = ["add"]
            if value >= 2:
                options.append("subtract")
            if 0 < value * 2 <= self.max_value:
                options.append("multiply")
            if value >= 2 and any(value % k == 0 for k in range(2, 6)):
                options.append("divide")
            op = rng.choice(options)
            if op == "add":
                k = rng.randint(1, 20)
                value += k
                words.append(f"Add {k}.")
            elif op == "subtract":
                k = rng.randint(1, min(20, value))
                value -= k
                words.append(f"Subtract {k}.")
            elif op == "multiply":
                ks = [k for k in range(2, 6) if value * k <= self.max_value]
                k = rng.choice(ks)
                value *= k
                words.append(f"Multiply by {k}.")
            else:
                ks = [k for k in range(2, 6) if value % k == 0]
                k = rng.choice(ks)
                value //= k
                words.append(f"Divide by {k}.")
            steps.append([op, k])
        text = f"Start with {start}. " + " ".join(words) + " What is the result?"
        return Problem(
            id=f"arith-chain-s{seed}-{index:04d}",
            prompt=text,
            answer=str(value),
            kind="math",
            metadata={"task": self.name, "seed": seed, "start": start, "steps": steps},
        )


class FactRecallTask(GeneratedTask):
    """``facts`` "The code of <name> is <number>." facts, ``filler`` distractor sentences, then
    "What is the code of <name>?". Codes are distinct 3-4 digit integers; the asked name is
    drawn from the first half of the facts so the needle sits far from the question."""

    name = "fact-recall"
    description = "needle-in-a-haystack code recall after a long distractor paragraph, offline"
    PARAMETERS = {
        # Defaults measured on the embedded SmolLM2 (benchmarks/calibrate_tasks.py, README): the
        # best full-cache accuracy found, with a prompt (~200 tokens) still over a 64-token budget.
        "facts": TaskParameter(4, 1, len(NAMES), "facts listed (the asked one is in the first half)"),
        "filler": TaskParameter(10, 0, 5000, "distractor sentences between the facts and the question (~12 "
                                             "tokens each)"),
    }

    @property
    def n_facts(self) -> int:
        return self.params["facts"]

    @property
    def n_filler(self) -> int:
        return self.params["filler"]

    def make_problem(self, rng: random.Random, index: int, seed: int) -> Problem:
        names = rng.sample(NAMES, self.n_facts)
        codes = rng.sample(range(100, 10000), self.n_facts)
        facts = [f"The code of {n} is {c}." for n, c in zip(names, codes)]
        filler = " ".join(_filler_sentence(rng) for _ in range(self.n_filler))
        target = rng.randrange(max(1, self.n_facts // 2))
        text = (
            "Remember the following facts.\n"
            + "\n".join(facts)
            + "\n\n"
            + filler
            + f"\n\nWhat is the code of {names[target]}?"
        )
        return Problem(
            id=f"fact-recall-s{seed}-{index:04d}",
            prompt=text,
            answer=str(codes[target]),
            kind="math",
            metadata={
                "task": self.name, "seed": seed, "facts": dict(zip(names, codes)),
                "target": names[target], "target_index": target,
            },
        )


class CountItemsTask(GeneratedTask):
    """A list of 30-60 fruit words; "How many times does the word X appear in the list?"."""

    name = "count-items"
    description = "count occurrences of one word in a long list, offline"

    PARAMETERS = {
        "min_items": TaskParameter(30, 1, 5000, "shortest list"),
        "max_items": TaskParameter(60, 1, 5000, "longest list"),
        "vocab": TaskParameter(6, 2, len(ITEMS), "distinct words the list is drawn from"),
    }

    @classmethod
    def check_together(cls, params: dict[str, int]) -> None:
        if params["min_items"] > params["max_items"]:
            raise TaskParameterError(cls.name, "min_items", f"must be <= max_items ({params['max_items']})",
                                     params["min_items"])

    def make_problem(self, rng: random.Random, index: int, seed: int) -> Problem:
        n = rng.randint(self.params["min_items"], self.params["max_items"])
        vocab = rng.sample(ITEMS, self.params["vocab"])
        items = [rng.choice(vocab) for _ in range(n)]
        target = rng.choice(items)
        count = items.count(target)
        text = (
            "Here is a list of items: " + ", ".join(items) + ".\n"
            f"How many times does the word \"{target}\" appear in the list?"
        )
        return Problem(
            id=f"count-items-s{seed}-{index:04d}",
            prompt=text,
            answer=str(count),
            kind="math",
            metadata={"task": self.name, "seed": seed, "items": items, "target": target},
        )
