"""The benchmark engine end to end on the embedded SmolLM2: grid, store, fidelity, traces, resume."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vase.bench import Bench, kept_fraction, result_rows
from vase.methods import MethodSpec
from vase.policies import InvalidParameter
from vase.spec import JobInvalid, JobSpec
from vase.store import open_store
from vase.tasks import FactRecallTask
from vase.traces import decode

SMALL = dict(task="arith-chain", limit=2, budgets=[32], residual=8, max_new_tokens=40)


@pytest.fixture(scope="module")
def bench_run(smollm2, tmp_path_factory):
    """One real grid with fidelity and full traces, shared by the tests below."""
    store = open_store(f"sqlite:///{tmp_path_factory.mktemp('bench') / 'bench.sqlite'}", cached=False)
    spec = JobSpec(methods=[MethodSpec("full"), MethodSpec("vase", {"n_large": 8}), MethodSpec("streamingllm")],
                     fidelity=True, trace="full", **SMALL)
    model, tokenizer = smollm2
    bench = Bench(spec, store, model=model, tokenizer=tokenizer)
    assert bench.execute()
    return bench


def test_grid_is_stored_with_metrics(bench_run):
    rows = {r["method"]: r for r in result_rows(bench_run.results())}
    assert list(rows) == ["full", "vase:n_large=8", "streamingllm"]  # full cache first
    for row in rows.values():
        assert row["n_problems"] == 2 and row["n_samples"] == 2
        assert 0.0 <= row["accuracy"] <= 1.0 and row["tokens_per_s"] > 0 and row["kv_bytes_peak"] > 0
    assert rows["full"]["kl_mean"] is None and rows["full"]["budget"] is None
    for name in ("vase:n_large=8", "streamingllm"):
        assert rows[name]["kl_mean"] >= 0 and 0 <= rows[name]["top1_agreement"] <= 1
        assert rows[name]["kv_bytes_peak"] < rows["full"]["kv_bytes_peak"]
        assert rows[name]["evictions"] > 0 and 0 < rows[name]["sparsity"] < 1


def test_samples_carry_grading_and_fidelity(bench_run):
    store = bench_run.store
    vase_run = bench_run.runs[1]
    samples = store.list_samples(run_id=vase_run.run_id)
    assert len(samples) == 2
    for sample in samples:
        assert sample["grade_status"] in ("graded", "ungradable", "unclosed_thinking")
        assert sample["correct_flex"] in (True, False, None)
        assert (sample["extracted_flex"] is None) is (sample["flex_rule"] is None)
        if sample["flex_rule"] == "boxed":  # a boxed answer: both graders agree
            assert sample["correct_flex"] is sample["correct"]
        assert sample["new_tokens"] == len(sample["metrics"]["tokens"])
        assert sample["kl_mean"] is not None and sample["metrics"]["compared_tokens"] > 0
        assert sample["first_divergence"] is None or sample["first_divergence"] >= 0
        assert sample["eviction_seed"] != sample["seed"]


def test_full_traces_rebuild_the_cache_content(bench_run, smollm2):
    model, _ = smollm2
    store = bench_run.store
    budget, residual = 32, 8
    for sample in store.list_samples(run_id=bench_run.runs[1].run_id):
        trace = store.get_trace(sample["id"])
        assert trace["level"] == "full"
        reader = decode(trace["data"])
        prompt_tokens = sample["metrics"]["prompt_tokens"]
        last_step = sample["new_tokens"] - 1
        for layer in (0, model.config.num_hidden_layers - 1):
            for head in range(model.config.num_key_value_heads):
                held = reader.held_positions(layer, head, last_step)
                logical = prompt_tokens + last_step  # the last generated token is never fed
                # Evictions run at multiples of `residual` above max(budget, prompt) and leave
                # `budget` tokens; the cache then grows by one per step.
                first = (max(budget, prompt_tokens) // residual + 1) * residual
                expected = logical if logical < first else budget + logical % residual
                assert len(held) == expected
                assert held.max() == logical - 1
                assert set(range(4)) <= set(held.tolist())  # vase reserves the sinks
                assert set(range(logical - residual, logical)) <= set(held.tolist())
        # The first eviction drops everything above the budget; each later one drops `residual`.
        first = (max(budget, prompt_tokens) // residual + 1) * residual
        per_head = (first - budget) + (sample["evictions"] - 1) * residual
        assert trace["n_evicted"] == per_head * model.config.num_hidden_layers * model.config.num_key_value_heads
        assert trace["nbytes"] / trace["n_evicted"] <= 1.0  # <= 1 byte per evicted position


def test_resume_adds_only_missing_samples(smollm2, tmp_path):
    model, tokenizer = smollm2
    store = open_store(f"sqlite:///{tmp_path / 'resume.sqlite'}", cached=False)
    # One problem per batch: cancellation is checked before each run of a batch.
    spec = JobSpec(methods=[MethodSpec("full"), MethodSpec("snapkv")], batch_problems=1,
                   **{**SMALL, "max_new_tokens": 16})
    first = Bench(spec, store, model=model, tokenizer=tokenizer)
    written = []
    assert not first.execute(should_cancel=lambda: len(written) >= 3, on_sample=lambda: written.append(1))
    before = {s["id"]: (s["problem_id"], s["sample_index"], s["run_id"]) for s in store.list_samples()}
    assert len(before) == 3 and first.missing() == 1
    again = Bench(spec, store, model=model, tokenizer=tokenizer)
    assert [r.run_id for r in again.runs] == [r.run_id for r in first.runs]
    added = []
    assert again.execute(on_sample=lambda: added.append(1))
    after = {s["id"]: (s["problem_id"], s["sample_index"], s["run_id"]) for s in store.list_samples()}
    assert len(added) == 1 and len(after) == 4
    assert all(after[i] == key for i, key in before.items())  # old samples untouched
    # Different parameters never reuse stored results.
    other = Bench(JobSpec(methods=[MethodSpec("full"), MethodSpec("snapkv")], **{**SMALL, "max_new_tokens": 17}),
                  store, model=model, tokenizer=tokenizer)
    assert not {r.run_id for r in other.runs} & {r.run_id for r in first.runs}
    assert other.missing() == other.total_samples == 4
    # Reference-exact is part of the eviction runs' config hash (the full cache is the same run).
    exact = Bench(JobSpec(methods=[MethodSpec("full"), MethodSpec("snapkv")], reference_exact=True,
                          **{**SMALL, "max_new_tokens": 16}), store, model=model, tokenizer=tokenizer)
    assert exact.runs[0].run_id == first.runs[0].run_id and exact.runs[1].run_id != first.runs[1].run_id
    assert exact.missing() == 2


def test_kept_fraction_follows_the_eviction_schedule():
    # Prompt 20, budget 32, residual 8: evictions at logical 40, 48, 56.
    assert kept_fraction(20, 32, 8, 3) == pytest.approx((32 / 40 + 32 / 48 + 32 / 56) / 3)
    # Prompt longer than the budget: the first eviction waits for the next multiple above the prompt.
    assert kept_fraction(45, 32, 8, 1) == pytest.approx(32 / 48)
    assert kept_fraction(20, None, 8, 0) is None
    # Evicted at the end of the prefill: the first eviction at the prompt's length, then every residual.
    assert kept_fraction(45, 32, 8, 2, evict_after_prefill=True) == pytest.approx((32 / 45 + 32 / 53) / 2)
    assert kept_fraction(20, 32, 8, 1, evict_after_prefill=True) == pytest.approx(32 / 40)


def test_evict_after_prefill_is_part_of_the_run_identity(tiny_qwen3, tmp_path):
    model, tokenizer = tiny_qwen3
    store = open_store(f"sqlite:///{tmp_path / 'plan.sqlite'}", cached=False)
    spec = dict(SMALL, methods=[MethodSpec("full"), MethodSpec("snapkv")])
    off = Bench(JobSpec(**spec), store, model=model, tokenizer=tokenizer)
    on = Bench(JobSpec(**spec, evict_after_prefill=True), store, model=model, tokenizer=tokenizer)
    assert not {r.run_id for r in on.runs} & {r.run_id for r in off.runs}
    again = Bench(JobSpec(**spec), store, model=model, tokenizer=tokenizer)
    assert [r.run_id for r in again.runs] == [r.run_id for r in off.runs]
    with pytest.raises(JobInvalid) as err:
        JobSpec.parse(dict(spec, evict_after_prefill="yes"))
    assert err.value.field == "evict_after_prefill"


@pytest.mark.parametrize(
    "change,field",
    [
        ({"task": "nope"}, "task"),
        ({"budgets": [30]}, "budgets[0]"),
        ({"methods": [MethodSpec("vase", {"n_large": 40})]}, "methods[0].params.n_large"),
        ({"samples": 0}, "samples"),
        ({"trace": "everything"}, "trace"),
        ({"limit": 0}, "limit"),
        ({"budgets": [32, 32]}, "budgets[1]"),
        ({"generation": {"temperature": -1.0}}, "generation.temperature"),
        ({"methods": [MethodSpec("vase"), MethodSpec("vase", {"n_large": 8})]}, "methods[1]"),  # 8 = 32 // 4
        ({"reference_exact": "yes"}, "reference_exact"),
        ({"evict_after_prefill": True, "reference_exact": True}, "evict_after_prefill"),
        ({"methods": [MethodSpec("vase", {"metric": "max"})]}, "methods[0].params.metric"),
    ],
)
def test_bad_specs_name_the_field(change, field):
    """Types and bounds when the spec is built, the registries' rules in check(): both name the field."""
    with pytest.raises(JobInvalid) as err:
        JobSpec.parse({**SMALL, "methods": [MethodSpec("vase")], **change}).check()
    assert err.value.field == field
    if field == "evict_after_prefill":  # the refused pair: the message names both fields
        assert "reference_exact" in str(err.value)


