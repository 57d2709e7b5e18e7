"""Naming a cache method with its parameters, as people type and read it.

- ``vase:n_large=16,smoothing=false`` is a method with parameters (:class:`MethodSpec`,
  :func:`parse_methods`); ``--param n_large=16`` (CLI) and the dashboard's parameter boxes give
  ``NAME=VALUE`` pairs or bare values. Values are JSON when they parse (``16``, ``true``,
  ``null``), else text: :func:`parse_value`, :func:`parse_assignments`.
- A method's label is ``name`` or ``name:k=v,...`` with the parameters sorted by name:
  :func:`format_method`; :func:`method_label` lists only the parameters that differ from the
  method's defaults (tables, charts, the API's result rows).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .policies import InvalidParameter, policy_class


def parse_value(raw: str) -> Any:
    """A parameter value as typed: JSON when it parses (``16``, ``true``, ``"x"``), else the text."""
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def parse_assignments(pairs: Iterable[str], *, param: str, context: str = "") -> dict[str, Any]:
    """``["n_large=16", "smoothing=false"]`` -> ``{"n_large": 16, "smoothing": False}``.

    A piece without ``=`` (or with nothing before it) raises :class:`InvalidParameter` naming
    ``param``; ``context`` (e.g. the whole method text) is quoted in the message."""
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            where = f" in {context!r}" if context else ""
            raise InvalidParameter(param, f"expected NAME=VALUE, got {pair!r}{where}")
        params[key] = parse_value(raw)
    return params


def format_method(name: str, params: Mapping[str, Any] | None = None) -> str:
    """``vase`` or ``vase:n_large=16,smoothing=False`` (parameters sorted by name)."""
    if not params:
        return name
    return name + ":" + ",".join(f"{k}={v}" for k, v in sorted(params.items()))


def method_label(name: str, params: Mapping[str, Any] | None = None) -> str:
    """:func:`format_method` with only the parameters that differ from the method's defaults (all
    of them for a method the registry does not know)."""
    try:
        defaults = policy_class(name).param_defaults()
    except InvalidParameter:
        defaults = {}
    missing = object()
    return format_method(name, {k: v for k, v in (params or {}).items() if defaults.get(k, missing) != v})


@dataclass(frozen=True)
class MethodSpec:
    name: str
    params: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> MethodSpec:
        """`vase`, or `vase:n_large=16,smoothing=false` (values parsed as JSON when they parse)."""
        name, _, rest = text.strip().partition(":")
        pairs = filter(None, (p.strip() for p in rest.split(",")))
        return cls(name, parse_assignments(pairs, param="methods", context=text))

    @property
    def label(self) -> str:
        return format_method(self.name, self.params)


def parse_methods(text: str) -> list[MethodSpec]:
    """`full,vase:n_large=16,smoothing=false,snapkv` → three methods (or separate them with ';').

    A comma-separated piece that is a bare NAME=VALUE belongs to the method before it.
    """
    pieces: list[str] = []
    for piece in (p.strip() for p in text.replace(";", ",").split(",")):
        if not piece:
            continue
        if "=" in piece and ":" not in piece:
            if not pieces:
                raise InvalidParameter("methods", f"parameter {piece!r} comes before any method")
            pieces[-1] += ("," if ":" in pieces[-1] else ":") + piece
        else:
            pieces.append(piece)
    return [MethodSpec.parse(p) for p in pieces]


__all__ = ["MethodSpec", "format_method", "method_label", "parse_assignments", "parse_methods", "parse_value"]
