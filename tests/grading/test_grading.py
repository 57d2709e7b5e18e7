"""Graders: math (Math-Verify without signals), multiple choice, code in the sandbox, and the
sandbox's containment of hostile programs."""

from __future__ import annotations

import os
import re
import threading
import time
import uuid
from pathlib import Path

import pytest

import vase.grading as grading
from vase.grading import Verdict, extract_choice, extract_code, grade, last_boxed
from vase.grading.math_grader import check_math
from vase.grading.sandbox import (
    SandboxLimits,
    available_mechanisms,
    run_python,
)
from vase.tasks import Problem

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = REPO.parent / "shared" / "data" / "reasoning"


def math_problem(answer: str) -> Problem:
    return Problem(id="m", prompt="q", answer=answer)


# -- extraction ------------------------------------------------------------------------------------

def test_last_boxed():
    assert last_boxed("a \\boxed{1} b \\boxed{\\frac{1}{2}} c").content == "\\frac{1}{2}"
    assert last_boxed("\\boxed{\\{1,2\\}}").content == "\\{1,2\\}"
    assert last_boxed("\\fbox{7}").content == "7"
    assert last_boxed("\\boxed 5.").content == "5"
    b = last_boxed("\\boxed{2} then \\boxed{3")
    assert b.found and not b.balanced and b.content is None  # never falls back to an earlier box
    assert not last_boxed("no box").found and not last_boxed("").found and not last_boxed(None).found
    assert last_boxed("\\boxedx{1}").found is False


def test_extract_code():
    text = "```python\nprint(1)\n```\nthen\n```py\nprint(2)\n```\n```text\nnot code\n```"
    assert extract_code(text) == "print(2)\n"
    assert extract_code("```\nprint(3)\n```") == "print(3)\n"
    assert extract_code("```python\nprint(4)\n") is None  # unterminated
    assert extract_code("no code") is None and extract_code(None) is None


# -- math --------------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "gold, pred",
    [
        ("\\frac{1}{2}", "0.5"),
        ("\\frac{1}{2}", "\\dfrac{1}{2}"),
        ("3/4", "\\frac34"),
        ("\\frac{3}{4}", "0.75"),
        ("[1,2)", "[1, 2)"),
        ("(-\\infty, 3]", "(-\\infty,3]"),
        ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3,\\frac{\\pi}{2})"),
        ("2\\sqrt{2}", "\\sqrt{8}"),
        ("27", "27.0"),
        ("-984", "-984"),
        ("1-\\frac{2}{\\pi}", "\\frac{\\pi-2}{\\pi}"),
        ("\\frac{\\sqrt{3}}{2}", "\\dfrac{\\sqrt3}{2}"),
        ("90^\\circ", "90"),
        ("\\{1,2\\}", "\\{2,1\\}"),
        ("2x+3", "3+2x"),
        ("\\text{Evelyn}", "\\text{Evelyn}"),
    ],
)
def test_math_equivalences(gold, pred):
    v = grade(math_problem(gold), f"<think>work</think>So the answer is $\\boxed{{{pred}}}$.")
    assert v == Verdict(True, pred, "graded", None, correct_flex=True, extracted_flex=pred, flex_rule="boxed"), v


@pytest.mark.parametrize(
    "gold, pred",
    [("5", "6"), ("\\frac12", "0.25"), ("[1,2)", "(1,2)"), ("(3,\\frac{\\pi}{2})", "(3,\\pi)"),
     ("x^2+1", "x^2-1"), ("204", "402")],
)
def test_math_wrong_answers(gold, pred):
    v = grade(math_problem(gold), f"\\boxed{{{pred}}}")
    assert v.correct is False and v.status == "graded" and v.extracted == pred


def test_math_uses_last_box_of_answer_part():
    out = "<think>maybe \\boxed{3}</think> First I thought \\boxed{3} but it is \\boxed{5}."
    assert grade(math_problem("5"), out).correct is True
    assert grade(math_problem("3"), out).correct is False
    only_in_thinking = "<think>the answer is \\boxed{5}</think> The answer is five."
    v = grade(math_problem("5"), only_in_thinking)
    assert v.correct is False and v.status == "graded" and "boxed" in v.reason