def test_job_defaults_are_the_spec_defaults():
    """One home for each default: a spec built from only a task has them, and they are what the
    CLI's options and the API schema show."""
    import inspect

    from vase.cli.run import bench

    spec = JobSpec(task="arith-chain")
    assert [m.label for m in spec.methods] == ["full", "vase"] and spec.budgets == [128]
    options = {p.name: p.default for p in inspect.signature(bench).parameters.values()}
    assert options["methods"].default == "full,vase" and options["residual"].default == spec.residual
    assert options["max_new_tokens"].default == spec.max_new_tokens and options["trace"].default == spec.trace
    assert options["reference_exact"].default is spec.reference_exact is False


def test_method_list_parsing():
    from vase.methods import parse_methods

    assert parse_methods("full,vase:n_large=16,smoothing=false,snapkv") == [
        MethodSpec("full"), MethodSpec("vase", {"n_large": 16, "smoothing": False}), MethodSpec("snapkv")]
    assert parse_methods("vase:n_large=8;rkv:lam=0.3") == [MethodSpec("vase", {"n_large": 8}),
                                                            MethodSpec("rkv", {"lam": 0.3})]
    with pytest.raises(InvalidParameter):
        parse_methods("n_large=3,vase")


def test_method_spec_parsing():
    assert MethodSpec.parse("vase:n_large=16,smoothing=false") == MethodSpec("vase", {"n_large": 16, "smoothing": False})
    assert MethodSpec.parse(" snapkv ") == MethodSpec("snapkv", {})
    with pytest.raises(InvalidParameter):
        MethodSpec.parse("vase:n_large")


