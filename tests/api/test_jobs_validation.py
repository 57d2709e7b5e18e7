"""POST /v1/jobs: bad input is a 422 naming the field and the rule, and nothing is stored."""

from __future__ import annotations

import json

import pytest
import redis

from .conftest import SMALL_JOB

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


def job(**changes):
    body = {**SMALL_JOB, **changes}
    return {k: v for k, v in body.items() if v is not ...}


INVALID = [
    ("unknown task", job(task="no-such-task"), "task", "unknown task"),
    ("task missing", job(task=...), "task", "required"),
    ("local files", job(task="jsonl:/etc/passwd?question=a&answer=b"), "task", "disabled"),
    ("limit zero", job(limit=0), "limit", "greater than or equal to 1"),
    ("limit as text", job(limit="3"), "limit", "valid integer"),
    ("no methods", job(methods=[]), "methods", "at least 1"),
    ("unknown method", job(methods=[{"name": "full"}, {"name": "nope"}]), "methods[1].name", "must be one of"),
    ("param of wrong type", job(methods=[{"name": "vase", "params": {"n_large": "many"}}]),
     "methods[0].params.n_large", "must be an integer"),
    ("unknown param", job(methods=[{"name": "vase", "params": {"bogus": 1}}]), "methods[0].params.bogus",
     "is not a parameter of method 'vase'"),
    ("n_large too large", job(methods=[{"name": "vase", "params": {"n_large": 48}}]), "methods[0].params.n_large",
     "must be < budget - residual"),
    ("duplicate method", job(methods=[{"name": "vase"}, {"name": "vase", "params": {"n_sink": 4}}]), "methods[1]",
     "repeats methods[0]"),
    # n_large defaults to budget // 4 = 16 at budget 64: the same run twice once defaults are filled in
    ("duplicate after budget defaults", job(methods=[{"name": "vase"}, {"name": "vase", "params": {"n_large": 16}}],
                                            budgets=[64]), "methods[1]", "repeats methods[0] at budgets[0] = 64"),
    ("budget not multiple", job(budgets=[64, 60]), "budgets[1]", "multiple of residual (16)"),
    ("budget not above residual", job(budgets=[16]), "budgets[0]", "greater than residual (16)"),
    ("budget repeated", job(budgets=[64, 64]), "budgets[1]", "must not repeat"),
    ("no budgets", job(budgets=[]), "budgets", "at least one budget"),
    ("budget negative", job(budgets=[-64]), "budgets[0]", "greater than or equal to 1"),
    ("residual zero", job(residual=0), "residual", "greater than or equal to 1"),
    ("samples zero", job(samples=0), "samples", "greater than or equal to 1"),
    ("seed negative", job(seeds=-1), "seeds", "greater than or equal to 0"),
    ("no new tokens", job(max_new_tokens=0), "max_new_tokens", "greater than or equal to 1"),
    ("temperature zero", job(generation={"temperature": 0}), "generation.temperature", "greater than 0"),
    ("top_p above one", job(generation={"top_p": 1.5}), "generation.top_p", "less than or equal to 1"),
    ("trace level", job(trace="verbose"), "trace", "'off', 'summary' or 'full'"),
    ("fidelity not bool", job(fidelity="yes"), "fidelity", "valid boolean"),
    ("reference_exact not bool", job(reference_exact="yes"), "reference_exact", "valid boolean"),
    ("evict_after_prefill with reference_exact", job(evict_after_prefill=True, reference_exact=True),
     "evict_after_prefill", "must be false when reference_exact is true"),
    ("unknown magnitude", job(methods=[{"name": "vase", "params": {"metric": "max"}}]), "methods[0].params.metric",
     "must be one of range, var, l2"),
    ("unknown field", job(budget=64), "budget", "not a field"),
    ("empty model", job(model=""), "model", "at least 1 character"),
    ("NUL in task", job(task="arith\x00chain"), "task", "NUL"),
    ("flash on cpu", job(queue="cpu", attention_backend="flash"), "attention_backend", "needs a GPU worker"),
    # models: an allow-list (the embedded model, the default one, VASE_ALLOWED_MODELS)
    *[(f"model {m}", job(model=m), "model", "is not a model this service runs") for m in (
        "file:///etc/passwd", "/etc", "../../../../etc", "/root", "embedded:../../etc/passwd",
        "http://127.0.0.1:6379/", "Qwen/Qwen3-8B", "embedded:smollm2-135m-instruct/../..")],
    # resources: the embedded model's context is 8192 tokens
    ("budget past the context", job(budgets=[2147483632]), "budgets[0]", "must fit the model's context (8192"),
    ("generation past the context", job(limit=976, samples=1024, max_new_tokens=131072), "max_new_tokens",
     "must fit the model's context (8192"),
    ("prompt + generation past the context", job(task="fact-recall", max_new_tokens=8000), "max_new_tokens",
     "the longest prompt (at most"),
]