@pytest.mark.parametrize(
    "output, reason",
    [
        ("The answer is 5.", "no \\boxed"),
        ("", "no \\boxed"),
        (None, "no \\boxed"),
        ("\\boxed{5", "unbalanced"),
        ("\\boxed{\\frac{1}{2}", "unbalanced"),
        ("\\boxed{}", "empty"),
        ("answer: \\boxed", "unbalanced"),
        ("\\boxed{???}", "could not be parsed"),
    ],
)
def test_math_malformed_outputs_are_wrong_not_errors(output, reason):
    v = grade(math_problem("5"), output)
    assert v.correct is False and v.status == "graded"
    assert reason in v.reason


def test_unclosed_thinking_is_wrong():
    v = grade(math_problem("5"), "<think>let me think... \\boxed{5} hmm, wait")
    assert v == Verdict(False, None, "unclosed_thinking", v.reason, correct_flex=False) and v.reason
    v = grade(math_problem("5"), "still thinking \\boxed{5}", opened_in_prompt=True)
    assert v.status == "unclosed_thinking" and v.correct is False
    assert grade(math_problem("5"), "done</think>\\boxed{5}", opened_in_prompt=True).correct is True


def test_pathological_expression_times_out_as_ungradable():
    t = time.monotonic()
    v = grade(math_problem("5"), "\\boxed{10^{10^{10}}}", math_timeout=1.0)
    assert time.monotonic() - t < 10
    assert v.status == "ungradable" and v.correct is None and "timeout" in v.reason
    assert v.extracted == "10^{10^{10}}"
    # the worker is replaced: grading goes on
    assert grade(math_problem("\\frac12"), "\\boxed{0.5}").correct is True


def test_grader_exceptions_become_ungradable(monkeypatch):
    def broken(*a, **k):
        raise RuntimeError("kaboom")

    monkeypatch.setattr(grading, "check_math", broken)
    v = grade(math_problem("5"), "\\boxed{6}")
    assert v.status == "ungradable" and v.correct is None and "kaboom" in v.reason
    weird = Problem(id="w", prompt="q", answer="1")
    weird.kind = "essay"  # type: ignore[assignment]
    assert grade(weird, "\\boxed{1}").status == "ungradable"
    assert grade(object(), "\\boxed{1}").status == "ungradable"  # not even a Problem


@pytest.mark.parametrize("backend", ["subprocess", "thread"])
def test_math_grading_off_the_main_thread(backend):
    """Inside a worker thread signal.alarm cannot be used: grading must still work."""
    results: dict[str, Verdict] = {}

    def work():
        results["ok"] = grade(math_problem("\\frac{1}{2}"), "\\boxed{0.5}", math_backend=backend)
        results["bad"] = grade(math_problem("\\frac{1}{2}"), "\\boxed{0.4}", math_backend=backend)

    t = threading.Thread(target=work)
    t.start()
    t.join(60)
    assert results["ok"].correct is True and results["bad"].correct is False


def test_no_signal_based_timeouts_in_graders():
    src = Path(grading.__file__).parent
    forbidden = [r"signal\.alarm\s*\(", r"\bSIGALRM\b", r"setitimer\s*\(", r"^\s*(import|from)\s+multiprocessing",
                 r"\bsignal\.signal\s*\("]
    for f in src.glob("*.py"):
        text = f.read_text()
        for pat in forbidden:
            assert not re.search(pat, text, re.M), f"{f.name} matches {pat}"
    # Math-Verify is always called with its signal-based timeouts disabled.
    for name in ("math_grader.py", "_math_worker.py"):
        text = (src / name).read_text()
        calls = re.findall(r"(?<![\w.])(parse|verify)\((.*)\)", text)
        assert calls, name
        for fn, args in calls:
            if fn == "parse":
                assert "parsing_timeout=None" in args, (name, args)
            else:
                assert "timeout_seconds=None" in args, (name, args)


def test_check_math_direct():
    assert check_math("\\frac{14}{3}", "\\dfrac{14}{3}", shortcut=False).correct is True
    assert check_math("5", "5").method == "string"


def _grade_in_pool_child() -> tuple:
    m = grade(math_problem("\\frac{1}{2}"), "\\boxed{0.5}", math_timeout=30)
    slow = grade(math_problem("5"), "\\boxed{10^{10^{10}}}", math_timeout=1.0)
    c = grade(STDIN_PROBLEM, GOOD_STDIN, code_limits=FAST)
    return m.correct, slow.status, c.correct