ROOT = Path(__file__).resolve().parents[1]


def vase_cli(*args, timeout=600):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "vase.cli", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=timeout, env=env)


def test_cli_bench_json_and_export(smollm2, tmp_path):
    db = f"sqlite:///{tmp_path / 'cli.sqlite'}"
    out = vase_cli("bench", "--task", "fact-recall", "--limit", "1", "--methods", "full,vase-dkv", "--budgets", "32",
                   "--residual", "8", "--max-new-tokens", "24", "--fidelity", "--db", db, "--json",
                   "--out", str(tmp_path / "table.csv"))
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert [r["method"] for r in rows] == ["full", "vase-dkv"]
    for key in ("task", "method", "budget", "accuracy", "accuracy_se", "accuracy_flex", "accuracy_flex_se",
                "pass_at_k", "pass_at_k_flex", "loop_rate", "kl_mean", "top1_agreement", "tokens_per_s",
                "kv_bytes_peak"):
        assert key in rows[0]
    for row in rows:  # one problem, one sample: every estimate is 0 or 1 with no spread
        assert row["accuracy_flex"] in (0.0, 1.0) and row["accuracy_flex_se"] == 0.0
        assert row["pass_at_k_flex"] == {"1": row["accuracy_flex"]}
    assert rows[1]["kl_mean"] is not None
    csv_text = (tmp_path / "table.csv").read_text()
    assert csv_text.splitlines()[0].startswith("task,method,budget,accuracy,accuracy_se,accuracy_flex,accuracy_flex_se")
    assert len(csv_text.splitlines()) == 3
    # A second identical run finds everything stored: no new samples, the same table.
    again = vase_cli("bench", "--task", "fact-recall", "--limit", "1", "--methods", "full,vase-dkv", "--budgets",
                     "32", "--residual", "8", "--max-new-tokens", "24", "--fidelity", "--db", db, "--json")
    assert json.loads(again.stdout) == rows
    # Samples stored without the flexible verdict (as before migration 0002) get it from `vase regrade`.
    store = open_store(db, cached=False)
    samples = store.list_samples()
    for s in samples:
        store.update_sample_grade(s["id"], correct_flex=None, extracted_flex=None, flex_rule=None)
    assert all(r["accuracy_flex"] is None for r in store.results())
    store.close()
    regraded = vase_cli("regrade", "--all", "--db", db, "--json")
    assert regraded.returncode == 0, regraded.stderr
    payload = json.loads(regraded.stdout)
    assert payload["report"]["samples"] == len(samples) == 2 and payload["report"]["strict_changed"] == 0
    flex_columns = ("correct_flex", "extracted_flex", "flex_rule")
    assert payload["report"]["flex_changed"] == sum(any(s[k] is not None for k in flex_columns) for s in samples)
    assert [r["accuracy_flex"] for r in payload["rows"]] == [r["accuracy_flex"] for r in rows]
    printed = vase_cli("regrade", "--run", str(rows[0]["run_id"]), "--db", db)
    assert printed.returncode == 0 and "re-graded 1 samples" in printed.stderr
    assert "acc % ± SE" in printed.stdout and "flex acc % ± SE" in printed.stdout  # the table `vase bench` prints


