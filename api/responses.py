"""Documented error responses, shared by the routers."""

from __future__ import annotations

from typing import Any

from .schemas import ErrorOut


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    text = {
        401: "No token, or an invalid or revoked one.",
        404: "No such object.",
        409: "The request conflicts with the object's state.",
        415: "The body is not sent as `application/json`.",
        422: "Invalid input: `errors` names each field and the rule it broke.",
        503: "The database (or broker) is unavailable; nothing was changed.",
    }
    return {code: {"model": ErrorOut, "description": text[code]} for code in codes}