def test_grading_inside_a_celery_prefork_child():
    """Celery's prefork pool runs tasks in daemonic billiard children: no signal.alarm, no
    daemonic multiprocessing children allowed there. The math worker of the parent must not be
    reused by the child either."""
    billiard = pytest.importorskip("billiard")
    assert grade(math_problem("2"), "\\boxed{2.0}").correct is True  # parent may own a worker
    pool = billiard.Pool(processes=1)
    try:
        result = pool.apply_async(_grade_in_pool_child).get(timeout=120)
    finally:
        pool.terminate()
        pool.join()
    assert result == (True, "ungradable", True)
    assert grade(math_problem("\\frac{1}{2}"), "\\boxed{0.5}").correct is True  # parent still fine


# -- multiple choice -------------------------------------------------------------------------------

CHOICE = Problem(id="c", prompt="Which is prime?", answer="B", kind="choice", choices=["4", "5", "6", "8"])


@pytest.mark.parametrize(
    "output, letter",
    [
        ("\\boxed{B}", "B"),
        ("\\boxed{(B)}", "B"),
        ("$\\boxed{\\text{B}}$", "B"),
        ("\\boxed{B) 5}", "B"),
        ("\\boxed{5}", "B"),  # the text of a choice
        ("I think the answer is (B).", "B"),
        ("Answer: B", "B"),
        ("The correct answer is **C**", "C"),
        ("First I thought the answer is A, but the answer is (D).", "D"),
        ("<think>the answer is A</think>\\boxed{B}", "B"),
        ("C", "C"),
    ],
)
def test_choice_extraction(output, letter):
    v = grade(CHOICE, output)
    assert v.extracted == letter and v.status == "graded"
    assert v.correct is (letter == "B")


@pytest.mark.parametrize("output", ["", "I am not sure.", "\\boxed{E}", "the answer is E", "\\boxed{B"])
def test_choice_without_a_valid_letter_is_wrong(output):
    v = grade(CHOICE, output)
    assert v.correct is False and v.status == "graded"


def test_choice_unclosed_thinking():
    assert grade(CHOICE, "<think>the answer is B").status == "unclosed_thinking"


def test_extract_choice_respects_number_of_choices():
    assert extract_choice("the answer is (E)", n_choices=5) == "E"
    assert extract_choice("the answer is (E)", n_choices=4) is None


# -- code ------------------------------------------------------------------------------------------

STDIN_PROBLEM = Problem(
    id="add", prompt="Add two integers.", answer="", kind="code",
    tests=[{"input": "1 2\n", "output": "3\n", "testtype": "stdin"},
           {"input": "-5 7\n", "output": "2", "testtype": "stdin"}],
)
FUNC_PROBLEM = Problem(
    id="f", prompt="Add k to each.", answer="", kind="code",
    tests=[{"input": "[1, 2, 3]\n2", "output": "[3, 4, 5]", "testtype": "functional"},
           {"input": "[]\n9", "output": "[]", "testtype": "functional"}],
    metadata={"func_name": "addAll"},
)
GOOD_STDIN = "Here:\n```python\na, b = map(int, input().split())\nprint(a + b)\n```\n"
GOOD_FUNC = ("```python\nclass Solution:\n    def addAll(self, nums: List[int], k: int) -> List[int]:\n"
             "        return [x + k for x in nums]\n```")
FAST = SandboxLimits(wall_seconds=5, cpu_seconds=5)


def test_code_correct_and_wrong():
    v = grade(STDIN_PROBLEM, "<think>easy</think>" + GOOD_STDIN, code_limits=FAST)
    assert v.correct is True and v.status == "graded" and "print(a + b)" in v.extracted
    v = grade(STDIN_PROBLEM, GOOD_STDIN.replace("a + b", "a - b"), code_limits=FAST)
    assert v.correct is False and "wrong answer" in v.reason
    assert grade(FUNC_PROBLEM, GOOD_FUNC, code_limits=FAST).correct is True
    v = grade(FUNC_PROBLEM, GOOD_FUNC.replace("x + k", "x * k"), code_limits=FAST)
    assert v.correct is False


@pytest.mark.parametrize(
    "output, reason",
    [
        ("no code at all", "no ```python"),
        ("```python\ndef broken(:\n```", "runtime error"),
        ("```python\nraise ValueError('x')\n```", "runtime error"),
        ("```python\nimport sys\nsys.exit(3)\n```", "runtime error"),
        ("<think>```python\nprint(3)\n```", None),
    ],
)
def test_code_failures(output, reason):
    v = grade(STDIN_PROBLEM, output, code_limits=FAST)
    assert v.correct is False
    if reason is None:
        assert v.status == "unclosed_thinking"
    else:
        assert v.status == "graded" and reason in v.reason


