"""POST /v1/jobs with bodies JSON cannot carry (non-finite numbers, lone surrogates, invalid UTF-8,
deep nesting), bodies that are not a JSON object, and bodies in another content type: each is a
clean 4xx in the API's error format naming the field, against the real API with PostgreSQL and
Redis, and nothing is stored (jobs, runs, samples, broker keys) for any of them."""

from __future__ import annotations

import json

import pytest
import redis

from .conftest import SMALL_JOB

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


def body(**changes) -> bytes:
    """SMALL_JOB with ``changes``, as JSON text where each change is spliced in verbatim (so that it
    may hold what ``json.dumps`` would refuse to write: NaN, \\ud800, ...)."""
    fields = {k: json.dumps(v) for k, v in SMALL_JOB.items()}
    fields.update(changes)
    return ("{" + ",".join(f"{json.dumps(k) if not k.startswith('RAW:') else k[4:]}:{v}"
                           for k, v in fields.items()) + "}").encode()


FINITE = "must be a finite number"
UNICODE = "must be valid Unicode"
JSON = "application/json"

# (id, raw body, content type, status, field named, words of the rule)
CASES = [
    # the cases
    ("NaN temperature", body(generation='{"temperature":NaN}'), JSON, 422, "generation.temperature", FINITE),
    ("Infinity budget", body(budgets="[Infinity]"), JSON, 422, "budgets[0]", FINITE),
    ("1e400 limit", body(limit="1e400"), JSON, 422, "limit", FINITE),
    ("lone surrogate task", body(task='"\\ud800"'), JSON, 422, "task", UNICODE),
    ("text/plain", json.dumps(SMALL_JOB).encode(), "text/plain", 415, None, "application/json"),
    # more of the same kinds
    ("-Infinity residual", body(residual="-Infinity"), JSON, 422, "residual", FINITE),
    ("NaN method param", body(methods='[{"name":"vase","params":{"n_large":NaN}}]'), JSON, 422,
     "methods[0].params.n_large", FINITE),
    ("-1e999 top_p", body(generation='{"top_p":-1e999}'), JSON, 422, "generation.top_p", FINITE),
    ("surrogate in a key", body(**{'RAW:"\\udc00"': "1"}), JSON, 422, "\\udc00 (key)", UNICODE),
    ("surrogate in a param name", body(methods='[{"name":"vase","params":{"n\\ud800":1}}]'), JSON, 422,
     "methods[0].params.n\\ud800 (key)", UNICODE),
    ("surrogate in a param value", body(methods='[{"name":"vase","params":{"metric":"\\udfff"}}]'), JSON, 422,
     "methods[0].params.metric", UNICODE),
    ("surrogate in the model", body(model='"Qwen/\\ud83d"'), JSON, 422, "model", UNICODE),
    ("deep array", ("[" * 100_000 + "]" * 100_000).encode(), JSON, 422, "body", "nests deeper"),
    ("deep object", ('{"a":' * 40 + "1" + "}" * 40).encode(), JSON, 422, ".".join(["a"] * 33), "nests deeper"),
    ("invalid UTF-8", b'{"task":"arith\xff\xfechain"}', JSON, 422, "body", "not valid UTF-8"),
    ("encoded surrogate", b'{"task":"\xed\xa0\x80"}', JSON, 422, "body", "not valid UTF-8"),
    ("not JSON", b"{task: arith-chain}", JSON, 422, "body", "not valid JSON"),
    ("integer of 5000 digits", body(limit="9" * 5000), JSON, 422, "body", "too many digits"),
    ("empty body", b"", JSON, 422, "body", "is required"),
    ("JSON array body", b"[1, 2]", JSON, 422, "body", "must be a JSON object"),
    ("JSON string body", b'"arith-chain"', JSON, 422, "body", "must be a JSON object"),
    ("JSON null body", b"null", JSON, 422, "body", "must be a JSON object"),
    ("no content type", json.dumps(SMALL_JOB).encode(), None, 415, None, "application/json"),
    ("form content type", b"task=arith-chain", "application/x-www-form-urlencoded", 415, None, "application/json"),
]


def counts(store, redis_url) -> tuple[int, int, int, list[bytes]]:
    r = redis.Redis.from_url(redis_url)
    try:
        keys = sorted(k for k in r.keys("*") if not k.startswith(b"_kombu"))
    finally:
        r.close()
    return store.list_jobs()[1], len(store.list_runs()), store.count_samples(), keys


@pytest.fixture(scope="module")
def api(module_app):
    from fastapi.testclient import TestClient

    service = module_app.state.service
    with TestClient(module_app, raise_server_exceptions=False) as client:
        yield client, service.store, {"Authorization": f"Bearer {module_app.state.test_token}"}, \
            service.settings.broker_url


@pytest.mark.parametrize("name,raw,content_type,status,field,rule", CASES, ids=[c[0] for c in CASES])
def test_bad_body_is_a_clean_4xx_and_nothing_is_stored(api, name, raw, content_type, status, field, rule):
    client, store, auth, redis_url = api
    before = counts(store, redis_url)
    headers = {**auth, **({"Content-Type": content_type} if content_type else {})}
    r = client.post("/v1/jobs", content=raw, headers=headers)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    out = r.json()  # the body is valid JSON, whatever the request held
    assert set(out) == {"error", "message", "errors"}
    if field is None:
        assert rule in out["message"], out
    else:
        assert out["error"] == "invalid_request"
        fields = [e["field"] for e in out["errors"]]
        assert field in fields, out
        assert rule in out["errors"][fields.index(field)]["rule"], out
        assert f"{field}: " in out["message"]
    assert counts(store, redis_url) == before == (0, 0, 0, [])


def test_a_json_media_type_with_parameters_is_accepted(client, auth):
    r = client.post("/v1/jobs", content=json.dumps(SMALL_JOB).encode(),
                    headers={**auth, "Content-Type": "application/json; charset=utf-8"})
    assert r.status_code == 201, r.text


def test_echoed_values_are_json_safe(api):
    """A refused value is echoed back: non-finite numbers by name, lone surrogates escaped."""
    client, _store, auth, _redis_url = api
    r = client.post("/v1/jobs", content=body(generation='{"temperature":NaN}'),
                    headers={**auth, "Content-Type": JSON})
    assert r.json()["errors"][0]["value"] == "NaN"
    r = client.post("/v1/jobs", content=body(task='"a\\ud800b"'), headers={**auth, "Content-Type": JSON})
    assert r.json()["errors"][0]["value"] == "a\\ud800b"
