"""Tasks: the Problem record, registry, JSONL mapping, hub mapping (offline fakes only) and the
seeded offline generators."""

from __future__ import annotations

import base64
import json
import pickle
import re
import zlib
from pathlib import Path

import pytest

from vase.tasks import (
    DATA_DIR_ENV,
    HubTask,
    JsonlTask,
    Problem,
    Task,
    decode_lcb_tests,
    get_task,
    list_tasks,
    parameter_table_markdown,
    register_task,
    unregister_task,
)
from vase.tasks.synthetic import FactRecallTask, TaskParameterError

HUB_TASKS = {
    "aime24": 30, "aime25": 30, "aime26": 30, "math500": 500, "hmmt25": 30,
    "gpqa-diamond": 198, "gsm8k": 1319, "amc": 83, "livecodebench-v6-medium": None,
}
OFFLINE_TASKS = ("arith-chain", "fact-recall", "count-items")


@pytest.fixture(autouse=True)
def _no_hub(monkeypatch):
    """No test may reach the hub: loading from it fails loudly."""
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)

    def boom(self):
        raise AssertionError(f"test tried to load {self.hub_id} from the hub")

    monkeypatch.setattr(HubTask, "_hub_rows", boom)
    from vase.tasks.hub import LiveCodeBenchTask

    monkeypatch.setattr(LiveCodeBenchTask, "_hub_rows", boom)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


# -- Problem ---------------------------------------------------------------------------------------

def test_problem_roundtrip_and_validation():
    p = Problem(id=3, prompt="What is 1+1?", answer=2, kind="math", metadata={"a": 1})
    assert p.id == "3" and p.answer == "2" and p.question == "What is 1+1?"
    assert Problem.from_dict(p.to_dict()) == p
    with pytest.raises(ValueError, match="kind"):
        Problem(id="x", prompt="q", answer="1", kind="essay")  # type: ignore[arg-type]


# -- registry --------------------------------------------------------------------------------------

def test_list_tasks_lists_builtins_with_sizes():
    rows = {r["name"]: r for r in list_tasks()}
    for name in OFFLINE_TASKS:
        assert rows[name]["offline"] is True
        assert rows[name]["size"] == 50
    for name, size in HUB_TASKS.items():
        assert rows[name]["offline"] is False, name
        assert rows[name]["size"] == size, name
    for r in rows.values():
        assert {"name", "offline", "size"} <= set(r)


def test_get_task_unknown_names_task_and_known():
    with pytest.raises(ValueError) as ei:
        get_task("no-such-task")
    msg = str(ei.value)
    assert "no-such-task" in msg and "arith-chain" in msg and "math500" in msg


def test_register_task_custom_and_duplicate():
    class Tiny(Task):
        name = "tiny-test-task"

        def _load_all(self, seed):
            return [Problem(id=str(i), prompt=f"q{i}", answer=str(i)) for i in range(3)]

    register_task(Tiny())
    try:
        assert get_task("tiny-test-task").size() == 3
        assert [p.id for p in get_task("tiny-test-task").load(limit=2)] == ["0", "1"]
        assert any(r["name"] == "tiny-test-task" for r in list_tasks())
        with pytest.raises(ValueError, match="already registered"):
            register_task(Tiny())
        register_task("tiny-test-task", Tiny, replace=True)
    finally:
        unregister_task("tiny-test-task")
    with pytest.raises(ValueError):
        get_task("tiny-test-task")


# -- JSONL -----------------------------------------------------------------------------------------

def test_jsonl_task_field_mapping(tmp_path):
    f = write_jsonl(tmp_path / "set.jsonl", [
        {"q": "What is 2+2?", "a": 4, "pid": "p1", "level": 1},
        {"q": "What is 1/2?", "a": "\\frac{1}{2}", "pid": "p2", "level": 2},
        {"q": "Integral?", "a": 27.0, "pid": "p3"},
    ])
    task = JsonlTask(f, question_field="q", answer_field="a", id_field="pid", kind="math")
    probs = task.load()
    assert task.offline and task.size() == 3
    assert [p.id for p in probs] == ["p1", "p2", "p3"]
    assert probs[0].prompt == "What is 2+2?" and probs[0].answer == "4"
    assert probs[1].answer == "\\frac{1}{2}"
    assert probs[2].answer == "27"  # integral float
    assert probs[0].metadata["level"] == 1
    assert [p.id for p in task.load(limit=2)] == ["p1", "p2"]
    with pytest.raises(ValueError):
        task.load(limit=-1)