def test_code_without_tests_is_ungradable():
    p = Problem(id="x", prompt="q", answer="", kind="code", tests=[])
    assert grade(p, GOOD_STDIN).status == "ungradable"


def test_code_grading_in_a_thread():
    """The sandbox uses no signals in the caller: grading from a non-main thread works (as in a
    Celery prefork child's thread pool)."""
    out: dict[str, Verdict] = {}
    t = threading.Thread(target=lambda: out.setdefault("v", grade(STDIN_PROBLEM, GOOD_STDIN, code_limits=FAST)))
    t.start()
    t.join(60)
    assert out["v"].correct is True
    out2: dict[str, Verdict] = {}
    t = threading.Thread(target=lambda: out2.setdefault(
        "v", grade(STDIN_PROBLEM, "```python\nwhile True:\n    pass\n```",
                   code_limits=SandboxLimits(wall_seconds=1.5, cpu_seconds=5))))
    t.start()
    t.join(60)
    assert out2["v"].correct is False and "time limit" in out2["v"].reason


# -- sandbox containment -----------------------------------------------------------------------------

MECHS = available_mechanisms()
MECH_IDS = [m.name for m in MECHS]
ISOLATING = [m for m in MECHS if m.name.startswith("namespaces")]
DROPPING = [m for m in MECHS if m.uid is not None]


def test_some_mechanism_is_available():
    assert MECHS, "no sandbox mechanism works on this host"
    info = grading.sandbox_info()
    assert info["mechanism"] in MECH_IDS


def _leftover_processes(run_id: str) -> list[int]:
    pids = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as fh:
                if run_id.encode() in fh.read():
                    pids.append(int(d))
        except OSError:
            pass
    return pids


def _wait_no_leftovers(run_id: str, seconds: float = 5.0) -> list[int]:
    end = time.monotonic() + seconds
    left = _leftover_processes(run_id)
    while left and time.monotonic() < end:
        time.sleep(0.1)
        left = _leftover_processes(run_id)
    return left


NET_CODE = """
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.settimeout(1)
s.connect(("127.0.0.1", {port}))
print("CONNECTED")
"""


@pytest.fixture
def listening_port():
    """A real TCP listener on the host's loopback: a connection from the sandbox must fail."""
    import socket

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    yield srv.getsockname()[1]
    srv.close()


@pytest.mark.parametrize("mech", MECHS, ids=MECH_IDS)
def test_sandbox_blocks_network(mech, listening_port):
    res = run_python(NET_CODE.format(port=listening_port), mechanism=mech, limits=FAST)
    assert "CONNECTED" not in res.stdout and res.returncode != 0


@pytest.mark.parametrize("mech", ISOLATING, ids=[m.name for m in ISOLATING])
def test_network_namespace_blocks_without_audit_hook(mech, listening_port):
    res = run_python(NET_CODE.format(port=listening_port), mechanism=mech, limits=FAST, audit=False)
    assert "CONNECTED" not in res.stdout and res.returncode != 0
    assert "unreachable" in res.stderr.lower() or "refused" in res.stderr.lower() or "Errno" in res.stderr


def _escape_paths() -> list[Path]:
    tag = uuid.uuid4().hex[:10]
    return [Path(f"/tmp/escape_{tag}"), REPO / f"escape_{tag}", Path(f"/var/tmp/escape_{tag}"),
            Path.home() / f"escape_{tag}"]


WRITE_CODE = """
import os
for p in {paths!r}:
    try:
        with open(p, "w") as fh:
            fh.write("escaped")
        print("WROTE", p)
    except Exception as exc:
        print("BLOCKED", p, type(exc).__name__)
open("inside.txt", "w").write("fine")
print("INSIDE", open("inside.txt").read())
"""


@pytest.mark.parametrize("mech", MECHS, ids=MECH_IDS)
def test_sandbox_blocks_writes_outside_workdir(mech):
    paths = _escape_paths()
    try:
        res = run_python(WRITE_CODE.format(paths=[str(p) for p in paths]), mechanism=mech, limits=FAST)
        assert "INSIDE fine" in res.stdout, res.stderr  # its own temp dir is writable
        for p in paths:
            assert not p.exists(), f"sandbox wrote {p}"
    finally:
        for p in paths:
            p.unlink(missing_ok=True)


