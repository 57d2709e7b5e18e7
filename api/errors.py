"""Every error the API returns has one shape (``ErrorOut``): a code, a message, and per-field
errors for invalid requests. A database that is down is a 503, never a 500.

An error echoes what it refused, so it is made JSON-safe first (:func:`_body`): a non-finite
number is echoed as its name (``"NaN"``), a string with lone surrogates with them escaped
(``"\\ud800"``); a body that cannot be encoded would otherwise turn a 422 into a 500."""

from __future__ import annotations

import logging
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from vase.jobs import JobInvalid
from vase.store import StoreUnavailable

log = logging.getLogger("vase.api")

_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
          406: "not_acceptable", 409: "conflict", 413: "too_large", 415: "unsupported_media_type",
          422: "invalid_request", 503: "unavailable"}

_RULES = {
    "missing": "is required",
    "extra_forbidden": "is not a field of this request (see the OpenAPI schema at /openapi.json)",
    "json_invalid": "is not valid JSON",
    "model_attributes_type": "must be a JSON object",
    "dict_type": "must be a JSON object",
}


class ApiError(Exception):
    """An error with a status code, a code and a message (raised by the routers)."""

    def __init__(self, status: int, message: str, *, code: str | None = None, errors: list[dict] | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message = status, message
        self.code = code or _CODES.get(status, "error")
        self.errors = errors or []
        self.headers = headers


def not_found(what: str) -> ApiError:
    return ApiError(404, f"{what} does not exist")


def field_error(field: str, rule: str, value: Any = None, *, location: str = "body") -> dict[str, Any]:
    """One entry of ``errors`` (``FieldError``)."""
    return {"field": field, "location": location, "rule": rule, "value": value}


def invalid(field: str, rule: str, *, location: str = "query", value: Any = None) -> ApiError:
    return ApiError(422, f"{field}: {rule}", errors=[field_error(field, rule, value, location=location)])


def safe_text(text: str) -> str:
    """``text`` as UTF-8 can carry it: lone surrogates escaped (``\\ud800``)."""
    if text.isascii():
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _path(loc: tuple[Any, ...]) -> tuple[str, str]:
    location = str(loc[0]) if loc and loc[0] in ("body", "query", "path", "header") else "body"
    parts = list(loc[1:] if loc and loc[0] in ("body", "query", "path", "header") else loc)
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part == "[key]":
            out += " (key)"
        else:
            out += ("." if out else "") + str(part)
    return location, out or location


def _plain_value(value: Any) -> Any:
    """The refused value as the error echoes it: a JSON scalar (non-finite numbers by name, strings
    cut at 200 characters, lone surrogates escaped); objects and lists are not echoed back."""
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value).replace("inf", "Infinity").replace("nan", "NaN")
    if isinstance(value, str):
        return safe_text(value if len(value) <= 200 else value[:200] + "...")
    return None


def _body(status: int, code: str, message: str, errors: list[dict] | None = None) -> dict[str, Any]:
    """The error document (``ErrorOut``), every string and echoed value made JSON-safe."""
    return {"error": code, "message": safe_text(message), "errors": [
        {"field": safe_text(str(e["field"])), "location": e.get("location", "body"), "rule": safe_text(str(e["rule"])),
         "value": _plain_value(e.get("value"))} for e in errors or ()]}


def install(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = []
        for e in exc.errors():
            location, field = _path(tuple(e.get("loc") or ()))
            rule = _RULES.get(e.get("type", ""), e.get("msg", "is invalid"))
            rule = rule.removeprefix("Value error, ")
            errors.append(field_error(field, rule, e.get("input") if e.get("type") != "missing" else None,
                                      location=location))
        message = "; ".join(f"{e['field']}: {e['rule']}" for e in errors) or "invalid request"
        return JSONResponse(_body(422, "invalid_request", message, errors), status_code=422)

    @app.exception_handler(JobInvalid)
    async def _job_invalid(_request: Request, exc: JobInvalid) -> JSONResponse:
        return JSONResponse(_body(422, "invalid_request", str(exc), [field_error(exc.field, exc.rule, exc.value)]),
                            status_code=422)

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(_body(exc.status, exc.code, exc.message, exc.errors), status_code=exc.status,
                            headers=exc.headers)

    @app.exception_handler(StoreUnavailable)
    async def _store_down(_request: Request, exc: StoreUnavailable) -> JSONResponse:
        log.warning("503: %s", exc)
        return JSONResponse(
            _body(503, "database_unavailable",
                  "the results database is unavailable; nothing was changed, try again shortly"),
            status_code=503, headers={"Retry-After": "5"},
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400 and "parsing the body" in str(exc.detail):
            rule = "is not valid JSON (UTF-8)"
            return JSONResponse(_body(422, "invalid_request", f"body: {rule}", [field_error("body", rule)]),
                                status_code=422)
        code = _CODES.get(exc.status_code, "error")
        message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
        if exc.status_code == 404 and message == "Not Found":
            message = "no such endpoint (see /docs)"
        return JSONResponse(_body(exc.status_code, code, message), status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))
