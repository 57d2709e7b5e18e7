"""Re-grading stored outputs (`vase.regrade`) against SQLite and the local PostgreSQL: the flexible
columns of samples stored without them get filled, strict verdicts are recomputed, and what cannot
be graded is reported, not guessed."""

from __future__ import annotations

import uuid

import pytest

from vase.regrade import problems_of_run, regrade
from vase.store import Store
from vase.tasks import get_task


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request, tmp_path):
    url = f"sqlite:///{tmp_path / 'regrade.sqlite'}" if request.param == "sqlite" else request.getfixturevalue(
        "postgres_url")
    s = Store(url)
    s.migrate()
    yield s
    s.close()


def _run(store: Store, task: str, limit: int | None, **fields) -> int:
    return store.get_or_create_run("cli", uuid.uuid4().hex, task=task, method="full", model="m",
                                   manifest={"task": task, "limit": limit, "task_seed": 0}, **fields)


def test_regrade_fills_the_flexible_verdicts(store):
    problems = get_task("fact-recall").load(limit=3, seed=0)
    run = _run(store, "fact-recall", 3)
    outputs = {  # as SmolLM2 writes them: right answers, never boxed
        problems[0].id: f"The code of {problems[0].metadata['target']} is {problems[0].answer}.",
        problems[1].id: f"The code of {problems[1].metadata['target']} is 1.",
        problems[2].id: f"So the answer is \\boxed{{{problems[2].answer}}}.",
    }
    ids = {pid: store.add_sample(run, problem_id=pid, sample_index=0, output=out, prompt="q", correct=True,
                                 grade_status="stale") for pid, out in outputs.items()}
    other = _run(store, "fact-recall", 3)
    store.add_sample(other, problem_id=problems[0].id, sample_index=0, output="untouched", prompt="q")

    report = regrade(store, run_ids=[run])
    assert report.to_dict() == {"runs": 1, "samples": 3, "strict_changed": 3, "flex_changed": 3, "skipped": []}
    got = {pid: store.get_sample(i) for pid, i in ids.items()}
    first, second, third = (got[p.id] for p in problems)
    assert (first["correct"], first["correct_flex"], first["extracted_flex"], first["flex_rule"]) == (
        False, True, problems[0].answer, "last_number")
    assert first["grade_status"] == "graded" and "boxed" in first["grade_reason"]
    assert (second["correct"], second["correct_flex"], second["extracted_flex"]) == (False, False, "1")
    assert (third["correct"], third["correct_flex"], third["flex_rule"]) == (True, True, "boxed")
    assert store.list_samples(run_id=other)[0]["flex_rule"] is None  # not selected, not touched

    row = store.results(run_ids=[run])[0]
    assert row["accuracy"] == pytest.approx(1 / 3) and row["accuracy_flex"] == pytest.approx(2 / 3)
    again = regrade(store, run_ids=[run])
    assert (again.samples, again.strict_changed, again.flex_changed) == (3, 0, 0)  # idempotent


def test_regrade_reports_what_it_cannot_grade(store):
    job = store.create_job({}, model="m", task="fact-recall", total_samples=2)
    good = _run(store, "fact-recall", 2, job_id=job)
    bad = _run(store, "no-such-task", 2, job_id=job)
    pid = get_task("fact-recall").load(limit=1, seed=0)[0].id
    store.add_sample(good, problem_id=pid, sample_index=0, output="42", prompt="q")
    store.add_sample(good, problem_id="gone", sample_index=0, output="42", prompt="q")
    store.add_sample(bad, problem_id="x", sample_index=0, output="42", prompt="q")
    report = regrade(store, job_id=job)
    assert (report.runs, report.samples) == (1, 1)
    assert any(line.startswith(f"run {bad}: task 'no-such-task'") for line in report.skipped)
    assert f"run {good}: 1 samples whose problem is not in the task as loaded" in report.skipped
    assert store.list_samples(run_id=bad)[0]["flex_rule"] is None


def test_problems_of_run_uses_the_recorded_limit_and_seed():
    run = {"task": "arith-chain", "manifest": {"limit": 2, "task_seed": 5}}
    assert list(problems_of_run(run)) == [p.id for p in get_task("arith-chain").load(limit=2, seed=5)]