def test_jsonl_task_bad_mapping_names_the_field(tmp_path):
    f = write_jsonl(tmp_path / "set.jsonl", [{"problem": "x", "answer": "1"}])
    with pytest.raises(ValueError, match="'question'"):
        JsonlTask(f, question_field="question").load()
    with pytest.raises(ValueError, match="'solution'"):
        JsonlTask(f, answer_field="solution").load()
    with pytest.raises(ValueError, match="'uid'"):
        JsonlTask(f, id_field="uid").load()
    with pytest.raises(ValueError, match="not found"):
        JsonlTask(tmp_path / "missing.jsonl").load()
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"problem": "x", "answer": 1}\n{not json\n')
    with pytest.raises(ValueError, match="line 2|:2:"):
        JsonlTask(bad).load()


def test_jsonl_spec_through_registry(tmp_path):
    f = write_jsonl(tmp_path / "my set.jsonl", [{"problem": "p", "sol": "7"}, {"problem": "r", "sol": "8"}])
    task = get_task(f"jsonl:{f}?question=problem&answer=sol&kind=math")
    assert isinstance(task, JsonlTask)
    probs = task.load()
    assert [(p.id, p.answer) for p in probs] == [("0", "7"), ("1", "8")]  # line index as id
    with pytest.raises(ValueError, match="unknown jsonl task option"):
        get_task(f"jsonl:{f}?question=problem&bogus=1")
    with pytest.raises(ValueError, match="'answer'"):
        get_task(f"jsonl:{f}?question=problem").load()


def test_jsonl_choice_answer_text_becomes_letter(tmp_path):
    f = write_jsonl(tmp_path / "mc.jsonl", [
        {"question": "Color of the sky?", "options": ["red", "blue", "green"], "answer": "blue"},
        {"question": "2+2?", "options": ["3", "4"], "answer": "B"},
    ])
    probs = JsonlTask(f, question_field="question", choices_field="options", kind="choice").load()
    assert probs[0].answer == "B" and probs[0].choices == ["red", "blue", "green"]
    assert probs[1].answer == "B"


def test_fingerprint_tracks_content(tmp_path):
    f = write_jsonl(tmp_path / "a.jsonl", [{"problem": "x", "answer": "1"}])
    fp1 = JsonlTask(f).fingerprint()
    assert fp1 == JsonlTask(f).fingerprint() and len(fp1) == 64
    write_jsonl(f, [{"problem": "x", "answer": "2"}])
    assert JsonlTask(f).fingerprint() != fp1


# -- hub tasks through offline fakes -----------------------------------------------------------------

def test_hub_task_uses_vase_data_dir(tmp_path, monkeypatch):
    write_jsonl(tmp_path / "math.jsonl", [
        {"problem": "Compute 1+1.", "answer": "2", "unique_id": "test/algebra/1.json", "solution": "..."},
        {"problem": "Compute 1/2.", "answer": "\\frac12", "unique_id": "test/algebra/2.json"},
    ])
    write_jsonl(tmp_path / "aime24.jsonl", [{"id": 60, "problem": "AIME?", "answer": "204"}])
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))
    task = get_task("math500")
    assert task.offline and task.size() == 2
    probs = task.load()
    assert probs[0].id == "test/algebra/1.json" and probs[1].answer == "\\frac12"
    aime = get_task("aime24").load()
    assert aime[0].id == "60" and aime[0].answer == "204"
    rows = {r["name"]: r for r in list_tasks()}
    assert rows["math500"]["offline"] and rows["aime24"]["offline"] and not rows["gsm8k"]["offline"]


def test_gsm8k_mapping(tmp_path, monkeypatch):
    write_jsonl(tmp_path / "gsm8k.jsonl", [
        {"question": "Sam has 3 apples...", "answer": "He has 3+4=<<3+4=7>>7.\n#### 1,007"},
    ])
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))
    (p,) = get_task("gsm8k").load()
    assert p.answer == "1007" and p.kind == "math" and p.id == "0"


def test_gpqa_mapping_shuffles_by_seed(tmp_path, monkeypatch):
    rows = [
        {"Record ID": f"rec{i}", "Question": f"Question {i}?", "Correct Answer": f"right{i}",
         "Incorrect Answer 1": f"w1-{i}", "Incorrect Answer 2": f"w2-{i}", "Incorrect Answer 3": f"w3-{i}"}
        for i in range(12)
    ]
    write_jsonl(tmp_path / "gpqa_diamond.jsonl", rows)
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))
    task = get_task("gpqa-diamond")
    a0 = task.load(seed=0)
    for p, row in zip(a0, rows):
        assert p.kind == "choice" and len(p.choices) == 4
        assert sorted(p.choices) == sorted([row["Correct Answer"], row["Incorrect Answer 1"],
                                            row["Incorrect Answer 2"], row["Incorrect Answer 3"]])
        assert p.choices["ABCD".index(p.answer)] == row["Correct Answer"]
    assert [p.choices for p in task.load(seed=0)] == [p.choices for p in a0]  # deterministic
    a1 = task.load(seed=1)
    assert [p.choices for p in a1] != [p.choices for p in a0]
    assert len({p.answer for p in a0}) > 1  # the gold letter is not always the same


