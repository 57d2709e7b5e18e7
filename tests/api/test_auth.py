"""Bearer tokens: made and revoked with `vase token`, stored hashed; writes need one."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import SMALL_JOB

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

VASE = str(Path(sys.executable).with_name("vase"))
ROOT = Path(__file__).resolve().parents[2]


def vase(*args, database_url):
    env = {**os.environ, "VASE_DATABASE_URL": database_url, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([VASE, *args], capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)


def test_writes_need_a_valid_token(client, store, service_settings):
    for headers in ({}, {"Authorization": "Bearer vase_not-a-token"}, {"Authorization": "Basic dXNlcjpwdw=="}):
        r = client.post("/v1/jobs", json=SMALL_JOB, headers=headers)
        assert r.status_code == 401, (headers, r.text)
        assert r.headers["www-authenticate"] == "Bearer"
        assert r.json()["error"] == "unauthorized"
    assert client.post("/v1/jobs/0123456789abcdef0123456789abcdef/cancel").status_code == 401
    assert store.list_jobs()[1] == 0
    # reads are open by default
    assert client.get("/v1/jobs").status_code == 200


def test_token_cli_create_use_revoke(client, store, service_settings):
    client.app.state.service.settings.token_cache_s = 0  # every request looks its token up
    url = service_settings.database_url
    made = vase("token", "create", "alice", database_url=url)
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    assert token.startswith("vase_") and "\n" not in token
    # stored hashed, never in clear
    assert store.verify_token(token) == "alice"
    import psycopg

    with psycopg.connect(url.replace("+psycopg", "")) as conn:
        stored = conn.execute("SELECT token_hash FROM api_tokens WHERE name = 'alice'").fetchone()[0]
    assert stored == hashlib.sha256(token.encode()).hexdigest() and token not in stored

    headers = {"Authorization": f"Bearer {token}"}
    r = client.post("/v1/jobs", json=SMALL_JOB, headers=headers)
    assert r.status_code == 201 and r.json()["owner"] == "alice"
    duplicate = vase("token", "create", "alice", database_url=url)
    assert duplicate.returncode == 2 and "already exists" in duplicate.stderr

    revoked = vase("token", "revoke", "alice", database_url=url)
    assert revoked.returncode == 0, revoked.stderr
    r = client.post("/v1/jobs", json=SMALL_JOB, headers=headers)
    assert r.status_code == 401 and "revoked" in r.json()["message"]
    assert client.post(f"/v1/jobs/{store.list_jobs()[0][0]['id']}/cancel", headers=headers).status_code == 401
    assert store.list_jobs()[1] == 1
    again = vase("token", "revoke", "alice", database_url=url)
    assert again.returncode == 1 and "no active API token named 'alice'" in again.stderr
    listed = vase("token", "list", database_url=url)
    assert "alice" in listed.stdout and "revoked" in listed.stdout and token not in listed.stdout


def test_a_revoked_token_works_at_most_the_cache_time(client, store):
    """A verified token is trusted for VASE_TOKEN_CACHE_S seconds without a lookup: revoked, it is
    refused once that time has passed since it was verified."""
    ttl = 5.0
    client.app.state.service.settings.token_cache_s = ttl
    headers = {"Authorization": f"Bearer {store.create_token('bob')}"}
    asked = time.monotonic()
    assert client.post("/v1/jobs", json=SMALL_JOB, headers=headers).status_code == 201  # looked up, cached
    answered = time.monotonic()  # the token was verified between `asked` and `answered`
    assert store.revoke_token("bob")
    r = client.post("/v1/jobs", json=SMALL_JOB, headers=headers)
    assert time.monotonic() - asked < ttl, "too slow to see the cached token"
    assert r.status_code == 201  # still trusted: verified less than `ttl` seconds ago
    time.sleep(max(0.0, answered + ttl - time.monotonic()) + 0.1)
    r = client.post("/v1/jobs", json=SMALL_JOB, headers=headers)
    assert r.status_code == 401 and "revoked" in r.json()["message"]
    assert store.list_jobs()[1] == 2


def test_reads_can_require_a_token(client, auth):
    client.app.state.service.settings.require_token_for_reads = True
    for path in ("/v1/jobs", "/v1/methods", "/v1/tasks", "/v1/samples/1"):
        assert client.get(path).status_code == 401, path
    assert client.get("/v1/jobs", headers=auth).status_code == 200
    assert client.get("/healthz").status_code == 200


def test_the_configured_token_is_accepted(client):
    client.app.state.service.settings.api_token = "s3cret-from-the-environment"
    r = client.post("/v1/jobs", json=SMALL_JOB, headers={"Authorization": "Bearer s3cret-from-the-environment"})
    assert r.status_code == 201 and r.json()["owner"] == "api-token"
    assert client.post("/v1/jobs", json=SMALL_JOB, headers={"Authorization": "Bearer s3cret"}).status_code == 401
