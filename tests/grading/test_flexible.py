"""The flexible grader: each rule on hand-written outputs, rule order, and malformed text (it
never raises). Real outputs of the embedded model are in test_flexible_fixtures.py."""

from __future__ import annotations

import random

import pytest

from vase.grading import Verdict, grade
from vase.grading.flexible import (
    answer_phrase,
    extract_choice_flex,
    extract_math_flex,
    last_number,
    numbers_equal,
    trailing_equals,
)
from vase.tasks import Problem


def math_problem(answer: str) -> Problem:
    return Problem(id="m", prompt="q", answer=answer)


CHOICE = Problem(id="c", prompt="Which is prime?", answer="B", kind="choice", choices=["4", "5", "6", "8"])


@pytest.mark.parametrize(
    "output, extracted, rule",
    [
        ("So it is \\boxed{12}. The answer is 13.", "12", "boxed"),
        ("I think the answer is 4371 because Chen.", "4371", "answer_phrase"),
        ("Final answer: **-7**", "-7", "answer_phrase"),
        ("The answer is $\\frac{3}{4}$.", "\\frac{3}{4}", "answer_phrase"),
        ("answer = 12.0", "12.0", "answer_phrase"),
        ("answer: 1/2", "1/2", "answer_phrase"),
        ("7 + 5 = 12\n12 * 3 = 36\n36 - 4 = 32.", "32", "equals"),
        ("x = $2\\sqrt{2}$", "2\\sqrt{2}", "equals"),
        ("The code of Chen is 4371.", "4371", "last_number"),
        ("There are 1,204 apples and 3 pears", "3", "last_number"),
        ("a total of 1,204", "1204", "last_number"),
        ("7 + 5 = 12, and then 36 more", "36", "last_number"),  # "= 12" is not trailing
        ("\\boxed{5", "5", "last_number"),  # an unbalanced box is not an answer
        ("\\boxed{} and 9", "9", "last_number"),  # nor an empty one
        ("no digits here", None, None),
        ("", None, None),
    ],
)
def test_math_rules_in_order(output, extracted, rule):
    found = extract_math_flex(output)
    assert (found.text, found.rule) == (extracted, rule)


@pytest.mark.parametrize(
    "gold, output, correct",
    [
        ("4371", "The code of Chen is 4371.", True),
        ("4371", "The code of Chen is 4,371", True),
        ("4371", "The code of Chen is 4372.", False),
        ("0.5", "answer: 1/2", True),  # Math-Verify decides non-numbers
        ("\\frac{1}{2}", "The answer is 0.5.", True),
        ("12", "answer = 12.0", True),
        ("5", "no number at all", False),
    ],
)
def test_math_flex_verdicts(gold, output, correct):
    v = grade(math_problem(gold), output)
    assert v.correct is False and v.status == "graded"  # no \boxed{}: strictly wrong
    assert v.correct_flex is correct


def test_boxed_answer_keeps_the_strict_verdict():
    v = grade(math_problem("5"), "the answer is 5, no: \\boxed{6}")
    assert (v.correct, v.correct_flex, v.extracted_flex, v.flex_rule) == (False, False, "6", "boxed")


def test_flexible_reads_only_the_answer_part():
    v = grade(math_problem("5"), "<think>maybe 5</think>The result is 7.")
    assert (v.correct_flex, v.extracted_flex, v.flex_rule) == (False, "7", "last_number")
    v = grade(math_problem("5"), "<think>it is 5, still thinking")
    assert v == Verdict(False, None, "unclosed_thinking", v.reason, correct_flex=False)


def test_flexible_without_gold_is_undecided():
    v = grade(math_problem(""), "The answer is 5.")
    assert v.correct_flex is None and v.extracted_flex == "5"


@pytest.mark.parametrize(
    "output, letter, rule",
    [
        ("\\boxed{B}", "B", "strict"),
        ("The answer is (D). A is wrong.", "D", "strict"),
        ("I would pick (C) here", "C", "letter"),
        ("A traveler would say B.", "B", "letter"),  # "A traveler": the article
        ("Options B or D? D", "D", "letter"),
        ("E is my guess", None, None),  # not among the four choices
        ("nothing", None, None),
    ],
)
def test_choice_rules(output, letter, rule):
    found = extract_choice_flex(output, n_choices=4, choices=CHOICE.choices)
    assert (found.text, found.rule) == (letter, rule)
    v = grade(CHOICE, output)
    assert v.extracted_flex == letter and v.correct_flex is (letter == "B")


def test_code_flex_is_strict():
    p = Problem(id="x", prompt="q", answer="", kind="code", tests=[])
    v = grade(p, "```python\nprint(1)\n```")
    assert v.status == "ungradable" and (v.correct_flex, v.flex_rule) == (v.correct, "strict")


def test_helpers():
    assert last_number("a -3 b 2.50 c") == "2.50"
    assert last_number("v1.2.3 and x2") is None  # digits glued to words or dots are not numbers
    assert answer_phrase("The answer is: 42.") == "42"
    assert answer_phrase("no phrase 42") is None
    assert trailing_equals("so x = 3") == "3" and trailing_equals("x = 3 apples and more") is None
    assert numbers_equal("4371", "4,371.0") is True and numbers_equal("1", "x") is None
    assert numbers_equal("nan", "nan") is None and numbers_equal("1e999", "1e999") is None


MALFORMED = [
    "", " ", "\n\n", "\\boxed{", "\\boxed{{{{{", "}}}}\\boxed}", "\\boxed{\\}", "answer is", "answer:",
    "= ", "==", "=\n", "NaN", "nan", "inf", "-inf", "1e999", "1e-999", "Infinity", "0/0", "1/0",
    "-", "--1", "1,,2", ",123", "1.", ".5", "\u00bd", "\u0663\u0664", "\U0001F600 = \U0001F600",
    "\x00\x01\x02", "answer is \\boxed", "$$$$", "the answer is $", "\\frac{", "(((((", "A" * 5000,
    "1" * 5000, "= " * 2000, "answer is " * 2000, "{" * 10000 + "}" * 9999, "\\boxed{" * 3000,
    "9" * 400 + "= 1", "x" * 2_000_000 + " = 5",
]


@pytest.mark.parametrize("text", MALFORMED, ids=range(len(MALFORMED)))
@pytest.mark.parametrize("problem", [math_problem("5"), math_problem("\\frac12"), CHOICE], ids=["int", "frac", "choice"])
def test_malformed_text_never_raises(problem, text):
    v = grade(problem, text, math_timeout=5.0)
    assert v.status in ("graded", "ungradable")
    assert v.correct_flex in (True, False, None)
    assert v.extracted_flex is None or isinstance(v.extracted_flex, str)
    assert (v.extracted_flex is None) is (v.flex_rule is None)


def test_random_text_never_raises():
    rng = random.Random(8)
    alphabet = "0123456789=.,-+/\\{}()$* \n\tabcxyzABCDE:answer is boxed\u00e9\u4e2d\U0001F600"
    for _ in range(300):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 200)))
        for found in (extract_math_flex(text), extract_choice_flex(text)):
            assert found.text is None or isinstance(found.text, str)
        v = grade(math_problem("7"), text, math_timeout=5.0)
        assert v.correct_flex in (True, False, None)
