"""Values on their way into the store: numpy, tuples and NaN made plain for JSON columns, sample
fields fitted to their columns, and the canonical JSON and hash that key a run."""

from __future__ import annotations

import hashlib
import json
import math
from datetime import datetime
from pathlib import Path
from typing import Any

from .models import Sample


def plain(value: Any) -> Any:
    """JSON-safe python values: numpy scalars/arrays, tuples, sets, NaN/inf (-> None), datetimes."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [plain(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    tolist = getattr(value, "tolist", None)  # numpy scalars and arrays, torch tensors
    if callable(tolist):
        return plain(tolist())
    item = getattr(value, "item", None)
    if callable(item):
        return plain(item())
    return str(value)


def json_serializer(value: Any) -> str:
    return json.dumps(plain(value), separators=(",", ":"), allow_nan=False)


SAMPLE_COLUMNS = {c.name for c in Sample.__table__.columns} - {"id", "run_id", "created_at"}
_FLOAT_COLUMNS = {c.name for c in Sample.__table__.columns if c.type.python_type is float}
_STRING_COLUMNS = {c.name for c in Sample.__table__.columns if c.type.python_type is str}
_INT_COLUMNS = {c.name for c in Sample.__table__.columns if c.type.python_type is int}
_BOOL_COLUMNS = {c.name for c in Sample.__table__.columns if c.type.python_type is bool}


def column_value(name: str, value: Any) -> Any:
    """A sample field value fit for its column (numpy -> python, NaN -> NULL, lists -> JSON text)."""
    if value is None:
        return None
    if name == "metrics":
        return plain(value)
    value = plain(value)
    if value is None:
        return None
    if name in _FLOAT_COLUMNS:
        value = float(value)
        return value if math.isfinite(value) else None
    if name in _INT_COLUMNS:
        return int(value)
    if name in _BOOL_COLUMNS:
        return bool(value)
    if name in _STRING_COLUMNS and not isinstance(value, str):
        return json.dumps(value) if isinstance(value, (list, dict)) else str(value)
    return value


def canonical_json(value: Any) -> str:
    """Deterministic JSON: sorted keys, no whitespace, numpy/tuples made plain, NaN as null."""
    return json.dumps(plain(value), sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def config_hash(config: dict[str, Any]) -> str:
    """sha256 hex of :func:`canonical_json` of ``config`` (a run's resume key: put everything that
    determines its results in it: model + revision, task + limit + dataset fingerprint, method,
    params, budget, residual, generation parameters, prompt template version)."""
    return hashlib.sha256(canonical_json(config).encode("utf-8")).hexdigest()
