"""Fixtures of the dashboard tests.

- ``seeded_url``: a SQLite database filled by a real, small ``vase bench`` run on the embedded
  SmolLM2 (arith-chain, one problem; full cache, VaSE and SnapKV at budget 32; fidelity and full
  traces), made once per session.
- ``long_url``: a database holding one synthetic 32k-token sample with a full trace (30 layers x
  3 KV heads, budget 4096, residual 64) for the performance tests.
- ``dash_env``: points the dashboard (settings) at a database and at an API URL.
- ``api_server``: the real API (``api.app.create_app``) served by uvicorn on a loopback port in a
  thread, on its own temporary SQLite database, with a bearer token.
- ``app_test``: a Streamlit ``AppTest`` of ``dashboard/app.py``; ``page_of_sample``: its Sample or
  Cache explorer page on one sample.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from pathlib import Path

import pytest

APP = Path(__file__).resolve().parents[2] / "dashboard" / "app.py"
UNREACHABLE_API = "http://127.0.0.1:9"  # the discard port: nothing listens there
API_TOKEN = "dashboard-test-token"

# Outside a Streamlit server st.cache_* warns once per call; the tests call the query layer directly.
logging.getLogger("streamlit.runtime.caching.cache_data_api").setLevel(logging.ERROR)
logging.getLogger("streamlit.runtime.scriptrunner_utils.script_run_context").setLevel(logging.ERROR)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def seeded_url(tmp_path_factory, smollm2) -> str:
    from vase.bench import Bench
    from vase.methods import MethodSpec
    from vase.spec import JobSpec
    from vase.store import open_store

    reuse = os.environ.get("VASE_TEST_DASHBOARD_SEED")  # a developer's shortcut: a database seeded before
    if reuse:
        return reuse
    url = f"sqlite:///{tmp_path_factory.mktemp('dash-seed') / 'seed.sqlite'}"
    store = open_store(url)
    model, tokenizer = smollm2
    spec = JobSpec(
        task="arith-chain",
        limit=1,
        methods=[MethodSpec("full"), MethodSpec("vase", {"n_large": 8}), MethodSpec("snapkv")],
        budgets=[32],
        residual=8,
        max_new_tokens=48,
        fidelity=True,
        trace="full",
    )
    Bench(spec, store, model=model, tokenizer=tokenizer).execute()
    return url


@pytest.fixture(scope="session")
def long_url(tmp_path_factory) -> tuple[str, int]:
    from vase.store import open_store

    from .synth import store_long_sample

    url = f"sqlite:///{tmp_path_factory.mktemp('dash-long') / 'long.sqlite'}"
    sample_id = store_long_sample(open_store(url))
    return url, sample_id


@pytest.fixture
def dash_env(monkeypatch):
    """``dash_env(db_url, api_url=UNREACHABLE_API, token=None)``: settings for the dashboard."""
    from vase.config import get_settings

    def configure(db_url: str, api_url: str = UNREACHABLE_API, token: str | None = None) -> None:
        monkeypatch.setenv("VASE_DATABASE_URL", db_url)
        monkeypatch.setenv("VASE_API_URL", api_url)
        if token:
            monkeypatch.setenv("VASE_API_TOKEN", token)
        else:
            monkeypatch.delenv("VASE_API_TOKEN", raising=False)
        monkeypatch.delenv("VASE_BROKER_URL", raising=False)
        get_settings.cache_clear()
        from dashboard import data
        from dashboard.data import api

        data.clear_caches()
        api._api_methods.clear()
        api._api_tasks.clear()

    yield configure
    get_settings.cache_clear()


@pytest.fixture
def app_test():
    from streamlit.testing.v1 import AppTest

    def make(timeout: float = 60):
        return AppTest.from_file(str(APP), default_timeout=timeout)

    return make


@pytest.fixture
def page_of_sample(dash_env, app_test):
    """``page_of_sample(db_url, page, sample_id)``: the page (``"sample"``, ``"explorer"``) run on a
    sample of that database (``?sample=``), checked to render without an error."""

    def open_page(db_url: str, page: str, sample_id: int):
        dash_env(db_url)
        at = app_test()
        at.switch_page(f"views/{page}.py")
        at.query_params["sample"] = str(sample_id)
        at.run()
        assert not errors_of(at), errors_of(at)
        return at

    return open_page


@pytest.fixture(scope="module")
def api_server(tmp_path_factory):
    """(base URL, database URL) of the real API running in this process on a temporary database."""
    import uvicorn

    from api.app import create_app
    from vase.config import Settings

    db = f"sqlite:///{tmp_path_factory.mktemp('dash-api') / 'api.sqlite'}"
    settings = Settings(database_url=db, broker_url=None, api_token=API_TOKEN)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, name="dashboard-test-api", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            pytest.fail("the API server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}", db
    finally:
        server.should_exit = True
        thread.join(60)


def errors_of(at) -> list[str]:
    """Exceptions and unexpected-error boxes an AppTest run shows."""
    out = [e.value if hasattr(e, "value") else str(e) for e in at.exception]
    out += [e.value for e in at.error if "Something went wrong" in str(e.value)]
    return out
