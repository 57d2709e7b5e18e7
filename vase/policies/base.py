"""The contract every cache policy follows, and the registry that builds them by name.

A policy is a small frozen dataclass. Eviction policies implement `score(ctx)`, returning one number
per candidate KV pair (higher = keep); the cache keeps the top `budget - residual` of them. Stochastic
methods express their randomness inside the scores (e.g. Gumbel keys), so top-k stays the one
selection rule. Selection policies (Quest) keep the whole cache and choose what to attend to instead.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch

PolicyKind = Literal["none", "eviction", "selection"]

# The paper reserves the first four positions ("attention sinks") wherever it says "sinks".
DEFAULT_SINKS = 4


class InvalidParameter(ValueError):
    """A method or cache parameter broke a rule. `param` names it, `rule` states the rule."""

    def __init__(self, param: str, rule: str, value: Any = None):
        self.param = param
        self.rule = rule
        self.value = value
        shown = "" if value is None else f", got {value!r}"
        super().__init__(f"{param}: {rule}{shown}")


@dataclass
class EvictionContext:
    """What a policy sees when an eviction runs for a group of batch rows of one layer.

    Shapes: B rows, H KV heads, N candidates (every slot but the recency window), D head dim.
    """

    keys: torch.Tensor  # [B, H, N, D], post-RoPE
    values: torch.Tensor  # [B, H, N, D]
    positions: torch.Tensor  # [B, H, N] original token positions
    budget: int
    residual: int
    queries: torch.Tensor | None = None  # [B, Hq, W, D] window of recent post-RoPE queries
    newest_query: torch.Tensor | None = None  # [B, Hq, 1, D]
    accumulated_attention: torch.Tensor | None = None  # [B, H, N] (H2O)
    generators: list[torch.Generator] = field(default_factory=list)  # one per row
    row_states: list[dict] = field(default_factory=list)  # per-row persistent policy state
    # Reference-exact mode (the authors' code): scores in the model dtype, and policies that keep
    # a reserved part first give it a rank so the cache can store it in the reference's order.
    reference_exact: bool = False

    @property
    def keep(self) -> int:
        return self.budget - self.residual

    @property
    def num_candidates(self) -> int:
        return self.keys.shape[2]

    @property
    def score_dtype(self) -> torch.dtype | None:
        """None (the project's fp32 scoring) by default; in reference-exact mode the model dtype, in
        which the score functions run the authors' operations."""
        return self.values.dtype if self.reference_exact else None


@dataclass(frozen=True)
class Policy:
    """Base class. Subclasses are dataclasses whose fields are the method's parameters."""

    name: ClassVar[str]
    kind: ClassVar[PolicyKind] = "eviction"
    stochastic: ClassVar[bool] = False
    needs_queries: ClassVar[bool] = False
    needs_attention_weights: ClassVar[bool] = False
    description: ClassVar[str] = ""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or value is None:
                continue
            if isinstance(value, (int, float)) and (value < 0 or not math.isfinite(value)):
                raise InvalidParameter(f.name, "must be a finite number >= 0", value)

    def validate(self, budget: int, residual: int) -> None:
        """Check parameters that depend on the cache geometry. Raise InvalidParameter."""

    def resolved_params(self, budget: int | None) -> dict[str, Any]:
        """The parameters as they act at ``budget``: defaults that depend on the budget filled in."""
        return dataclasses.asdict(self)

    def score(self, ctx: EvictionContext) -> torch.Tensor:
        raise NotImplementedError(f"{self.name} does not score candidates")

    def reference_mode(self) -> str | None:
        """The authors' `eviction_mode` this policy reproduces (reference-exact), or None."""
        return None

    @classmethod
    def param_defaults(cls) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.default is not dataclasses.MISSING:
                out[f.name] = f.default
            elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
                out[f.name] = f.default_factory()  # type: ignore[misc]
        return out


_REGISTRY: dict[str, type[Policy]] = {}


def register(cls: type[Policy]) -> type[Policy]:
    if cls.name in _REGISTRY:
        raise ValueError(f"policy {cls.name!r} registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def policy_names() -> list[str]:
    return list(_REGISTRY)


def policy_class(name: str) -> type[Policy]:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise InvalidParameter("method", f"must be one of {', '.join(_REGISTRY)}", name) from None


def _coerce(cls: type[Policy], key: str, value: Any) -> Any:
    """Accept JSON/CLI-ish values (strings, ints for floats) and check the type against the default."""
    default = cls.param_defaults().get(key)
    f = next(f for f in dataclasses.fields(cls) if f.name == key)
    annotation = str(f.type)
    if isinstance(default, bool) or annotation == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
            return value.lower() in ("true", "1")
        raise InvalidParameter(key, "must be a boolean", value)
    if "int" in annotation and "float" not in annotation:
        if isinstance(value, bool):
            raise InvalidParameter(key, "must be an integer", value)
        if isinstance(value, str):
            try:
                value = int(value)
            except ValueError:
                raise InvalidParameter(key, "must be an integer", value) from None
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int) and value is not None:
            raise InvalidParameter(key, "must be an integer", value)
        return value
    if "float" in annotation:
        if isinstance(value, bool):
            raise InvalidParameter(key, "must be a number", value)
        try:
            return float(value)
        except (TypeError, ValueError):
            raise InvalidParameter(key, "must be a number", value) from None
    if "Literal" in annotation:
        allowed = getattr(cls, f"{key}_choices", None)
        if allowed is not None and value not in allowed:
            raise InvalidParameter(key, f"must be one of {', '.join(allowed)}", value)
    return value


def build_policy(name: str, params: dict[str, Any] | None = None) -> Policy:
    """Build a policy by registry name; unknown or ill-typed parameters raise InvalidParameter."""
    cls = policy_class(name)
    params = dict(params or {})
    known = {f.name for f in dataclasses.fields(cls)}
    for key in params:
        if key not in known:
            rule = f"is not a parameter of method {name!r}"
            rule += f" (parameters: {', '.join(sorted(known))})" if known else " (it takes none)"
            raise InvalidParameter(key, rule)
    coerced = {k: _coerce(cls, k, v) for k, v in params.items()}
    return cls(**coerced)


def describe_policies() -> list[dict[str, Any]]:
    return [
        {"name": cls.name, "kind": cls.kind, "params": cls.param_defaults(), "stochastic": cls.stochastic,
         "description": cls.description, "reference_mode": cls().reference_mode() if cls.kind == "eviction" else None}
        for cls in _REGISTRY.values()
    ]


def validate_geometry(budget: int | None, residual: int, *, kind: PolicyKind) -> None:
    """Rules on budget and residual shared by every method (the spec's constraints)."""
    if isinstance(residual, bool) or not isinstance(residual, int) or residual <= 0:
        raise InvalidParameter("residual", "must be a positive integer", residual)
    if kind == "none":
        return
    if budget is None:
        raise InvalidParameter("budget", "is required for eviction and selection methods")
    if isinstance(budget, bool) or not isinstance(budget, int) or budget <= 0:
        raise InvalidParameter("budget", "must be a positive integer", budget)
    if kind == "eviction":
        if budget <= residual:
            raise InvalidParameter("budget", f"must be greater than residual ({residual})", budget)
        if budget % residual != 0:
            raise InvalidParameter("budget", f"must be a multiple of residual ({residual})", budget)
