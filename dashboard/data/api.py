"""The API, for the Jobs page: the methods and tasks a job may name, and submitting and cancelling
jobs. It goes through :class:`vase.client.Client` (``settings.api_url``, bearer
``settings.api_token``) and turns the API's one error format into messages for the page: field
errors are placed next to the form fields they name."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import streamlit as st

from vase.client import ApiError, ApiUnreachable, Client
from vase.methods import parse_value
from vase.spec import GenerationSpec, JobSpec

from .base import ApiUnavailable, DashboardError, api_url, clear_caches

API_TIMEOUT_S = 10.0

#: Fields of the job form, named as in the API's job body (``vase.spec.JobSpec``; the sampling
#: fields live under ``generation`` there): errors for them are shown next to the field.
FORM_FIELDS = (*JobSpec.model_fields, *GenerationSpec.model_fields)


@dataclass
class SubmitResult:
    ok: bool
    job_id: str | None = None
    status_code: int | None = None
    field_errors: dict[str, str] = field(default_factory=dict)  # form field -> message
    message: str = ""  # errors that name no field (or a summary)


def _unreachable(error: ApiUnreachable) -> ApiUnavailable:
    return ApiUnavailable(
        f"The vase API at {api_url()} is not reachable ({error.reason}). Start it (`vase serve`, or the compose "
        "stack) or set VASE_API_URL. Results and jobs already in the database are still shown."
    )


def _call(request: Callable[[Client], Any]) -> Any:
    """``request(client)`` on a client of the configured API; no answer raises
    :class:`ApiUnavailable`, an error answer the client's :class:`ApiError`."""
    try:
        with Client(api_url(), timeout=API_TIMEOUT_S) as api:
            return request(api)
    except ApiUnreachable as error:
        raise _unreachable(error) from error


def _read(path: str, request: Callable[[Client], Any]) -> Any:
    try:
        return _call(request)
    except ApiError as error:
        if error.unauthorized:
            raise ApiUnavailable(
                f"The API at {api_url()} refused the request ({error.status}): set VASE_API_TOKEN to a valid token."
            ) from error
        raise ApiUnavailable(f"The API answered {error.status} to GET {path}: {error.message}") from error


@st.cache_data(ttl=60, show_spinner=False, max_entries=8)
def _api_methods(base: str) -> list[dict[str, Any]]:
    return [
        {"name": m["name"], "kind": m["kind"], "params": dict(m["params"]), "description": m["description"]}
        for m in _read("/v1/methods", Client.methods)
    ]


def api_methods() -> list[dict[str, Any]]:
    """``GET /v1/methods``: [{name, kind, params (defaults), description}] (raises ApiUnavailable)."""
    return _api_methods(api_url())


@st.cache_data(ttl=60, show_spinner=False, max_entries=8)
def _api_tasks(base: str) -> list[dict[str, Any]]:
    return [
        {"name": t["name"], "offline": t["offline"], "size": t["size"], "description": t["description"]}
        for t in _read("/v1/tasks", Client.tasks)
    ]


def api_tasks() -> list[dict[str, Any]]:
    """``GET /v1/tasks``: [{name, offline, size, description}] (raises ApiUnavailable)."""
    return _api_tasks(api_url())


def api_status() -> tuple[bool, str]:
    """(reachable, message) for the API; never raises."""
    try:
        methods = api_methods()
    except DashboardError as error:
        return False, str(error)
    return True, f"API at {api_url()}: {len(methods)} methods available."


def _form_field(path: str) -> tuple[str, str | None]:
    """(form field, "method index:param" or None) for an error's body path: ``budgets[0]`` ->
    budgets, ``generation.temperature`` -> temperature, ``methods[1].params.n_large`` -> methods
    with ``1:n_large``."""
    parts = [p for p in re.split(r"[.\[\]]+", path) if p]
    if not parts:
        return "", None
    if parts[0] == "generation" and len(parts) > 1:
        parts = parts[1:]
    if parts[0] == "methods" and len(parts) >= 4 and parts[2] == "params":
        return "methods", f"{parts[1]}:{parts[3]}"
    return parts[0], None


def form_errors(error: ApiError, payload: Mapping[str, Any]) -> SubmitResult:
    """The API's field errors placed on the job form: ``field_errors[form field]``, and for a
    method's parameter ``field_errors["param:<method>:<param>"]``; the rest in ``message``."""
    result = SubmitResult(ok=False, status_code=error.status)
    methods = payload.get("methods") or []
    for item in error.errors:
        where, rule = str(item.get("field") or ""), str(item.get("rule") or "is invalid")
        name, param = _form_field(where)
        if param is not None:
            index, key = param.split(":", 1)
            mname = methods[int(index)]["name"] if index.isdigit() and int(index) < len(methods) else index
            result.field_errors.setdefault(f"param:{mname}:{key}", rule)
            result.field_errors.setdefault("methods", f"{mname}: {key}: {rule}")
        elif name in FORM_FIELDS:
            result.field_errors.setdefault(name, rule)
        else:
            result.message = (result.message + "; " if result.message else "") + (f"{where}: {rule}" if where else rule)
    if not error.errors:
        result.message = error.message
    if not result.field_errors and not result.message:
        result.message = f"The API rejected the job ({error.status})."
    return result


def submit_job(payload: dict[str, Any]) -> SubmitResult:
    """``POST /v1/jobs`` with a job body (``vase.spec.JobSpec``: task, model, limit, methods
    [{name, params}], budgets, residual, samples, seeds, generation {do_sample, temperature, top_p,
    top_k}, max_new_tokens, fidelity, trace, ...). Created -> ok with the job id; 422 (or 400, 409)
    -> messages mapped to form fields (:func:`form_errors`); unreachable -> :class:`ApiUnavailable`."""
    body = {k: v for k, v in payload.items() if v is not None}
    try:
        job = _call(lambda api: api.submit(body))
    except ApiError as error:
        if error.unauthorized:
            return SubmitResult(
                ok=False,
                status_code=error.status,
                message="The API refused the job: a valid API token is required (set VASE_API_TOKEN).",
            )
        if error.status in (400, 409, 422):
            return form_errors(error, body)
        return SubmitResult(
            ok=False,
            status_code=error.status,
            message=f"The API failed to create the job ({error.status}): {error.message}",
        )
    clear_caches()
    return SubmitResult(ok=True, job_id=job["id"], status_code=201)


def cancel_job(job_id: str) -> str:
    """``POST /v1/jobs/{id}/cancel``; returns the job's status after the request (raises
    :class:`ApiUnavailable` when the API cannot be reached, :class:`DashboardError` when it refuses)."""
    try:
        job = _call(lambda api: api.cancel(job_id))
    except ApiError as error:
        raise DashboardError(f"The API did not cancel job {job_id[:8]} ({error.status}): {error.message}") from error
    clear_caches()
    return str(job.get("status") or "cancel requested")


def parse_budgets(text: str) -> list[int]:
    """``"64, 128 256"`` -> [64, 128, 256] (raises ValueError naming the bad item)."""
    out = []
    for item in re.split(r"[\s,;]+", text.strip()):
        if not item:
            continue
        try:
            out.append(int(item))
        except ValueError:
            raise ValueError(f"{item!r} is not an integer") from None
    return out


def parse_param(raw: str) -> Any:
    """A method parameter typed in a text box: JSON when it parses (``16``, ``true``), else the text;
    empty: None (the method's default)."""
    raw = raw.strip()
    return None if raw == "" else parse_value(raw)
