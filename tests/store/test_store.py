"""The results store against SQLite (a temporary file) and the local PostgreSQL (a fresh database)."""

from __future__ import annotations

import hashlib
import math
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from datetime import timedelta
from itertools import combinations

import numpy as np
import pytest
from sqlalchemy import create_engine, text

from vase.store import (
    JOB_KEYS,
    RESULT_KEYS,
    DuplicateTokenName,
    Store,
    StoreUnavailable,
    canonical_json,
    config_hash,
    normalize_url,
    open_store,
)
from vase.store.models import Base, utcnow

POSTGRES_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
REPO = Path(__file__).resolve().parents[2]
POSTGRES_BASE = "postgresql://postgres@127.0.0.1:5432"  # plain scheme on purpose: the store rewrites it
HEAD_REVISION = "0002_flexible_grade"


# ------------------------------------------------------------------------------------------------
# fixtures
# ------------------------------------------------------------------------------------------------
def _create_pg_database() -> str:
    import psycopg
    from psycopg import sql

    name = f"vase_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES_ADMIN_DSN, autocommit=True, connect_timeout=5) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return name


def _drop_pg_database(name: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(POSTGRES_ADMIN_DSN, autocommit=True, connect_timeout=5) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(scope="session")
def pg_database():
    """One fresh PostgreSQL database for this test session (dropped at the end)."""
    name = _create_pg_database()
    try:
        yield f"{POSTGRES_BASE}/{name}"
    finally:
        _drop_pg_database(name)


@pytest.fixture(scope="session")
def pg_store(pg_database):
    store = Store(pg_database)
    store.migrate()
    yield store
    store.close()


@pytest.fixture
def fresh_url(request, tmp_path):
    """An empty database: a new SQLite file, or a new PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fresh.sqlite'}"
    else:
        name = _create_pg_database()
        try:
            yield f"{POSTGRES_BASE}/{name}"
        finally:
            _drop_pg_database(name)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request, tmp_path):
    """A migrated store. Postgres tests share one session database: they use fresh job ids/scopes."""
    if request.param == "sqlite":
        s = Store(tmp_path / "store.sqlite")
        s.migrate()
        yield s
        s.close()
    else:
        yield request.getfixturevalue("pg_store")


BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


def _run(store: Store, scope: str = "cli", config_hash: str | None = None, **fields) -> int:
    fields = {"task": "math500", "method": "vase_attnv", "model": "tiny", "budget": 256, "residual": 32,
              "params": {"n_large": 64}, "generation": {"temperature": 0.6, "seed": 0}, **fields}
    return store.get_or_create_run(scope, config_hash or uuid.uuid4().hex, **fields)


def _in_threads(n: int, fn):
    """Run fn(i) in n threads released together; returns the results (re-raises errors)."""
    barrier = threading.Barrier(n)
    results: list = [None] * n
    errors: list = []

    def target(i):
        try:
            barrier.wait()
            results[i] = fn(i)
        except BaseException as error:  # noqa: BLE001
            errors.append(error)

    threads = [threading.Thread(target=target, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results


# ------------------------------------------------------------------------------------------------
# migrations and connections
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fresh_url", BACKENDS, indirect=True)
def test_flexible_grade_migration_keeps_stored_samples(fresh_url):
    """0001 -> 0002 adds the flexible-verdict columns (NULL for samples stored before), which a
    re-grade then fills; the downgrade drops them and keeps the samples."""
    store = Store(fresh_url)
    store.migrate("0001_initial")
    engine = create_engine(store.url)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO runs (scope, config_hash, task, method, model, params, generation, fidelity, "
                          "trace_level, manifest, created_at) VALUES ('cli', 'h', 't', 'full', 'm', '{}', '{}', "
                          "false, 'off', '{}', CURRENT_TIMESTAMP)"))
        conn.execute(text("INSERT INTO samples (run_id, problem_id, sample_index, output, correct, created_at) "
                          "SELECT id, 'p', 0, 'The code of Chen is 4371.', false, CURRENT_TIMESTAMP FROM runs"))
    store.migrate()
    assert store.schema_revision() == HEAD_REVISION
    (sample,) = store.list_samples()
    assert sample["output"] == "The code of Chen is 4371." and sample["correct"] is False
    assert (sample["correct_flex"], sample["extracted_flex"], sample["flex_rule"]) == (None, None, None)
    assert store.update_sample_grade(sample["id"], correct_flex=True, extracted_flex="4371", flex_rule="last_number")
    row = store.results()[0]
    assert (row["accuracy"], row["accuracy_flex"], row["pass_at_k_flex"]) == (0.0, 1.0, {1: 1.0})

    from alembic import command
    from alembic.config import Config

    here = REPO / "vase" / "store"
    cfg = Config(str(here / "alembic.ini"))
    cfg.set_main_option("script_location", str(here / "migrations"))
    store.close()
    with engine.connect() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0001_initial")
        conn.commit()
    with engine.connect() as conn:
        cols = list(conn.execute(text("SELECT * FROM samples")).keys())
        assert "correct_flex" not in cols and "flex_rule" not in cols
        assert conn.execute(text("SELECT output FROM samples")).scalar() == "The code of Chen is 4371."
    engine.dispose()


@pytest.mark.parametrize("fresh_url", BACKENDS, indirect=True)
def test_migrations_create_the_models_schema(fresh_url):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    store = Store(fresh_url)
    assert store.schema_revision() is None
    # two processes migrating the empty database at once: the database lock serialises them
    code = "import sys; from vase.store import Store; Store(sys.argv[1]).migrate()"
    procs = [subprocess.Popen([sys.executable, "-c", code, fresh_url], cwd=REPO) for _ in range(2)]
    assert [p.wait(timeout=60) for p in procs] == [0, 0]
    # and threads of one process (Alembic itself is not thread-safe: the store serialises it)
    stores = [Store(fresh_url) for _ in range(3)]
    _in_threads(3, lambda i: stores[i].migrate())
    store.migrate()  # idempotent
    assert store.schema_revision() == HEAD_REVISION
    engine = create_engine(store.url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    engine.dispose()
    assert diff == []
    for s in [store, *stores]:
        s.close()


def test_sqlite_pragmas(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'p.sqlite'}")
    store.migrate()
    with store._tx() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def test_normalize_url(tmp_path):
    assert normalize_url("postgresql://u@h:5432/d") == "postgresql+psycopg://u@h:5432/d"
    assert normalize_url("postgres://u@h/d") == "postgresql+psycopg://u@h/d"
    assert normalize_url("postgresql+psycopg://u@h/d") == "postgresql+psycopg://u@h/d"
    assert normalize_url(tmp_path / "x.sqlite") == f"sqlite:///{tmp_path / 'x.sqlite'}"
    assert normalize_url("sqlite:///~/x.sqlite").startswith("sqlite:////")
    assert Store("postgresql://postgres@127.0.0.1:1/x").url.startswith("postgresql+psycopg://")
    with pytest.raises(ValueError):
        Store("mysql://u@h/d")


def test_config_hash_is_canonical():
    a = {"model": "tiny", "params": {"n_large": np.int64(64), "tau": 1.0}, "budget": 256, "seeds": (1, 2)}
    b = {"seeds": [1, 2], "budget": 256, "params": {"tau": 1.0, "n_large": 64}, "model": "tiny"}
    assert canonical_json(a) == canonical_json(b)
    assert config_hash(a) == config_hash(b) == hashlib.sha256(canonical_json(b).encode()).hexdigest()
    assert config_hash({**b, "budget": 512}) != config_hash(b)


def test_unavailable_database_raises_store_unavailable(tmp_path):
    down = Store("postgresql://postgres@127.0.0.1:1/x", connect_timeout=2)
    with pytest.raises(StoreUnavailable):
        down.migrate()
    with pytest.raises(StoreUnavailable):
        down.get_job("0" * 32)
    with pytest.raises(StoreUnavailable):
        down.create_job({}, model="m", task="t", total_samples=1)
    assert issubclass(StoreUnavailable, Exception)
    # SQLite that cannot be opened (its folder turned into a file)
    blocked = Store(f"sqlite:///{tmp_path / 'sub' / 'db.sqlite'}")
    (tmp_path / "sub").rmdir()
    (tmp_path / "sub").write_text("not a folder")
    with pytest.raises(StoreUnavailable):
        blocked.list_jobs()


@pytest.mark.postgres
def test_postgres_uses_psycopg3(pg_store):
    assert pg_store._engine.dialect.driver == "psycopg"
    with pg_store._tx() as conn:
        assert conn.execute(text("select data_type from information_schema.columns where "
                                 "table_name='jobs' and column_name='spec'")).scalar() == "jsonb"


def test_open_store(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'o.sqlite'}"
    a = open_store(url)
    assert a is open_store(url) and a.schema_revision() == HEAD_REVISION
    assert open_store(url, cached=False) is not a
    from vase.config import get_settings

    monkeypatch.setenv("VASE_DATABASE_URL", f"sqlite:///{tmp_path / 'settings.sqlite'}")
    get_settings.cache_clear()
    try:
        s = open_store()
        assert s.url == f"sqlite:///{tmp_path / 'settings.sqlite'}"
        assert s.list_jobs() == ([], 0)
    finally:
        get_settings.cache_clear()


# ------------------------------------------------------------------------------------------------
# samples
# ------------------------------------------------------------------------------------------------
def test_add_sample_is_idempotent(store):
    run = _run(store)
    first = store.add_sample(run, problem_id="p1", sample_index=0, seed=np.int64(7), output="42",
                             correct=np.bool_(True), new_tokens=np.int32(10), tokens_per_s=np.float32(12.5),
                             kl_mean=float("nan"), loop_span=(3, 9), custom_metric=np.float64(0.25))
    assert isinstance(first, int)
    assert store.add_sample(run, problem_id="p1", sample_index=0, output="other") is None
    assert store.count_samples(run_id=run) == 1
    s = store.get_sample(first)
    assert s["output"] == "42" and s["correct"] is True and s["seed"] == 7 and s["new_tokens"] == 10
    assert s["tokens_per_s"] == pytest.approx(12.5) and s["kl_mean"] is None
    assert s["loop_span"] == "[3, 9]" and s["metrics"] == {"custom_metric": 0.25}
    assert s["trace"] is None and s["job_id"] is None and s["created_at"].tzinfo is not None
    store.add_sample(run, problem_id="p1", sample_index=1)
    store.add_sample(run, problem_id=7, sample_index=0)  # problem ids are strings
    assert store.existing_sample_keys(run) == {("p1", 0), ("p1", 1), ("7", 0)}
    with pytest.raises(TypeError):
        store.add_sample(run, problem_id="p2")


def test_concurrent_add_of_the_same_sample(store):
    run = _run(store)
    for k in range(8):
        ids = _in_threads(2, lambda i: store.add_sample(run, problem_id=f"p{k}", sample_index=0, output=str(i)))
        assert sum(x is not None for x in ids) == 1, ids
    assert store.count_samples(run_id=run) == 8


def test_get_or_create_run_is_race_safe(store):
    job = store.create_job({"x": 1}, model="tiny", task="math500", total_samples=4)
    for k in range(5):
        h = uuid.uuid4().hex
        ids = _in_threads(3, lambda i: _run(store, scope=job, config_hash=h, method=f"m{i}"))
        assert len(set(ids)) == 1
    runs = store.runs_for_job(job)
    assert len(runs) == 5 and all(r["job_id"] == job and r["scope"] == job for r in runs)
    # the same hash in another scope is another run; the cli scope has no job
    cli = _run(store, scope="cli", config_hash=runs[0]["config_hash"])
    assert cli not in {r["id"] for r in runs}
    assert store.get_run(cli)["job_id"] is None
    # an existing run keeps its fields
    again = _run(store, scope=job, config_hash=runs[0]["config_hash"], method="different")
    assert again == runs[0]["id"] and store.get_run(again)["method"] == runs[0]["method"]
    with pytest.raises(TypeError):
        store.get_or_create_run("cli", "h", task="t", method="m", model="x", bogus=1)
    assert store.list_runs(job_id=job, method=runs[0]["method"])[0]["id"] == runs[0]["id"]


def test_update_grade_and_list_samples(store):
    job = store.create_job({}, model="tiny", task="t", total_samples=6)
    run = _run(store, scope=job)
    ids = [store.add_sample(run, problem_id=f"p{i % 2}", sample_index=i // 2, output=f"out{i}" * 100,
                            correct=None, grade_status="pending") for i in range(6)]
    assert store.update_sample_grade(ids[0], correct=True, grade_status="ok", extracted="42",
                                     metrics={"grader": "math-verify"})
    assert store.update_sample_grade(ids[1], correct=False, grade_status="ok", grade_reason="mismatch",
                                     correct_flex=True, extracted_flex="4371", flex_rule="last_number")
    assert not store.update_sample_grade(10**9, correct=True)
    s = store.get_sample(ids[0])
    assert s["correct"] is True and s["extracted"] == "42" and s["metrics"] == {"grader": "math-verify"}
    s1 = store.get_sample(ids[1])
    assert s1["grade_reason"] == "mismatch" and s1["correct"] is False
    assert (s1["correct_flex"], s1["extracted_flex"], s1["flex_rule"]) == (True, "4371", "last_number")
    assert (s["correct_flex"], s["extracted_flex"], s["flex_rule"]) == (None, None, None)
    rows = store.list_samples(job_id=job)
    assert [(r["problem_id"], r["sample_index"]) for r in rows] == [
        ("p0", 0), ("p0", 1), ("p0", 2), ("p1", 0), ("p1", 1), ("p1", 2)]
    assert rows[0]["job_id"] == job
    light = store.list_samples(run_id=run, problem_id="p1", include_text=False, limit=2, offset=1)
    assert [r["sample_index"] for r in light] == [1, 2] and "output" not in light[0]
    assert [r["id"] for r in store.list_samples(run_id=run, correct=True)] == [ids[0]]
    assert store.count_samples(job_id=job) == 6 and store.count_samples(run_id=run, correct=False) == 1
    assert store.get_sample(10**9) is None


# ------------------------------------------------------------------------------------------------
# results
# ------------------------------------------------------------------------------------------------
def _pass_at_k_brute(n, c, k):
    """Fraction of k-subsets of the n samples holding at least one correct one."""
    outcomes = [True] * c + [False] * (n - c)
    subsets = list(combinations(range(n), k))
    return sum(any(outcomes[i] for i in s) for s in subsets) / len(subsets)


def test_results_aggregation(store):
    job = store.create_job({}, model="tiny", task="math500", total_samples=12)
    a = _run(store, scope=job, method="vase_attnv", budget=256)
    b = _run(store, scope=job, method="snapkv", budget=128)
    grades = {"p1": [True, True, False, False], "p2": [True, True, True, True], "p3": [False, False, False, None]}
    i = 0
    for pid, gs in grades.items():
        for idx, g in enumerate(gs):
            store.add_sample(a, problem_id=pid, sample_index=idx, correct=g, new_tokens=100 + i,
                             truncated=(i % 4 == 0), loop_detected=(i % 3 == 0), tokens_per_s=10.0 + i,
                             kv_bytes_peak=1000 * (i + 1), evictions=i, sparsity=0.5,
                             kl_mean=None if i % 2 else 0.1 * i, top1_agreement=0.9)
            i += 1
    store.add_sample(b, problem_id="p1", sample_index=0, correct=True)
    store.add_sample(b, problem_id="p1", sample_index=1, correct=False)
    rows = store.results(job_id=job)
    assert [r["run_id"] for r in rows] == [b, a]  # ordered by method within task/model
    assert all(tuple(r) == RESULT_KEYS for r in rows)
    ra, rb = rows[1], rows[0]

    per_problem = [0.5, 1.0, 0.0]
    assert ra["n_problems"] == 3 and ra["n_samples"] == 12 and ra["n_graded"] == 11
    assert ra["accuracy"] == pytest.approx(np.mean(per_problem))
    assert ra["accuracy_se"] == pytest.approx(np.std(per_problem, ddof=1) / math.sqrt(3))
    nc = [(4, 2), (4, 4), (3, 0)]
    assert sorted(ra["pass_at_k"]) == [1, 2, 3]  # 1, 2, then the fewest graded samples (3)
    for k in (1, 2, 3):
        want = np.mean([_pass_at_k_brute(n, c, k) for n, c in nc])
        assert ra["pass_at_k"][k] == pytest.approx(want)
    assert ra["pass_at_k"][1] == pytest.approx(ra["accuracy"])
    assert ra["pass_at_k"][2] == pytest.approx((5 / 6 + 1 + 0) / 3)
    assert ra["loop_rate"] == pytest.approx(np.mean([j % 3 == 0 for j in range(12)]))
    assert ra["truncated_rate"] == pytest.approx(3 / 12)
    assert ra["mean_new_tokens"] == pytest.approx(np.mean(range(100, 112)))
    assert ra["tokens_per_s"] == pytest.approx(np.mean([10.0 + j for j in range(12)]))
    assert ra["kv_bytes_peak"] == 12000 and ra["evictions"] == pytest.approx(5.5)
    assert ra["kl_mean"] == pytest.approx(np.mean([0.1 * j for j in range(0, 12, 2)]))
    assert ra["top1_agreement"] == pytest.approx(0.9) and ra["sparsity"] == pytest.approx(0.5)
    assert (ra["method"], ra["budget"], ra["residual"], ra["job_id"]) == ("vase_attnv", 256, 32, job)

    assert rb["n_problems"] == 1 and rb["accuracy"] == 0.5 and rb["accuracy_se"] == 0.0
    assert rb["pass_at_k"] == {1: 0.5, 2: 1.0}
    assert rb["loop_rate"] is None and rb["kv_bytes_peak"] is None

    assert [r["run_id"] for r in store.results(run_ids=[a])] == [a]
    empty = _run(store, scope=job, method="zz_empty")
    r = next(r for r in store.results(job_id=job) if r["run_id"] == empty)
    assert r["n_samples"] == 0 and r["accuracy"] is None and r["pass_at_k"] == {}


def test_results_match_vase_metrics_if_present(store):
    metrics = pytest.importorskip("vase.metrics")
    run = _run(store)
    grades = [[True, False, False], [True, True, False], [False, False, False], [True, True, True]]
    for p, gs in enumerate(grades):
        for i, g in enumerate(gs):
            store.add_sample(run, problem_id=f"q{p}", sample_index=i, correct=g)
    row = store.results(run_ids=[run])[0]
    mean, se = metrics.mean_pass_at_1(grades)
    assert row["accuracy"] == pytest.approx(mean) and row["accuracy_se"] == pytest.approx(se)
    for k in (1, 2, 3):
        assert row["pass_at_k"][k] == pytest.approx(np.mean([metrics.pass_at_k(3, sum(g), k) for g in grades]))


# ------------------------------------------------------------------------------------------------
# jobs
# ------------------------------------------------------------------------------------------------
def test_job_lifecycle(store):
    spec = {"model": "tiny", "task": "math500", "methods": [{"name": "vase_attnv", "budget": 256}],
            "n": np.int64(2)}
    owner = f"alice-{uuid.uuid4().hex[:6]}"
    job = store.create_job(spec, model="tiny", task="math500", total_samples=4, owner=owner)
    assert len(job) == 32 and int(job, 16) >= 0
    j = store.get_job(job)
    assert tuple(j) == JOB_KEYS
    assert j["status"] == "queued" and j["spec"]["n"] == 2 and j["owner"] == owner
    assert j["done_samples"] == 0 and j["progress"] == 0.0 and j["cancel_requested"] is False
    assert j["created_at"].tzinfo is not None and j["started_at"] is None

    assert store.set_job_status(job, "running")
    j = store.get_job(job)
    assert j["status"] == "running" and j["started_at"] is not None and j["heartbeat_at"] is not None
    started = j["started_at"]
    assert store.heartbeat(job) is False
    run = _run(store, scope=job)
    store.add_sample(run, problem_id="p", sample_index=0)
    store.add_sample(run, problem_id="p", sample_index=1)
    store.add_failed_samples(job, 1)
    assert store.job_progress(job) == {"total": 4, "done": 2, "failed": 1, "remaining": 1, "fraction": 0.5}

    # cancel while running: flagged, the worker notices, then reports cancelled
    after = store.request_cancel(job)
    assert after["status"] == "running" and after["cancel_requested"] is True
    assert store.is_cancel_requested(job) and store.heartbeat(job) is True
    assert store.set_job_status(job, "cancelled")
    j = store.get_job(job)
    assert j["status"] == "cancelled" and j["finished_at"] is not None and j["done_samples"] == 2
    # terminal states stick...
    assert not store.set_job_status(job, "running")
    assert not store.set_job_status(job, "succeeded")
    assert store.get_job(job)["status"] == "cancelled"
    # ...except a re-queue (resume), which clears the cancel request and the finish time
    assert store.set_job_status(job, "queued")
    j = store.get_job(job)
    assert j["status"] == "queued" and j["cancel_requested"] is False and j["finished_at"] is None
    assert store.set_job_status(job, "running") and store.get_job(job)["started_at"] == started
    assert store.set_job_status(job, "failed", error="CUDA out of memory")
    j = store.get_job(job)
    assert j["status"] == "failed" and j["error"] == "CUDA out of memory"
    assert store.set_job_status(job, "succeeded", force=True)

    # a queued job is cancelled right away; a worker picking it up later is refused
    q = store.create_job({}, model="tiny", task="aime24", total_samples=1, owner=owner)
    assert store.request_cancel(q)["status"] == "cancelled"
    assert not store.set_job_status(q, "running")

    with pytest.raises(ValueError):
        store.set_job_status(job, "paused")
    missing = uuid.uuid4().hex
    assert store.get_job(missing) is None and not store.set_job_status(missing, "running")
    assert store.request_cancel(missing) is None and store.is_cancel_requested(missing)
    assert store.job_progress(missing) is None


def test_list_jobs_and_stale_jobs(store):
    owner = f"bob-{uuid.uuid4().hex[:6]}"
    ids = [store.create_job({"i": i}, model=f"m{i % 2}", task="t", total_samples=1, owner=owner) for i in range(5)]
    rows, total = store.list_jobs(owner=owner)
    assert total == 5 and [r["id"] for r in rows] == ids[::-1]  # newest first
    rows, total = store.list_jobs(owner=owner, model="m0", limit=2, offset=1)
    assert total == 3 and [r["id"] for r in rows] == [ids[2], ids[0]]
    store.set_job_status(ids[0], "running")
    store.set_job_status(ids[1], "running")
    rows, total = store.list_jobs(status="running", owner=owner)
    assert total == 2
    rows, total = store.list_jobs(status=["running", "queued"], owner=owner, task="t")
    assert total == 5
    # a worker that stopped sending heartbeats
    from sqlalchemy import update

    from vase.store.models import Job

    with store._tx(write=True) as conn:
        conn.execute(update(Job).where(Job.id == ids[0]).values(heartbeat_at=utcnow() - timedelta(minutes=10)))
    stale = {j["id"] for j in store.stale_jobs(60)}
    assert ids[0] in stale and ids[1] not in stale
    # deleting a job removes its runs, samples and traces
    run = _run(store, scope=ids[0])
    sid = store.add_sample(run, problem_id="p", sample_index=0,
                           trace={"level": "summary", "encoding": "summary-v1", "data": b"", "meta": {}})
    assert store.delete_job(ids[0]) and not store.delete_job(ids[0])
    assert store.get_sample(sid) is None and store.get_trace(sid) is None and store.get_run(run) is None


# ------------------------------------------------------------------------------------------------
# tokens
# ------------------------------------------------------------------------------------------------
def test_tokens(store):
    name = f"ci-{uuid.uuid4().hex[:8]}"
    token = store.create_token(name)
    assert token.startswith("vase_") and len(token) > 40
    assert store.verify_token(token) == name
    assert store.verify_token(token + "x") is None and store.verify_token("") is None
    with store._tx() as conn:
        stored = conn.execute(text("select token_hash from api_tokens where name = :n"), {"n": name}).scalar()
    assert stored == hashlib.sha256(token.encode()).hexdigest() and token not in stored
    with pytest.raises(DuplicateTokenName):
        store.create_token(name)
    assert isinstance(DuplicateTokenName("x"), ValueError)
    listed = [t for t in store.list_tokens() if t["name"] == name]
    assert listed and set(listed[0]) == {"name", "created_at", "revoked_at"}
    assert store.revoke_token(name) and not store.revoke_token(name)
    assert store.verify_token(token) is None
    again = store.create_token(name)  # a revoked name can be reused
    assert store.verify_token(again) == name and store.verify_token(token) is None
    with pytest.raises(ValueError):
        store.create_token(" ")


# ------------------------------------------------------------------------------------------------
# traces
# ------------------------------------------------------------------------------------------------
def _trace_record():
    import torch

    from vase.traces import EvictionEvent, TraceRecorder

    rec = TraceRecorder("full", num_layers=2, num_kv_heads=2)
    rng = np.random.default_rng(0)
    P, B, R = 10, 32, 8
    held = [[np.arange(P) for _ in range(2)] for _ in range(2)]
    for t in range(1, 200):
        L = P + t
        for layer in range(2):
            for h in range(2):
                held[layer][h] = np.append(held[layer][h], L - 1)
        n = len(held[0][0])
        if n > B and n % R == 0:
            for layer in range(2):
                kept, ev = [], []
                for h in range(2):
                    cand = held[layer][h][: n - R]
                    keep = np.sort(rng.choice(len(cand), B - R, replace=False))
                    mask = np.zeros(len(cand), bool)
                    mask[keep] = True
                    kept.append(cand[mask])
                    ev.append(cand[~mask])
                    held[layer][h] = np.concatenate([cand[mask], held[layer][h][n - R:]])
                rec(EvictionEvent(row=0, layer=layer, logical_length=L, prompt_length=P, residual=R,
                                  kept_positions=torch.tensor(np.array(kept)),
                                  evicted_positions=torch.tensor(np.array(ev)),
                                  kept_scores=None, kept_magnitude=torch.rand(2, B - R),
                                  evicted_magnitude=torch.rand(2, n - B)))
    return rec.record_for(0, new_tokens=200), held  # 199 tokens fed after the prompt


def test_trace_roundtrip(store):
    from vase.traces import held_positions

    record, held = _trace_record()
    run = _run(store, trace_level="full")
    sid = store.add_sample(run, problem_id="p", sample_index=0, output="x", trace=record)
    t = store.get_trace(sid)
    assert t["data"] == record["data"] and isinstance(t["data"], bytes)
    assert (t["level"], t["encoding"], t["n_events"], t["n_evicted"], t["nbytes"]) == (
        "full", "ranks-v1", record["n_events"], record["n_evicted"], len(record["data"]))
    assert t["meta"] == record["meta"]
    assert np.array_equal(held_positions(t["data"], 1, 1, 199), np.sort(held[1][1]))
    info = store.get_sample(sid)["trace"]
    assert info == {"level": "full", "encoding": "ranks-v1", "n_events": record["n_events"],
                    "n_evicted": record["n_evicted"], "nbytes": len(record["data"])}
    assert "data" not in store.get_trace(sid, with_data=False)
    # saving again replaces
    tid = store.save_trace(sid, "summary", "summary-v1", b"", n_events=3, n_evicted=4, meta={"a": [1, 2]})
    t2 = store.get_trace(sid)
    assert t2["id"] == tid and t2["level"] == "summary" and t2["data"] == b"" and t2["meta"] == {"a": [1, 2]}
    with pytest.raises(ValueError):
        store.save_trace(sid, "off", "x", b"")
    # a duplicate sample does not overwrite the stored trace
    assert store.add_sample(run, problem_id="p", sample_index=0, trace=record) is None
    assert store.get_trace(sid)["level"] == "summary"
    assert store.get_trace(10**9) is None
