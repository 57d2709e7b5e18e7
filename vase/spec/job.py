"""The job: one pydantic model, :class:`JobSpec`, owns every field of a grid.

Its type, default, bounds and description are written here once; the API's request schema (and
its OpenAPI), ``vase bench``'s options, the dashboard's submit form and ``vase submit`` read them
from this class. Types and bounds are checked by pydantic when a spec is built; the rules that
need the registries (the task, each method's parameters against each budget, budget-dependent
defaults, duplicates) are :meth:`JobSpec.check`, which raises :class:`JobInvalid` naming the
field path (``methods[1].params.n_large``) and the rule.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, ValidationError, field_validator

from ..traces.format import TRACE_LEVELS

INT32 = 2**31 - 1
QUEUE_CHOICES = ("auto", "gpu", "cpu")
ATTENTION_BACKENDS = ("auto", "sdpa", "flash", "eager")


class JobInvalid(ValueError):
    """A job broke a rule. ``field`` is its path in the job body (``methods[1].params.n_large``).

    Shaped like :class:`vase.policies.InvalidParameter` (``param``, ``rule``, ``value``), which this
    module does not import: building and reading a JobSpec needs no torch (the CLI's options are
    made from it at start-up)."""

    def __init__(self, field: str, rule: str, value: Any = None):
        self.param, self.rule, self.value = field, rule, value
        shown = "" if value is None else f", got {value!r}"
        super().__init__(f"{field}: {rule}{shown}")

    @property
    def field(self) -> str:
        return self.param


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


def text(min_length: int = 0, max_length: int | None = None) -> Any:
    """A string without NUL characters, of bounded length."""
    return Annotated[str, StringConstraints(min_length=min_length, max_length=max_length), AfterValidator(_no_nul)]


ParamValue = bool | int | float | text() | None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, frozen=True)


class MethodChoice(_Strict):
    """A method of the grid with the parameters that differ from its defaults."""

    name: text(1, 64) = Field(description="A method of `GET /v1/methods`, e.g. `vase`.", examples=["vase"])
    params: dict[text(1, 64), ParamValue] = Field(
        default_factory=dict, max_length=64,
        description="The method's parameters (names and defaults in `GET /v1/methods`); unset ones keep "
                    "their defaults.", examples=[{"n_large": 16}])

    @property
    def label(self) -> str:
        from ..methods import format_method

        return format_method(self.name, self.params)


class GenerationSpec(_Strict):
    """Sampling parameters; unset ones follow the model's generation config."""

    do_sample: bool | None = Field(None, description="Sample (true) or decode greedily (false). Default: "
                                                     "sampling when temperature, top_p or top_k is set, else the "
                                                     "model's generation config; with false they are refused.")
    temperature: float | None = Field(None, gt=0, le=100, description="Sampling temperature (> 0).")
    top_p: float | None = Field(None, gt=0, le=1, description="Nucleus sampling mass, in (0, 1].")
    top_k: int | None = Field(None, ge=0, le=1_000_000, description="Top-k sampling (0 disables it).")


@dataclass(frozen=True)
class RunSpec:
    """One cell of the grid: a method with its parameters at one budget."""

    method: str
    params: dict[str, Any]
    budget: int | None
    residual: int

    @property
    def is_reference(self) -> bool:
        from ..policies import policy_class

        return policy_class(self.method).kind == "none"