def _lcb_encode(tests: list[dict]) -> str:
    return base64.b64encode(zlib.compress(pickle.dumps(json.dumps(tests)))).decode()


def test_livecodebench_mapping(tmp_path, monkeypatch):
    public = [{"input": "1 2\n", "output": "3\n", "testtype": "stdin"}]
    private = [{"input": "5 5\n", "output": "10\n", "testtype": "stdin"}]
    rows = [
        {"question_id": "abc301_a", "question_title": "Add", "question_content": "Add two numbers.",
         "platform": "atcoder", "difficulty": "medium", "starter_code": "",
         "public_test_cases": json.dumps(public), "private_test_cases": _lcb_encode(private),
         "metadata": "{}"},
        {"question_id": "lc1", "question_title": "Two Sum", "question_content": "Return the sum.",
         "platform": "leetcode", "difficulty": "medium",
         "starter_code": "class Solution:\n    def twoSum(self, a: int, b: int) -> int:\n        ",
         "public_test_cases": json.dumps([{"input": "1\n2", "output": "3", "testtype": "functional"}]),
         "private_test_cases": json.dumps([]), "metadata": json.dumps({"func_name": "twoSum"})},
        {"question_id": "hard1", "question_content": "Hard.", "difficulty": "hard",
         "public_test_cases": "[]", "private_test_cases": "[]", "metadata": "{}"},
    ]
    write_jsonl(tmp_path / "livecodebench-v6-medium.jsonl", rows)
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))
    probs = get_task("livecodebench-v6-medium").load()
    assert [p.id for p in probs] == ["abc301_a", "lc1"]  # hard filtered out
    a, b = probs
    assert a.kind == "code" and a.tests == public + private
    assert "stdin" in a.prompt and "Add two numbers." in a.prompt
    assert b.metadata["func_name"] == "twoSum" and "class Solution" in b.prompt
    assert b.tests[0]["testtype"] == "functional"


def test_lcb_decoder_refuses_arbitrary_pickles():
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    blob = base64.b64encode(zlib.compress(pickle.dumps(Evil()))).decode()
    with pytest.raises(pickle.UnpicklingError):
        decode_lcb_tests(blob)


# -- offline generators ----------------------------------------------------------------------------

def _recompute_arith(text: str) -> tuple[int, int]:
    m = re.match(r"Start with (\d+)\. (.*) What is the result\?$", text)
    assert m, text
    value = int(m.group(1))
    steps = re.findall(r"(Add|Subtract|Multiply by|Divide by) (\d+)\.", m.group(2))
    assert len(steps) == m.group(2).count(".")
    for op, k in steps:
        k = int(k)
        if op == "Add":
            value += k
        elif op == "Subtract":
            value -= k
        elif op == "Multiply by":
            value *= k
        else:
            assert value % k == 0, "division must be exact"
            value //= k
        assert value >= 0
    return value, len(steps)


@pytest.mark.parametrize("seed", [0, 1, 12345])
def test_arith_chain_answers_exact(seed):
    probs = get_task("arith-chain").load(seed=seed)
    assert len(probs) == 50
    for p in probs:
        value, n_steps = _recompute_arith(p.prompt)
        assert 4 <= n_steps <= 8
        assert p.answer == str(value) and p.kind == "math"


def test_fact_recall_answers_exact():
    probs = get_task("fact-recall?facts=20&filler=60").load(limit=20, seed=3)
    for p in probs:
        facts = dict(re.findall(r"The code of (\w+) is (\d+)\.", p.prompt))
        assert len(facts) == 20
        q = re.search(r"What is the code of (\w+)\?\s*$", p.prompt)
        assert q and p.answer == facts[q.group(1)]
        assert len(p.prompt) > 2000  # a long distractor paragraph
        # the filler holds no numbers that could be mistaken for codes
        filler = p.prompt.split("\n\n")[1]
        assert not re.search(r"\d", filler)


