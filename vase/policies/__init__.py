"""Cache policies: one small class per method family, built by name from a registry."""

from . import attention, cur, heuristic, magnitude, none, quest, vase  # noqa: F401  (registration)
from .base import (
    EvictionContext,
    InvalidParameter,
    Policy,
    build_policy,
    describe_policies,
    policy_class,
    policy_names,
    validate_geometry,
)

__all__ = [
    "EvictionContext",
    "InvalidParameter",
    "Policy",
    "build_policy",
    "describe_policies",
    "policy_class",
    "policy_names",
    "validate_geometry",
]
