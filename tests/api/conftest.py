"""API fixtures: the app in Celery mode on a fresh PostgreSQL database and Redis db (no worker
consumes that queue, so submitted jobs only wait there), and a valid API token."""

from __future__ import annotations

import random
import uuid

import pytest

POSTGRES_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"


@pytest.fixture
def service_settings(postgres_url, redis_url, settings_env):
    return settings_env(VASE_DATABASE_URL=postgres_url, VASE_BROKER_URL=redis_url, VASE_API_TOKEN=None,
                        VASE_REQUIRE_TOKEN_FOR_READS=None, VASE_ALLOW_LOCAL_TASKS=None)


@pytest.fixture
def client(service_settings):
    from fastapi.testclient import TestClient

    from api.app import create_app

    with TestClient(create_app(service_settings)) as c:
        yield c


@pytest.fixture
def store(client):
    return client.app.state.service.store


@pytest.fixture
def token(store):
    return store.create_token("tester")


@pytest.fixture
def auth(token):
    return {"Authorization": f"Bearer {token}"}


SMALL_JOB = {
    "task": "arith-chain", "limit": 1, "methods": [{"name": "full"}, {"name": "vase", "params": {"n_large": 16}}],
    "budgets": [64], "residual": 16, "samples": 1, "max_new_tokens": 96,
}


@pytest.fixture(scope="module")
def module_app():
    """One app per test module (Celery mode, its own database and Redis db; no worker), for tests that
    only read or are refused: they need no fresh database each."""
    import psycopg
    import redis
    from psycopg import sql

    from api.app import create_app
    from vase.config import Settings

    name = f"vase_test_{uuid.uuid4().hex[:12]}"
    broker = f"redis://127.0.0.1:6379/{random.randint(1, 15)}"
    with psycopg.connect(POSTGRES_ADMIN_DSN, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    app = create_app(Settings(database_url=f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}", broker_url=broker))
    service = app.state.service
    service.start()
    app.state.test_token = service.store.create_token("tester")
    try:
        yield app
    finally:
        service.stop()
        r = redis.Redis.from_url(broker)
        for key in [*r.scan_iter("vase*"), *r.scan_iter("_kombu*")]:
            r.delete(key)
        r.close()
        with psycopg.connect(POSTGRES_ADMIN_DSN, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