def test_count_items_answers_exact():
    for p in get_task("count-items").load(limit=20, seed=7):
        m = re.match(r"Here is a list of items: (.*)\.\nHow many times does the word \"(\w+)\" appear", p.prompt)
        assert m
        items = m.group(1).split(", ")
        assert 30 <= len(items) <= 60
        assert p.answer == str(items.count(m.group(2))) and int(p.answer) >= 1


@pytest.mark.parametrize("name", OFFLINE_TASKS)
def test_generators_deterministic_by_seed(name):
    task = get_task(name)
    a = task.load(seed=11)
    assert a == task.load(seed=11)
    assert task.fingerprint(seed=11) == task.fingerprint(seed=11)
    assert [p.prompt for p in task.load(seed=12)] != [p.prompt for p in a]
    assert task.fingerprint(seed=12) != task.fingerprint(seed=11)
    assert task.load(limit=5, seed=11) == a[:5]  # prefix
    assert len(task.load(limit=80, seed=11)) == 80 and task.load(limit=80, seed=11)[:50] == a
    assert len({p.id for p in a}) == len(a)
    assert task.load(limit=0) == []


def test_generated_task_parameters_change_the_problems():
    plain = get_task("fact-recall")
    small = get_task("fact-recall?facts=4&filler=3")
    for p in small.load(limit=5, seed=1):
        facts = dict(re.findall(r"The code of (\w+) is (\d+)\.", p.prompt))
        assert len(facts) == 4 and p.answer == facts[p.metadata["target"]]
        assert len(p.prompt.split("\n\n")[1].split(". ")) == 3
    assert small.fingerprint(limit=5) != plain.fingerprint(limit=5)
    defaults = "&".join(f"{k}={v.default}" for k, v in FactRecallTask.PARAMETERS.items())
    assert get_task(f"fact-recall?{defaults}").load(limit=3) == plain.load(limit=3)
    items = get_task("count-items?min_items=5&max_items=5&vocab=2").load(limit=3)
    assert all(len(p.metadata["items"]) == 5 and len(set(p.metadata["items"])) <= 2 for p in items)
    chains = get_task("arith-chain?min_steps=2&max_steps=2").load(limit=5)
    assert all(len(p.metadata["steps"]) == 2 for p in chains)


@pytest.mark.parametrize(
    "name,param,rule",
    [
        ("fact-recall?facts=0", "facts", "within [1, 40]"),
        ("fact-recall?facts=x", "facts", "must be an integer"),
        ("fact-recall?facts=2.5", "facts", "must be an integer"),
        ("fact-recall?needles=3", "needles", "is not a parameter"),
        ("fact-recall?facts=3&facts=4", "facts", "once"),
        ("fact-recall?facts", "query", "NAME=VALUE"),
        ("count-items?min_items=9&max_items=3", "min_items", "<= max_items"),
        ("arith-chain?min_steps=9", "min_steps", "<= max_steps"),
    ],
)
def test_bad_task_parameters_name_the_parameter_and_rule(name, param, rule):
    with pytest.raises(TaskParameterError) as err:
        get_task(name)
    assert err.value.param == param and rule in str(err.value) and param in str(err.value)


def test_only_generated_tasks_take_parameters():
    with pytest.raises(ValueError, match="takes no parameters"):
        get_task("math500?level=5")


def test_list_tasks_gives_parameters_with_defaults():
    listed = {t["name"]: t for t in list_tasks()}
    assert listed["fact-recall"]["params"]["facts"]["default"] == FactRecallTask.PARAMETERS["facts"].default
    assert set(listed["count-items"]["params"]) == {"min_items", "max_items", "vocab"}
    assert listed["math500"]["params"] == {}


def test_readme_shows_the_generated_tasks_parameters_as_the_code_defines_them():
    """The README's parameter table is the rendered one, row for row: a changed default, range or
    meaning fails here until README.md is updated (`vase tasks --markdown` prints the table)."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text().splitlines()
    header = "| task | parameter | default | range | meaning |"
    assert readme.count(header) == 1
    start = readme.index(header)
    end = next(i for i in range(start, len(readme)) if not readme[i].startswith("|"))
    assert "\n".join(readme[start:end]) == parameter_table_markdown()


def test_the_parameter_table_lists_every_generated_parameter():
    rows = parameter_table_markdown().splitlines()[2:]
    for name in OFFLINE_TASKS:
        task = get_task(name)
        for param, p in task.describe_parameters().items():
            assert f"| `{name}` | `{param}` | {p['default']} | {p['min']}\u2013{p['max']} | {p['help']} |" in rows
    assert len(rows) == sum(len(get_task(n).describe_parameters()) for n in OFFLINE_TASKS)