@pytest.mark.parametrize(
    "args,name",
    [([], "--job, --run or --all"), (["--all", "--run", "1"], "--all"), (["--job", "nope"], "--job"),
     (["--run", "99"], "--run")],
)
def test_cli_regrade_bad_input_exits_2(args, name, tmp_path):
    out = vase_cli("regrade", *args, "--db", f"sqlite:///{tmp_path / 'store.sqlite'}")
    assert out.returncode == 2 and name in out.stderr


@pytest.mark.parametrize(
    "args,name",
    [
        (["--task", "nope"], "task"),
        (["--budgets", "30", "--residual", "8"], "budget"),
        (["--budgets", "x"], "budgets"),
        (["--methods", "vase:n_large=999"], "n_large"),
        (["--trace", "all"], "trace"),
        (["--samples", "0"], "samples"),
        (["--limit", "-3"], "limit"),
        (["--max-new-tokens", "200000"], "max_new_tokens"),
        # n_large defaults to budget // 4 = 8: the same run twice
        (["--methods", "vase,vase:n_large=8", "--budgets", "32", "--residual", "8"], "methods[1]: repeats methods[0]"),
        (["--greedy", "--temperature", "0.7"], "temperature"),
        (["--greedy", "--top-p", "0.9"], "top_p"),
        (["--task", "fact-recall?facts=0"], "facts"),
    ],
)
def test_cli_bench_bad_input_exits_2(args, name, tmp_path):
    db = tmp_path / "never.sqlite"
    out = vase_cli("bench", *args, "--db", f"sqlite:///{db}")
    assert out.returncode == 2 and name in out.stderr
    assert not db.exists()  # nothing stored for a rejected request


def test_cli_tasks_json():
    out = vase_cli("tasks", "--json")
    tasks = {t["name"]: t for t in json.loads(out.stdout)}
    assert tasks["arith-chain"]["offline"] is True and tasks["arith-chain"]["size"] > 0
    assert tasks["math500"]["size"] == 500 and tasks["math500"]["params"] == {}
    assert tasks["fact-recall"]["params"]["facts"] == FactRecallTask.PARAMETERS["facts"].default


