"""Benchmark tasks: the :class:`Problem` record, task sources and a registry by name.

>>> from vase.tasks import get_task
>>> problems = get_task("arith-chain").load(limit=5, seed=0)
"""

from .base import PROBLEM_KINDS, Problem, ProblemKind, Task, TaskProtocol, problems_fingerprint
from .hub import DATA_DIR_ENV, GPQATask, GSM8KTask, HubTask, LiveCodeBenchTask, decode_lcb_tests
from .jsonl import JsonlTask, read_jsonl
from .registry import get_task, list_tasks, parameter_table_markdown, register_task, task_names, unregister_task
from .synthetic import ArithChainTask, CountItemsTask, FactRecallTask, GeneratedTask

__all__ = [
    "DATA_DIR_ENV",
    "PROBLEM_KINDS",
    "ArithChainTask",
    "CountItemsTask",
    "FactRecallTask",
    "GPQATask",
    "GSM8KTask",
    "GeneratedTask",
    "HubTask",
    "JsonlTask",
    "LiveCodeBenchTask",
    "Problem",
    "ProblemKind",
    "Task",
    "TaskProtocol",
    "decode_lcb_tests",
    "get_task",
    "list_tasks",
    "parameter_table_markdown",
    "problems_fingerprint",
    "read_jsonl",
    "register_task",
    "task_names",
    "unregister_task",
]
