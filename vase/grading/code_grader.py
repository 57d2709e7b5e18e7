"""Code problems: run the last ```python block against the problem's tests in the sandbox.

``problem.tests`` is a list of ``{"input": str, "output": str, "testtype": "stdin"|"functional"}``
(LiveCodeBench's format). ``stdin`` tests feed ``input`` to the program and compare its stdout
with ``output`` line by line (tokens compared as decimals when they differ textually).
``functional`` tests call ``Solution().<func_name>(*args)`` (``func_name`` from
``problem.metadata``) with one JSON argument per input line and compare the JSON result with
``output``. A sample is correct when every test passes; grading stops at the first failure.
"""

from __future__ import annotations

import json
import math
import time
from decimal import Decimal, InvalidOperation
from typing import Any

from .extract import extract_code
from .sandbox import SandboxLimits, functional_result, run_python
from .verdict import Verdict

DEFAULT_TEST_LIMITS = SandboxLimits(wall_seconds=6.0, cpu_seconds=6)
DEFAULT_TOTAL_SECONDS = 120.0


def _tokens_equal(a: str, b: str) -> bool:
    if a == b:
        return True
    try:
        return Decimal(a) == Decimal(b)
    except (InvalidOperation, ValueError):
        return False


def stdout_matches(actual: str, expected: str) -> bool:
    """LiveCodeBench-style comparison: stripped lines equal, or token-wise equal as decimals."""
    a_lines = [ln.strip() for ln in actual.strip().split("\n")]
    e_lines = [ln.strip() for ln in expected.strip().split("\n")]
    if len(a_lines) != len(e_lines):
        return False
    for a, e in zip(a_lines, e_lines):
        if a == e:
            continue
        at, et = a.split(), e.split()
        if len(at) != len(et) or not all(_tokens_equal(x, y) for x, y in zip(at, et)):
            return False
    return True


def _normalize(x: Any) -> Any:
    if isinstance(x, tuple):
        return [_normalize(v) for v in x]
    if isinstance(x, list):
        return [_normalize(v) for v in x]
    if isinstance(x, dict):
        return {k: _normalize(v) for k, v in x.items()}
    return x


def values_match(actual: Any, expected: Any) -> bool:
    """JSON values equal (tuples as lists; floats within 1e-9 relative/absolute)."""
    actual, expected = _normalize(actual), _normalize(expected)
    if isinstance(actual, bool) or isinstance(expected, bool):
        return actual == expected
    if isinstance(actual, (int, float)) and isinstance(expected, (int, float)):
        return math.isclose(actual, expected, rel_tol=1e-9, abs_tol=1e-9)
    if isinstance(actual, list) and isinstance(expected, list):
        return len(actual) == len(expected) and all(values_match(a, e) for a, e in zip(actual, expected))
    if isinstance(actual, dict) and isinstance(expected, dict):
        return actual.keys() == expected.keys() and all(values_match(actual[k], expected[k]) for k in actual)
    return actual == expected


def run_tests(
    code: str,
    tests: list[dict[str, Any]],
    *,
    func_name: str | None = None,
    limits: SandboxLimits | None = None,
    total_seconds: float = DEFAULT_TOTAL_SECONDS,
    audit: bool = True,
    mechanism: str | None = None,
) -> tuple[bool, str | None, dict[str, Any]]:
    """Run ``code`` against ``tests``; returns (all_passed, failure_reason, details)."""
    limits = limits or DEFAULT_TEST_LIMITS
    start = time.monotonic()
    details: dict[str, Any] = {"n_tests": len(tests), "passed": 0}
    for i, test in enumerate(tests):
        if time.monotonic() - start > total_seconds:
            return False, f"time budget exhausted before test {i + 1}/{len(tests)}", details
        testtype = str(test.get("testtype") or ("functional" if func_name else "stdin")).lower()
        tin = str(test.get("input", ""))
        tout = str(test.get("output", ""))
        if testtype == "functional":
            if not func_name:
                raise ValueError("functional test without func_name in the problem metadata")
            res = run_python(code, stdin=tin, mode="functional", func_name=func_name, limits=limits,
                             audit=audit, mechanism=mechanism)
        else:
            res = run_python(code, stdin=tin, mode="script", limits=limits, audit=audit, mechanism=mechanism)
        details["mechanism"] = res.mechanism
        where = f"test {i + 1}/{len(tests)}"
        if res.timed_out:
            return False, f"{where}: time limit exceeded ({limits.wall_seconds:g}s)", details
        if res.output_truncated:
            return False, f"{where}: output limit exceeded", details
        if res.returncode != 0:
            tail = res.stderr.strip().splitlines()[-1:] or [""]
            return False, f"{where}: runtime error (exit {res.returncode}): {tail[0][:200]}", details
        if testtype == "functional":
            found, value = functional_result(res.stdout)
            if not found:
                return False, f"{where}: no result returned", details
            try:
                expected = json.loads(tout)
            except json.JSONDecodeError:
                expected = tout
            if not values_match(value, expected):
                return False, f"{where}: wrong answer", details
        elif not stdout_matches(res.stdout, tout):
            return False, f"{where}: wrong answer", details
        details["passed"] += 1
    return True, None, details


def grade_code(problem: Any, answer_text: str, *, limits: SandboxLimits | None = None,
               total_seconds: float = DEFAULT_TOTAL_SECONDS, audit: bool = True,
               mechanism: str | None = None) -> Verdict:
    code = extract_code(answer_text)
    if code is None or not code.strip():
        return Verdict(False, None, "graded", "no ```python code block in the answer")
    tests = problem.tests or []
    if not tests:
        return Verdict(None, code, "ungradable", "problem has no tests")
    func_name = (problem.metadata or {}).get("func_name")
    ok, reason, details = run_tests(code, tests, func_name=func_name, limits=limits,
                                    total_seconds=total_seconds, audit=audit, mechanism=mechanism)
    return Verdict(ok, code, "graded", reason, details)