class JobSpec(_Strict):
    """A benchmark job: a grid of methods x budgets on a task, every sample graded and stored."""

    model: text(1, 512) | None = Field(
        None,
        description="`embedded:smollm2-135m-instruct`, or a hub id or folder the operator allows "
                    "(`VASE_ALLOWED_MODELS`). Default: the service's default model (the embedded "
                    "SmolLM2-135M-Instruct).")
    task: text(1, 256) = Field(description="A task of `GET /v1/tasks`.", examples=["arith-chain"])
    limit: int | None = Field(4, ge=1, le=1_000_000, description="Problems to run (the task's first ones); "
                                                                 "null: all of them.")
    task_seed: int = Field(0, ge=0, le=INT32, description="Seed of generated tasks (and shuffled choices).")
    methods: list[MethodChoice] = Field(
        default_factory=lambda: [MethodChoice(name="full"), MethodChoice(name="vase")], min_length=1,
        max_length=32,
        description="Cache methods with their parameters. The full cache runs once, without a budget.")
    budgets: list[Annotated[int, Field(ge=1, le=INT32)]] = Field(
        default_factory=lambda: [128], max_length=64,
        description="KV budgets (pairs kept per layer and head); each eviction method runs at each. A budget "
                    "must be a multiple of `residual` and greater than it.")
    residual: int = Field(32, ge=1, le=INT32, description="Recency window; evictions run every `residual` steps.")
    evict_after_prefill: bool = Field(
        False, description="Also evict once at the end of the prefill when the prompt exceeds the budget, so the cache "
                           "is at the budget before the first token (off in the authors' code: leave it off for "
                           "reference-exact runs).")
    samples: int = Field(1, ge=1, le=1024, description="Samples per problem (pass@k uses them).")
    seeds: int = Field(0, ge=0, le=INT32, description="Base seed. Sample i of problem p uses a seed derived from "
                                                      "(seeds, p, i), the same under every method.")
    generation: GenerationSpec = Field(default_factory=GenerationSpec, description="Sampling parameters.")
    max_new_tokens: int = Field(256, ge=1, le=131_072, description="Tokens generated at most per sample.")
    fidelity: bool = Field(False, description="Also measure KL and top-1 agreement against the full cache "
                                              "(teacher-forced on its output).")
    trace: Literal[TRACE_LEVELS] = Field(
        "off", description="Eviction traces: `summary` (per-layer counts and value statistics) or `full` "
                           "(which positions each layer and head held at each step).")
    attention_backend: Literal[ATTENTION_BACKENDS] = Field("auto", description="Attention kernel.")
    reference_exact: bool = Field(
        False, description="Run the cache as the authors' code does: kept tokens stored in ranking order (smoothing "
                           "over slots), scores in the model dtype. Default: position order, fp32.")
    batch_problems: int = Field(
        8, ge=1, le=1024, description="Problems decoded together under each run, each with all its samples: fewer "
                                      "forward passes per token, and their prompts prefilled once for every run. KV "
                                      "memory grows with it (a worker lowers it to what fits "
                                      "`VASE_WORKER_KV_GIB_*`). Not part of a run's identity.")
    queue: Literal[QUEUE_CHOICES] = Field(
        "auto", description="Worker pool. `auto`: small jobs on the embedded model go to CPU workers, the rest "
                            "to GPU workers.")
    chunk_size: int | None = Field(None, ge=1, le=10_000, description="Problems per worker task (default: the "
                                                                      "service's `VASE_CHUNK_PROBLEMS`; raised so that a "
                                                                      "job has at most `VASE_MAX_JOB_CHUNKS` tasks).")

    model_config = ConfigDict(
        extra="forbid", strict=True, allow_inf_nan=False, frozen=True,
        json_schema_extra={"examples": [{
            "task": "arith-chain", "limit": 1, "methods": [{"name": "full"}, {"name": "vase", "params": {"n_large": 16}}],
            "budgets": [64], "residual": 16, "samples": 1, "max_new_tokens": 96,
        }]},
    )

    @field_validator("methods", mode="before")
    @classmethod
    def _method_specs(cls, value: Any) -> Any:
        # `vase bench` parses `vase:n_large=16` into a vase.methods.MethodSpec; the API sends {"name", "params"}.
        if isinstance(value, Sequence) and not isinstance(value, str):
            return [v if isinstance(v, (Mapping, MethodChoice)) or not hasattr(v, "params")
                    else {"name": v.name, "params": dict(v.params)} for v in value]
        return value

    # -- the one place each default is read from ----------------------------------------------------
    @classmethod
    def default(cls, name: str) -> Any:
        """The default of field ``name`` (``JobSpec.default("residual")`` -> 32)."""
        return cls.model_fields[name].get_default(call_default_factory=True)

    @classmethod
    def suggested(cls, name: str) -> Any:
        """A required field's first example: what forms and the CLI start from (``task``)."""
        return (cls.model_fields[name].examples or [None])[0]

    @classmethod
    def describe(cls, name: str) -> str:
        return cls.model_fields[name].description or ""

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> JobSpec:
        """Build from a mapping; a type or bound error raises :class:`JobInvalid` naming the field."""
        try:
            return cls.model_validate(dict(data))
        except ValidationError as exc:
            error = exc.errors()[0]
            raise JobInvalid(field_path(error.get("loc") or ()), error.get("msg", "is invalid"),
                             error.get("input") if error.get("type") != "missing" else None) from None

    @classmethod
    def from_stored(cls, document: Mapping[str, Any]) -> JobSpec:
        """The spec of a stored job document (``JobPlan.spec_document``), without the service's plan.
        Documents stored before JobSpec (``seed``, flat sampling fields) are read too."""
        doc = dict(document)
        if "seed" in doc and "seeds" not in doc:
            doc["seeds"] = doc["seed"]
        if "generation" not in doc:
            doc["generation"] = {k: doc[k] for k in GenerationSpec.model_fields if doc.get(k) is not None}
        return cls.model_validate({k: v for k, v in doc.items() if k in cls.model_fields})

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    # -- the grid -------------------------------------------------------------------------------------
    def runs(self) -> list[RunSpec]:
        """The grid, reference (full cache) first; fidelity adds the full cache when missing."""
        from ..policies import build_policy, policy_class

        cells: list[RunSpec] = []
        for method in self.methods:
            kind = policy_class(method.name).kind
            budgets: Sequence[int | None] = [None] if kind == "none" else self.budgets
            for budget in budgets:
                build = build_policy(method.name, method.params)
                cells.append(RunSpec(method.name, dataclasses.asdict(build), budget, self.residual))
        if self.fidelity and not any(c.is_reference for c in cells):
            cells.append(RunSpec("full", {}, None, self.residual))
        return sorted(cells, key=lambda c: not c.is_reference)

    def sampling(self):
        """The :class:`vase.generation.SamplingConfig` of ``generation`` (imports the generation stack)."""
        from ..generation import SamplingConfig

        g = self.generation
        return SamplingConfig(g.do_sample, g.temperature, g.top_p, g.top_k)

    # -- the rules that need the registries -----------------------------------------------------------
    def check(self) -> JobSpec:
        """Every cross-field rule; raises :class:`JobInvalid` naming the field. Returns self."""
        from ..policies import InvalidParameter

        self._check_task()
        if self.evict_after_prefill and self.reference_exact:
            # The authors' code evicts only while decoding: an end-of-prefill eviction is not theirs.
            raise JobInvalid("evict_after_prefill", "must be false when reference_exact is true (the authors' code "
                                                    "evicts only while decoding)")
        policies = self._check_methods()
        self._check_grid(policies)
        try:
            self.sampling().check()
        except InvalidParameter as exc:
            raise JobInvalid(f"generation.{exc.param}", exc.rule, exc.value) from None
        return self

    def _check_task(self) -> None:
        from ..tasks import get_task

        try:
            get_task(self.task)
        except (ValueError, OSError) as exc:
            raise JobInvalid("task", str(exc)) from None

    def _check_methods(self) -> list[Any]:
        from ..policies import InvalidParameter, build_policy, policy_class

        policies = []
        for i, m in enumerate(self.methods):
            try:
                policy_class(m.name)
            except InvalidParameter as exc:
                raise JobInvalid(f"methods[{i}].name", exc.rule, m.name) from None
            try:
                policies.append(build_policy(m.name, m.params))
            except InvalidParameter as exc:
                raise JobInvalid(f"methods[{i}].params.{exc.param}", exc.rule, exc.value) from None
            except (TypeError, ValueError) as exc:
                raise JobInvalid(f"methods[{i}].params", str(exc)) from None
        return policies

    def _check_grid(self, policies: list[Any]) -> None:
        from ..policies import InvalidParameter, policy_class, validate_geometry

        kinds = [policy_class(m.name).kind for m in self.methods]
        budgets, residual = self.budgets, self.residual
        if not budgets and any(k != "none" for k in kinds):
            raise JobInvalid("budgets", "must list at least one budget for eviction and selection methods")
        for j, budget in enumerate(budgets):
            if budget in budgets[:j]:
                raise JobInvalid(f"budgets[{j}]", "must not repeat a budget", budget)
        names = {"residual": "residual"}
        for i, (kind, policy) in enumerate(zip(kinds, policies)):
            for j, budget in enumerate([None] if kind == "none" else budgets):
                where = {**names, "budget": f"budgets[{j}]"}
                try:
                    validate_geometry(budget, residual, kind=kind)
                    if budget is not None:
                        policy.validate(budget, residual)
                except InvalidParameter as exc:
                    raise JobInvalid(where.get(exc.param, f"methods[{i}].params.{exc.param}"), exc.rule,
                                     exc.value) from None
        self._check_duplicates(kinds, policies)

    def _check_duplicates(self, kinds: list[str], policies: list[Any]) -> None:
        """Two methods that run the same cache at some budget once budget-dependent defaults are
        resolved (``vase`` and ``vase:n_large=16`` at budget 64, where n_large defaults to 64 // 4)."""
        for j, budget in enumerate([None, *self.budgets]):
            seen: dict[tuple[str, str], int] = {}
            for i, (m, kind, policy) in enumerate(zip(self.methods, kinds, policies)):
                if (kind == "none") != (budget is None):
                    continue
                key = (m.name, repr(sorted(policy.resolved_params(budget).items())))
                if key in seen:
                    at = "" if budget is None else f" at budgets[{j - 1}] = {budget}"
                    raise JobInvalid(f"methods[{i}]", f"repeats methods[{seen[key]}]{at} (same method, same "
                                                      "parameters once defaults are filled in)", m.label)
                seen[key] = i


def field_path(loc: Sequence[Any]) -> str:
    """``("methods", 1, "params", "n_large")`` -> ``methods[1].params.n_large``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else ("." if out else "") + str(part)
    return out or "body"


__all__ = ["ATTENTION_BACKENDS", "INT32", "QUEUE_CHOICES", "GenerationSpec", "JobInvalid", "JobSpec", "MethodChoice",
           "ParamValue", "RunSpec", "field_path", "text"]