def _nothing_stored(client, store, redis_url):
    assert store.list_jobs()[1] == 0
    r = redis.Redis.from_url(redis_url)
    try:
        assert [k for k in r.keys("*") if not k.startswith(b"_kombu")] == []
    finally:
        r.close()


@pytest.fixture(scope="module")
def refusing(module_app):
    """(client, store, auth, broker URL) of one app shared by the refused requests below."""
    from fastapi.testclient import TestClient

    client = TestClient(module_app)
    service = module_app.state.service
    yield client, service.store, {"Authorization": f"Bearer {module_app.state.test_token}"}, \
        service.settings.broker_url


@pytest.mark.parametrize("name,body,field,rule", INVALID, ids=[c[0] for c in INVALID])
def test_invalid_job_is_422_naming_the_field(refusing, name, body, field, rule):
    client, store, auth, redis_url = refusing
    r = client.post("/v1/jobs", json=body, headers=auth)
    assert r.status_code == 422, r.text
    out = r.json()
    assert out["error"] == "invalid_request"
    fields = [e["field"] for e in out["errors"]]
    assert field in fields, out
    error = out["errors"][fields.index(field)]
    assert rule in error["rule"], error
    assert out["message"].startswith(f"{field}: ") or f"{field}: " in out["message"]
    _nothing_stored(client, store, redis_url)


def test_refused_models_read_the_same_whether_a_path_exists_or_not(refusing, tmp_path):
    client, store, auth, redis_url = refusing
    answers = []
    for model in ("/etc", "/no/such/folder", str(tmp_path), str(tmp_path / "missing")):
        r = client.post("/v1/jobs", json=job(model=model), headers=auth)
        assert r.status_code == 422
        (error,) = r.json()["errors"]
        answers.append((error["field"], error["rule"]))
    assert len(set(answers)) == 1, answers
    _nothing_stored(client, store, redis_url)


def test_body_that_is_not_json(refusing):
    client, store, auth, redis_url = refusing
    r = client.post("/v1/jobs", content=b"{not json", headers={**auth, "Content-Type": "application/json"})
    assert r.status_code == 422
    assert "JSON" in r.json()["message"]
    _nothing_stored(client, store, redis_url)


def test_job_too_large(client, store, auth, redis_url, monkeypatch):
    client.app.state.service.settings.max_job_samples = 10
    r = client.post("/v1/jobs", json=job(limit=6, samples=1), headers=auth)  # 6 problems x 2 runs = 12
    assert r.status_code == 422
    assert r.json()["errors"][0]["field"] == "samples"
    assert "at most 10" in r.json()["message"]
    _nothing_stored(client, store, redis_url)


def test_smallest_body_is_accepted_and_stored_before_it_is_queued(client, store, auth, redis_url):
    r = client.post("/v1/jobs", json=SMALL_JOB, headers=auth)
    assert r.status_code == 201, r.text
    out = r.json()
    assert r.headers["location"] == f"/v1/jobs/{out['id']}"
    assert out["status"] == "queued" and out["owner"] == "tester"
    assert out["model"] == "embedded:smollm2-135m-instruct"  # the default
    assert out["progress"] == {"total": 2, "done": 0, "failed": 0, "remaining": 2, "fraction": 0.0}
    assert out["queue"] == "vase.cpu" and out["chunks"] == 1
    assert out["spec"]["seeds"] == 0 and out["spec"]["max_new_tokens"] == 96
    # the estimate: arith-chain prompts are short; SmolLM2's KV cache is 46080 bytes a token in float32
    estimate = out["spec"]["service"]["estimate"]
    assert 0 < estimate["prompt_tokens_max"] < 1000
    assert estimate["generated_tokens_max"] == 2 * 96
    assert estimate["kv_bytes_per_sample"] == (estimate["prompt_tokens_max"] + 96) * 46080
    # in the database, and its one chunk on the CPU queue
    assert store.get_job(out["id"])["status"] == "queued"
    r = redis.Redis.from_url(redis_url)
    try:
        (message,) = r.lrange("vase.cpu", 0, -1)
        headers = json.loads(message)["headers"]
        assert headers["task"] == "vase.run_chunk"
        assert json.loads(message)["body"]  # [job_id, chunk] (base64 json)
        assert r.exists(f"vase:job:{out['id']}:q:0")
    finally:
        r.close()


