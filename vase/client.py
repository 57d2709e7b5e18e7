"""The one HTTP client of the vase API: ``vase submit`` and the dashboard both go through it.

    from vase.client import Client
    with Client() as api:                  # VASE_API_URL, bearer VASE_API_TOKEN
        job = api.submit({"task": "arith-chain", "limit": 1})
        job = api.wait(job, poll=2.0)
        rows = api.results(job["id"])["rows"]

It relies on the API's one error format (``api/errors.py``, ``ErrorOut`` in its OpenAPI schema):
every error answer is ``{"error": code, "message": text, "errors": [{"field", "location", "rule",
"value"}]}``. An error answer raises :class:`ApiError` carrying those; no answer at all (refused,
timed out) raises :class:`ApiUnreachable`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx

from .config import get_settings
from .store.models import TERMINAL_STATUSES


class ApiUnreachable(Exception):
    """The API did not answer (connection refused, timed out, connection broken)."""

    def __init__(self, base_url: str, reason: str):
        self.base_url, self.reason = base_url, reason
        super().__init__(f"cannot reach the API at {base_url} ({reason})")


class ApiError(Exception):
    """The API answered with an error (``api/errors.py``): its status, code, message and, for
    invalid input, ``errors`` naming each field (a body path such as ``methods[1].params.n_large``)
    and the rule it broke."""

    def __init__(self, status: int, code: str, message: str, errors: list[dict[str, Any]] | None = None):
        self.status, self.code, self.message, self.errors = status, code, message, list(errors or [])
        super().__init__(f"the API answered {status}: {message}")

    @classmethod
    def from_body(cls, status: int, body: Any) -> ApiError:
        """From an error body; a body that is not the API's (a proxy's page, a crash's plain text)
        keeps its text as the message."""
        if isinstance(body, Mapping) and "message" in body:
            return cls(status, str(body.get("error") or "error"), str(body["message"]), body.get("errors") or [])
        return cls(status, "error", str(body)[:500])

    @property
    def unauthorized(self) -> bool:
        return self.status in (401, 403)


class Client:
    """The API at ``base_url`` (default ``VASE_API_URL``) with a bearer ``token`` (default
    ``VASE_API_TOKEN``). Use it as a context manager, or call :meth:`close`."""

    def __init__(self, base_url: str | None = None, token: str | None = None, *, timeout: float = 30.0):
        settings = get_settings()
        self.base_url = (base_url or settings.api_url).rstrip("/")
        token = token or settings.api_token
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.ConnectError as exc:
            raise ApiUnreachable(self.base_url, "connection refused") from exc
        except httpx.TimeoutException as exc:
            raise ApiUnreachable(self.base_url, "it did not answer in time") from exc
        except httpx.HTTPError as exc:
            raise ApiUnreachable(self.base_url, str(exc) or type(exc).__name__) from exc
        try:
            body = response.json()
        except ValueError:
            body = response.text
        if response.status_code >= 400:
            raise ApiError.from_body(response.status_code, body)
        if isinstance(body, str):
            raise ApiError(response.status_code, "not_json", f"{method} {path} answered with something that is not JSON")
        return body

    # -- catalog ----------------------------------------------------------------------------------
    def methods(self) -> list[dict[str, Any]]:
        """``GET /v1/methods``: [{name, kind, stochastic, description, params: {name: default}}]."""
        return self._request("GET", "/v1/methods")

    def tasks(self) -> list[dict[str, Any]]:
        """``GET /v1/tasks``: [{name, offline, size, description}]."""
        return self._request("GET", "/v1/tasks")

    # -- jobs -------------------------------------------------------------------------------------
    def submit(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """``POST /v1/jobs``: the stored job (``JobOut``)."""
        return self._request("POST", "/v1/jobs", json=dict(body))

    def job(self, job_id: str) -> dict[str, Any]:
        return self._request("GET", f"/v1/jobs/{job_id}")

    def cancel(self, job_id: str) -> dict[str, Any]:
        """``POST /v1/jobs/{id}/cancel``: the job after the request."""
        return self._request("POST", f"/v1/jobs/{job_id}/cancel")

    def results(self, job_id: str) -> dict[str, Any]:
        """``GET /v1/jobs/{id}/results``: {job_id, status, complete, rows}."""
        return self._request("GET", f"/v1/jobs/{job_id}/results")

    def wait(
        self,
        job: Mapping[str, Any],
        *,
        poll: float = 2.0,
        on_progress: Callable[[dict[str, Any]], None] | None = None,
        on_retry: Callable[[Exception], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> dict[str, Any]:
        """Poll the job every ``poll`` seconds until its status is terminal; returns it. An API
        that does not answer, or answers 503 (its database is down), is asked again."""
        job = dict(job)
        while job["status"] not in TERMINAL_STATUSES:
            sleep(poll)
            try:
                job = self.job(job["id"])
            except ApiUnreachable as exc:
                if on_retry:
                    on_retry(exc)
                continue
            except ApiError as exc:
                if exc.status != 503:
                    raise
                continue
            if on_progress:
                on_progress(job)
        return job


__all__ = ["ApiError", "ApiUnreachable", "Client"]
