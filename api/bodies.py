"""Request bodies are JSON, decoded strictly before any model sees them.

``json.loads`` accepts what JSON does not (``NaN``, ``Infinity``, numbers that overflow to
infinity such as ``1e400``) and what cannot be stored or sent back (lone surrogates such as
``"\\ud800"``, in keys or values). A route of :class:`JsonBodyRoute` refuses them, and a body in
another content type, with the API's one error format (:mod:`api.errors`) naming the field, before
FastAPI validates the body.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute

from .errors import ApiError, field_error, safe_text

#: The deepest nesting a body may have (a job needs 4 levels: methods[i].params.name).
MAX_DEPTH = 32
JSON_HINT = "send the body as JSON with `Content-Type: application/json`"

class _NotFinite(str):
    """What ``NaN``, ``Infinity``, ``-Infinity`` or an overflowing number decodes to: its text, until
    :func:`check_values` reports it."""


def _float(text: str) -> float | _NotFinite:
    value = float(text)
    return value if math.isfinite(value) else _NotFinite(text)


def _is_json(content_type: str | None) -> bool:
    media = (content_type or "").partition(";")[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


def _has_surrogate(text: str) -> bool:
    return not text.isascii() and any("\ud800" <= ch <= "\udfff" for ch in text)


def _problem(value: Any) -> str | None:
    """The rule ``value`` breaks (a scalar, or a key), or None."""
    if isinstance(value, _NotFinite):
        if value.lstrip("-") in ("NaN", "Infinity"):
            return "must be a finite number (JSON has no NaN or Infinity)"
        return "must be a finite number (this one overflows a 64-bit float)"
    if isinstance(value, str) and _has_surrogate(value):
        return "must be valid Unicode (it holds a lone surrogate such as \\ud800)"
    return None


def _join(path: str, part: str | int) -> str:
    if isinstance(part, int):
        return f"{path}[{part}]"
    return f"{path}.{part}" if path else part


def check_values(document: Any) -> None:
    """Raise a 422 naming the first field whose value (or key) JSON cannot carry back, or whose
    nesting is deeper than ``MAX_DEPTH``."""
    stack: list[tuple[str, Any, int]] = [("", document, 0)]
    while stack:
        path, value, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise _invalid(path or "body", f"nests deeper than {MAX_DEPTH} levels")
        if isinstance(value, dict):
            for key, item in reversed(value.items()):
                here = _join(path, key)
                if (rule := _problem(key)) is not None:
                    raise _invalid(f"{here} (key)", rule)
                stack.append((here, item, depth + 1))
        elif isinstance(value, list):
            stack.extend((_join(path, i), item, depth + 1) for i, item in reversed(list(enumerate(value))))
        elif (rule := _problem(value)) is not None:
            raise _invalid(path or "body", rule, value)


def _invalid(field: str, rule: str, value: Any = None) -> ApiError:
    field = safe_text(field)
    return ApiError(422, f"{field}: {rule}", errors=[field_error(field, rule, value)])


def decode(body: bytes) -> Any:
    """The JSON document ``body`` holds; an ApiError (422) names what is wrong with it."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _invalid("body", f"is not valid UTF-8 (byte {exc.start})") from None
    try:
        document = json.loads(text, parse_constant=_NotFinite, parse_float=_float)
    except json.JSONDecodeError as exc:
        raise _invalid("body", f"is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from None
    except ValueError:  # an integer of more digits than Python converts (sys.get_int_max_str_digits)
        raise _invalid("body", "is not valid JSON here (it holds a number with too many digits)") from None
    except RecursionError:
        raise _invalid("body", f"nests deeper than {MAX_DEPTH} levels") from None
    check_values(document)
    return document


class JsonBodyRequest(Request):
    """A request whose ``json()`` is :func:`decode` (cached: FastAPI reads it again)."""

    _document: Any = None
    _decoded = False

    async def json(self) -> Any:
        if not self._decoded:
            self._document = decode(await self.body())
            self._decoded = True
        return self._document


class JsonBodyRoute(APIRoute):
    """A route whose body, if it declares one, must be strict JSON sent as ``application/json``:
    anything else is refused here, with the API's error format, before FastAPI parses it."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()
        if self.body_field is None:
            return handle

        async def route(request: Request) -> Response:
            request = JsonBodyRequest(request.scope, request.receive)
            if await request.body():
                if not _is_json(request.headers.get("content-type")):
                    sent = safe_text(request.headers.get("content-type") or "none")
                    raise ApiError(415, f"the body's content type is {sent!r}: {JSON_HINT}")
                await request.json()  # a 422 here names the field; FastAPI reuses the document
            return await handle(request)

        return route


__all__ = ["JSON_HINT", "MAX_DEPTH", "JsonBodyRequest", "JsonBodyRoute", "check_values", "decode"]