def test_defaults_and_routing(client, auth):
    r = client.post("/v1/jobs", json={"task": "arith-chain"}, headers=auth)
    assert r.status_code == 201, r.text
    spec = r.json()["spec"]
    assert [m["name"] for m in spec["methods"]] == ["full", "vase"]
    assert spec["budgets"] == [128] and spec["residual"] == 32 and spec["limit"] == 4
    assert spec["max_new_tokens"] == 256 and spec["trace"] == "off"
    assert spec["reference_exact"] is False
    r = client.post("/v1/jobs", json={"task": "arith-chain", "reference_exact": True}, headers=auth)
    assert r.status_code == 201 and r.json()["spec"]["reference_exact"] is True
    # 4 problems x 2 runs x 256 tokens fits the CPU queue; a hub model never does
    assert r.json()["queue"] == "vase.cpu"
    # a model that is not the embedded one never does (once allowed: see test_allowed_models)
    r = client.post("/v1/jobs", json={"task": "arith-chain", "queue": "gpu", "limit": None, "chunk_size": 8},
                    headers=auth)
    assert r.status_code == 201
    assert r.json()["chunks"] == 7 and r.json()["progress"]["total"] == 100  # 50 problems, 2 runs


@pytest.fixture
def model_folder(tmp_path):
    """A real model folder (a tiny random Qwen3 saved with save_pretrained) with a 512-token context."""
    from tests.factories import tiny_qwen3

    model, tokenizer = tiny_qwen3(max_position_embeddings=512)
    folder = tmp_path / "tiny-qwen3"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def test_allowed_models(model_folder, postgres_url, redis_url, settings_env):
    from fastapi.testclient import TestClient

    from api.app import create_app

    settings = settings_env(VASE_DATABASE_URL=postgres_url, VASE_BROKER_URL=redis_url,
                            VASE_ALLOWED_MODELS=f"Qwen/Qwen3-*, {model_folder}")
    with TestClient(create_app(settings)) as client:
        auth = {"Authorization": f"Bearer {client.app.state.service.store.create_token('t')}"}
        r = client.post("/v1/jobs", json=job(model=model_folder), headers=auth)
        assert r.status_code == 201, r.text
        assert r.json()["model"] == model_folder and r.json()["queue"] == "vase.gpu"
        # its context is its config's (512 tokens), not the embedded model's
        r = client.post("/v1/jobs", json=job(model=model_folder, max_new_tokens=500), headers=auth)
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "max_new_tokens"
        assert "(512 tokens)" in r.json()["message"]
        # a glob admits hub ids only: never a path, nor a path hidden behind the glob
        for refused in (model_folder + "/..", "Qwen/Qwen3-../../etc", "/Qwen/Qwen3-8B", "Qwen/Qwen2-7B"):
            r = client.post("/v1/jobs", json=job(model=refused), headers=auth)
            assert r.status_code == 422 and r.json()["errors"][0]["field"] == "model", refused
        assert client.app.state.service.store.list_jobs()[1] == 1


def test_planning_counts_problems_instead_of_making_them(client, auth):
    """fact-recall with limit 20000 is planned without generating 20000 problems (it took 7-25 s)."""
    import time

    started = time.perf_counter()
    r = client.post("/v1/jobs", json=job(task="fact-recall", limit=20000), headers=auth)
    elapsed = time.perf_counter() - started
    assert r.status_code == 201, r.text
    assert r.json()["progress"]["total"] == 40000  # 20000 problems x 2 runs
    assert r.json()["spec"]["service"]["chunk_size"] == 79 and r.json()["chunks"] == 254  # ceil(20000 / 256) a chunk
    assert elapsed < 3.0, elapsed


def test_job_over_the_token_cap(client, store, auth, redis_url):
    client.app.state.service.settings.max_job_tokens = 1000
    r = client.post("/v1/jobs", json=job(limit=6, max_new_tokens=96), headers=auth)  # 12 samples x 96 = 1152
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "max_new_tokens"
    assert "1152 tokens; at most 1000" in r.json()["message"]
    client.app.state.service.settings.max_job_tokens = 10**9
    client.app.state.service.settings.worker_kv_gib_cpu = 0.001  # ~1 MiB: less than one sample's cache
    r = client.post("/v1/jobs", json=job(queue="cpu"), headers=auth)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "max_new_tokens"
    assert "VASE_WORKER_KV_GIB_CPU" in r.json()["message"]
    _nothing_stored(client, store, redis_url)