@pytest.mark.parametrize("mech", ISOLATING, ids=[m.name for m in ISOLATING])
def test_mount_namespace_contains_writes_without_audit_hook(mech):
    paths = _escape_paths()
    try:
        res = run_python(WRITE_CODE.format(paths=[str(p) for p in paths]), mechanism=mech, limits=FAST, audit=False)
        assert "INSIDE fine" in res.stdout, res.stderr
        for p in paths:
            assert not p.exists(), f"sandbox wrote {p}"
        assert f"BLOCKED {paths[1]}" in res.stdout  # the repo is read-only
    finally:
        for p in paths:
            p.unlink(missing_ok=True)


FORK_BOMB = """
import os
while True:
    try:
        os.fork()
    except OSError:
        pass
"""


@pytest.mark.parametrize("mech", MECHS, ids=MECH_IDS)
def test_fork_bomb_contained(mech):
    t = time.monotonic()
    res = run_python(FORK_BOMB, mechanism=mech, limits=SandboxLimits(wall_seconds=1, cpu_seconds=2))
    assert time.monotonic() - t < 10
    assert not res.ok
    assert _wait_no_leftovers(res.run_id) == []


@pytest.mark.parametrize("mech", DROPPING, ids=[m.name for m in DROPPING])
def test_fork_bomb_contained_by_os_limits(mech):
    """Without the audit hook: RLIMIT_NPROC for the unprivileged uid (and the PID namespace)
    hold it; everything is gone after the deadline."""
    t = time.monotonic()
    res = run_python(FORK_BOMB, mechanism=mech, audit=False,
                     limits=SandboxLimits(wall_seconds=2, cpu_seconds=2, max_processes=16))
    assert time.monotonic() - t < 20
    assert not res.ok
    assert _wait_no_leftovers(res.run_id) == []


@pytest.mark.parametrize("mech", MECHS, ids=MECH_IDS)
def test_infinite_loop_killed_at_timeout(mech):
    t = time.monotonic()
    res = run_python("while True:\n    pass\n", mechanism=mech,
                     limits=SandboxLimits(wall_seconds=1.5, cpu_seconds=30))
    elapsed = time.monotonic() - t
    assert res.timed_out and res.returncode is None
    assert 1.4 <= elapsed < 6
    assert _wait_no_leftovers(res.run_id) == []


def test_sleeping_program_killed_at_timeout():
    t = time.monotonic()
    res = run_python("import time\ntime.sleep(60)\n", limits=SandboxLimits(wall_seconds=1.0))
    assert res.timed_out and time.monotonic() - t < 6


@pytest.mark.parametrize("mech", MECHS, ids=MECH_IDS)
def test_huge_allocation_fails(mech):
    res = run_python("x = bytearray(8 << 30)\nprint('ALLOCATED', len(x))\n", mechanism=mech,
                     limits=SandboxLimits(wall_seconds=10, memory_bytes=512 << 20))
    assert "ALLOCATED" not in res.stdout and res.returncode != 0
    assert "MemoryError" in res.stderr


def test_output_flood_is_cut():
    res = run_python("while True:\n    print('x' * 1000)\n",
                     limits=SandboxLimits(wall_seconds=10, max_output_bytes=1 << 20))
    assert res.output_truncated and not res.ok


def test_sandbox_environment():
    res = run_python(
        "import os\nprint(os.environ.get('HOME') == os.getcwd(), sorted(os.listdir('.')))\n"
        "print('SECRET' in os.environ)\n",
        limits=FAST,
    )
    assert res.returncode == 0, res.stderr
    first, second = res.stdout.splitlines()[:2]
    assert first.startswith("True") and "solution.py" in first
    assert second == "False"


# -- optional: the shared offline data -------------------------------------------------------------

@pytest.mark.skipif(not (SHARED_DATA / "math.jsonl").is_file(), reason="shared reasoning data not present")
def test_math500_gold_answers_verify_against_themselves(monkeypatch):
    from vase.tasks import get_task

    monkeypatch.setenv("VASE_DATA_DIR", str(SHARED_DATA))
    problems = get_task("math500").load()
    assert len(problems) == 500
    ok = sum(check_math(p.answer, p.answer, shortcut=False).correct for p in problems)
    assert ok / len(problems) >= 0.99
    boxed = sum(bool(grade(p, f"<think>x</think>\\boxed{{{p.answer}}}").correct) for p in problems[:100])
    assert boxed == 100
