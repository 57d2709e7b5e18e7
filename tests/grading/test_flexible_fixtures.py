"""The flexible grader on real outputs of the embedded SmolLM2-135M (tests/fixtures/smollm2_outputs.json,
made by tests/fixtures/make_flex_fixtures.py): what it extracts from each, by which rule, and the
verdict against the gold answer. The expectations below were checked by hand against each output;
a regenerated fixture file must be checked again (the test fails on any output it does not know)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vase.grading import grade
from vase.grading.flexible import extract_math_flex
from vase.tasks import Problem

FIXTURES = json.loads((Path(__file__).resolve().parents[1] / "fixtures" / "smollm2_outputs.json").read_text())

#: id -> (extracted_flex, flex_rule), checked by hand; correct_flex follows from the gold answer.
EXPECTED: dict[str, tuple[str | None, str | None]] = {
    "fact-recall-s0-0000/full/sampled/0": ("1287", "last_number"),
    "fact-recall-s0-0000/full/sampled/1": ("6065", "last_number"),
    "fact-recall-s0-0001/full/sampled/0": ("30", "last_number"),
    "fact-recall-s0-0001/full/sampled/1": (None, None),
    "fact-recall-s0-0002/full/sampled/0": ("13733", "last_number"),
    "fact-recall-s0-0002/full/sampled/1": ("10", "last_number"),
    "fact-recall-s0-0003/full/sampled/0": (None, None),
    "fact-recall-s0-0003/full/sampled/1": (None, None),
    "fact-recall-s0-0000/snapkv/sampled/0": (None, None),
    "fact-recall-s0-0000/snapkv/sampled/1": ("175536572", "last_number"),
    "fact-recall-s0-0001/snapkv/sampled/0": ("8929397", "last_number"),
    "fact-recall-s0-0001/snapkv/sampled/1": (None, None),
    "fact-recall-s0-0002/snapkv/sampled/0": ("13733", "last_number"),
    "fact-recall-s0-0002/snapkv/sampled/1": ("22009", "last_number"),
    "fact-recall-s0-0003/snapkv/sampled/0": (None, None),
    "fact-recall-s0-0003/snapkv/sampled/1": ("1", "last_number"),
    "fact-recall-s0-0000/full/greedy/0": ("2391", "last_number"),
    "fact-recall-s0-0001/full/greedy/0": ("2378", "last_number"),
    "fact-recall-s0-0002/full/greedy/0": ("2227", "last_number"),
    "fact-recall-s0-0003/full/greedy/0": ("4389", "last_number"),
    "arith-chain-s0-0000/full/sampled/0": ("4", "last_number"),
    "arith-chain-s0-0000/full/sampled/1": ("17", "last_number"),
    "arith-chain-s0-0001/full/sampled/0": ("1", "last_number"),
    "arith-chain-s0-0001/full/sampled/1": ("9", "last_number"),
    "arith-chain-s0-0002/full/sampled/0": ("2", "last_number"),
    "arith-chain-s0-0002/full/sampled/1": ("71", "last_number"),
    "arith-chain-s0-0003/full/sampled/0": ("4", "last_number"),
    "arith-chain-s0-0003/full/sampled/1": ("115", "answer_phrase"),
    "arith-chain-s0-0000/snapkv/sampled/0": ("4", "last_number"),
    "arith-chain-s0-0000/snapkv/sampled/1": ("17", "last_number"),
    "arith-chain-s0-0001/snapkv/sampled/0": ("1", "last_number"),
    "arith-chain-s0-0001/snapkv/sampled/1": ("9", "last_number"),
    "arith-chain-s0-0002/snapkv/sampled/0": ("2", "last_number"),
    "arith-chain-s0-0002/snapkv/sampled/1": ("71", "last_number"),
    "arith-chain-s0-0003/snapkv/sampled/0": ("4", "last_number"),
    "arith-chain-s0-0003/snapkv/sampled/1": ("115", "answer_phrase"),
    "arith-chain-s0-0000/full/greedy/0": ("2", "last_number"),
    "arith-chain-s0-0001/full/greedy/0": ("1", "last_number"),
    "arith-chain-s0-0002/full/greedy/0": ("6", "last_number"),
    "arith-chain-s0-0003/full/greedy/0": ("25", "answer_phrase"),
    "count-items-s0-0000/full/sampled/0": ("4", "answer_phrase"),
    "count-items-s0-0000/full/sampled/1": (None, None),
    "count-items-s0-0001/full/sampled/0": (None, None),
    "count-items-s0-0001/full/sampled/1": ("5", "last_number"),
    "count-items-s0-0002/full/sampled/0": (None, None),
    "count-items-s0-0002/full/sampled/1": ("6", "answer_phrase"),
    "count-items-s0-0003/full/sampled/0": (None, None),
    "count-items-s0-0003/full/sampled/1": (None, None),
    "count-items-s0-0000/snapkv/sampled/0": ("14", "last_number"),
    "count-items-s0-0000/snapkv/sampled/1": (None, None),
    "count-items-s0-0001/snapkv/sampled/0": (None, None),
    "count-items-s0-0001/snapkv/sampled/1": ("5", "last_number"),
    "count-items-s0-0002/snapkv/sampled/0": (None, None),
    "count-items-s0-0002/snapkv/sampled/1": ("6", "answer_phrase"),
    "count-items-s0-0003/snapkv/sampled/0": (None, None),
    "count-items-s0-0003/snapkv/sampled/1": (None, None),
    "count-items-s0-0000/full/greedy/0": ("2", "last_number"),
    "count-items-s0-0001/full/greedy/0": (None, None),
    "count-items-s0-0002/full/greedy/0": ("3", "last_number"),
    "count-items-s0-0003/full/greedy/0": ("5", "last_number"),
}


def test_every_fixture_has_an_expectation():
    assert sorted(r["id"] for r in FIXTURES) == sorted(EXPECTED)
    assert {r["task"] for r in FIXTURES} == {"fact-recall", "arith-chain", "count-items"}


@pytest.mark.parametrize("record", FIXTURES, ids=[r["id"] for r in FIXTURES])
def test_flexible_extraction_on_real_outputs(record):
    extracted, rule = EXPECTED[record["id"]]
    found = extract_math_flex(record["output"])
    assert (found.text, found.rule) == (extracted, rule), record["output"]
    v = grade(Problem(id=record["problem_id"], prompt="q", answer=record["gold"]), record["output"])
    assert v.correct is False  # SmolLM2 never writes \\boxed{}: strictly, everything is wrong
    assert (v.extracted_flex, v.flex_rule) == (extracted, rule)
    assert v.correct_flex is (extracted is not None and float(extracted) == float(record["gold"]))


def test_flexible_finds_what_strict_misses():
    """Real outputs with the right number: strictly wrong (no \\boxed{}), flexibly right."""
    right = [r for r in FIXTURES if EXPECTED[r["id"]][0] is not None and float(EXPECTED[r["id"]][0]) == float(r["gold"])]
    assert right, "the fixtures hold no right answer"
    for r in right:
        v = grade(Problem(id=r["problem_id"], prompt="q", answer=r["gold"]), r["output"])
        assert (v.correct, v.correct_flex) == (False, True)