def test_cli_tasks_markdown_prints_the_parameter_table():
    from vase.tasks import parameter_table_markdown

    out = vase_cli("tasks", "--markdown")
    assert out.returncode == 0, out.stderr
    assert out.stdout == parameter_table_markdown() + "\n"
    both = vase_cli("tasks", "--markdown", "--json")
    assert both.returncode == 2 and "--json" in both.stderr and "--markdown" in both.stderr


def test_jobs_stored_before_jobspec_are_read():
    """A job row written by the old BenchSpec (``seed``, flat sampling fields) still runs."""
    legacy = {"task": "arith-chain", "limit": 2, "task_seed": 0, "methods": [{"name": "full", "params": {}}],
              "budgets": [32], "residual": 8, "samples": 1, "seed": 7, "model": "embedded:smollm2-135m-instruct",
              "do_sample": True, "temperature": 0.6, "top_p": None, "top_k": None, "max_new_tokens": 40,
              "fidelity": False, "trace": "off", "attention_backend": "auto", "service": {"n_chunks": 1}}
    spec = JobSpec.from_stored(legacy)
    assert spec.seeds == 7 and spec.generation.temperature == 0.6 and spec.generation.do_sample is True
    assert JobSpec.from_stored(spec.to_dict()) == spec


def test_prefill_reuse_stores_the_same_samples(tiny_qwen3, tmp_path):
    """The bench's per-problem prefill reuse (the default) gives the old path's tokens, grades and KL."""
    model, tokenizer = tiny_qwen3
    spec = JobSpec(task="fact-recall?facts=4&filler=3", limit=2, samples=2, budgets=[32], residual=8,
                   max_new_tokens=20, fidelity=True, evict_after_prefill=True,
                   methods=[MethodSpec("full"), MethodSpec("vase", {"n_large": 8}), MethodSpec("h2o"),
                            MethodSpec("streamingllm")])
    stored = []
    for reuse in (True, False):
        store = open_store(f"sqlite:///{tmp_path / f'reuse-{reuse}.sqlite'}", cached=False)
        bench = Bench(spec, store, model=model, tokenizer=tokenizer, reuse_prefill=reuse)
        assert bench.execute()
        stored.append([(s["problem_id"], s["sample_index"], s["metrics"]["tokens"], s["evictions"], s["kl_mean"])
                       for r in bench.runs for s in store.list_samples(run_id=r.run_id)])
    assert stored[0] == stored[1] and len(stored[0]) == 2 * 2 * 4


def test_batched_problems_store_what_one_problem_at_a_time_stores(tiny_qwen3, tmp_path):
    """Problems decoded together (prompts of different lengths, right-padded) give each problem's
    tokens, evictions and KL as when it runs alone."""
    model, tokenizer = tiny_qwen3
    stored = []
    for batch in (1, 3):
        spec = JobSpec(task="fact-recall?facts=4&filler=3", limit=3, samples=2, budgets=[32], residual=8,
                       max_new_tokens=20, fidelity=True, batch_problems=batch,
                       methods=[MethodSpec("full"), MethodSpec("vase"), MethodSpec("h2o"), MethodSpec("streamingllm")])
        store = open_store(f"sqlite:///{tmp_path / f'batch-{batch}.sqlite'}", cached=False)
        bench = Bench(spec, store, model=model, tokenizer=tokenizer)
        assert bench.execute()
        stored.append({(r.spec.method, s["problem_id"], s["sample_index"]): (s["metrics"]["tokens"], s["evictions"],
                                                                            s["kl_mean"])
                       for r in bench.runs for s in store.list_samples(run_id=r.run_id)})
    alone, together = stored
    assert alone.keys() == together.keys() and len(alone) == 3 * 2 * 4
    for key, (tokens, evictions, kl) in alone.items():
        assert together[key][:2] == (tokens, evictions), key
        assert (kl is None) == (together[key][2] is None) and (kl is None or abs(kl - together[key][2]) < 1e-4), key