def test_reads(client, auth):
    ids = [client.post("/v1/jobs", json=job(limit=i), headers=auth).json()["id"] for i in (1, 2, 3)]
    client.post("/v1/jobs", json=job(task="count-items"), headers=auth)
    r = client.get("/v1/jobs", params={"task": "arith-chain", "limit": 2})
    assert r.status_code == 200
    out = r.json()
    assert out["total"] == 3 and [j["id"] for j in out["items"]] == ids[::-1][:2]
    assert client.get("/v1/jobs", params={"task": "arith-chain", "offset": 2}).json()["items"][0]["id"] == ids[0]
    assert client.get("/v1/jobs", params={"status": "running"}).json()["total"] == 0
    assert client.get("/v1/jobs", params={"status": "queued"}).json()["total"] == 4
    r = client.get("/v1/jobs", params={"status": "bogus"})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "status"
    assert client.get("/v1/jobs", params={"limit": 0}).status_code == 422
    got = client.get(f"/v1/jobs/{ids[1]}").json()
    assert got["progress"]["total"] == 4 and got["timings"]["started_at"] is None
    # unknown ids are 404s
    for path in ("/v1/jobs/0123456789abcdef0123456789abcdef", "/v1/jobs/nope/results", "/v1/jobs/nope/samples",
                 "/v1/samples/999999", "/v1/samples/999999/trace"):
        r = client.get(path)
        assert r.status_code == 404, path
        assert r.json()["error"] == "not_found"
    assert client.post("/v1/jobs/nope/cancel", headers=auth).status_code == 404
    assert client.get("/v1/samples/abc").status_code == 422
    # results of a job not started: no rows yet
    r = client.get(f"/v1/jobs/{ids[0]}/results")
    assert r.status_code == 200 and r.json() == {"job_id": ids[0], "status": "queued", "complete": False, "rows": []}
    header = client.get(f"/v1/jobs/{ids[0]}/results", params={"format": "csv"}).text.splitlines()[0].split(",")
    assert header[:2] == ["run_id", "task"]
    assert {"accuracy", "accuracy_se", "accuracy_flex", "accuracy_flex_se", "pass_at_k_flex"} <= set(header)


def test_cancel_a_queued_job(client, auth):
    job_id = client.post("/v1/jobs", json=SMALL_JOB, headers=auth).json()["id"]
    r = client.post(f"/v1/jobs/{job_id}/cancel", headers=auth)
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    assert client.post(f"/v1/jobs/{job_id}/cancel", headers=auth).json()["status"] == "cancelled"
    assert client.get("/v1/jobs", params={"status": "cancelled"}).json()["total"] == 1


def test_catalog_and_probes(client):
    methods = {m["name"]: m for m in client.get("/v1/methods").json()}
    assert methods["full"]["kind"] == "none" and methods["vase"]["params"]["n_sink"] == 4
    assert methods["range-attn"]["reference_mode"] == "range_attn" and methods["tova"]["reference_mode"] is None
    tasks = {t["name"]: t for t in client.get("/v1/tasks").json()}
    assert tasks["arith-chain"]["offline"] is True and tasks["gsm8k"]["offline"] is False
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["mode"] == "celery" and ready.json()["checks"]["broker"]["ok"] is True


def test_plan_counts_without_a_model():
    from vase.jobs import JobInvalid, plan_job

    plan = plan_job({"task": "arith-chain", "limit": 5, "samples": 3, "fidelity": True, "chunk_size": 2,
                     "methods": [{"name": "vase"}, {"name": "snapkv"}], "budgets": [64, 128], "residual": 16})
    # fidelity adds the full cache: (2 methods x 2 budgets + full) x 5 problems x 3 samples
    assert plan.n_runs == 5 and plan.total_samples == 75 and plan.n_chunks == 3
    assert plan.spec.runs()[0].method == "full"
    with pytest.raises(JobInvalid) as err:
        plan_job({"task": "livecodebench-v6-medium", "limit": None})
    assert err.value.field == "limit"


def test_a_worker_batches_only_the_problems_whose_kv_cache_fits():
    from vase.config import Settings
    from vase.jobs import plan_job
    from vase.jobs.run import problems_that_fit

    plan = plan_job({"task": "arith-chain", "limit": 8, "samples": 2, "batch_problems": 6, "queue": "cpu",
                     "methods": [{"name": "full"}], "max_new_tokens": 64})
    info = plan.spec_document()["service"]
    per_problem = info["estimate"]["kv_bytes_per_problem"]
    assert per_problem > 0
    roomy = Settings(worker_kv_gib_cpu=8.0)
    assert problems_that_fit(plan.spec, info, roomy) == 6  # the spec's, when it fits
    tight = Settings(worker_kv_gib_cpu=2.5 * per_problem / 2**30)
    assert problems_that_fit(plan.spec, info, tight) == 2
    assert problems_that_fit(plan.spec, info, Settings(worker_kv_gib_cpu=0.5 * per_problem / 2**30)) == 1
    assert problems_that_fit(plan.spec, {}, tight) == 6  # jobs planned before the estimate existed
