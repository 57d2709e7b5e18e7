"""Task registry: built-in tasks by name, plus ``jsonl:`` specs resolved on demand."""

from __future__ import annotations

import threading
from typing import Any, Callable

from .base import Task
from .hub import builtin_hub_tasks
from .jsonl import JSONL_PREFIX, JsonlTask
from .synthetic import ArithChainTask, CountItemsTask, FactRecallTask, GeneratedTask

PARAMETERS_SEPARATOR = "?"

TaskFactory = Callable[[], Task]

_REGISTRY: dict[str, TaskFactory] = {}
_INSTANCES: dict[str, Task] = {}
_LOCK = threading.Lock()


def register_task(name: str | Task, factory: TaskFactory | Task | None = None, *,
                  replace: bool = False) -> None:
    """Register a task under ``name``.

    Accepts ``register_task(task_instance)``, ``register_task("name", task_instance)`` or
    ``register_task("name", zero_arg_factory)``. Registering an existing name raises
    ValueError unless ``replace=True``.
    """
    if isinstance(name, Task):
        factory, name = name, name.name
    if not isinstance(name, str) or not name:
        raise ValueError("task name must be a non-empty string")
    if name.startswith(JSONL_PREFIX):
        raise ValueError(f"names starting with {JSONL_PREFIX!r} are reserved for JSONL specs")
    if factory is None:
        raise ValueError("register_task needs a Task or a factory")
    with _LOCK:
        if name in _REGISTRY and not replace:
            raise ValueError(f"task {name!r} is already registered")
        if isinstance(factory, Task):
            inst = factory
            _REGISTRY[name] = lambda: inst
        else:
            _REGISTRY[name] = factory
        _INSTANCES.pop(name, None)


def unregister_task(name: str) -> None:
    with _LOCK:
        _REGISTRY.pop(name, None)
        _INSTANCES.pop(name, None)


def task_names() -> list[str]:
    return sorted(_REGISTRY)


def get_task(name: str) -> Task:
    """The task registered under ``name``, or a :class:`JsonlTask` for a ``jsonl:`` spec.

    Unknown names raise ValueError naming the task and listing the known ones.
    """
    if not isinstance(name, str):
        raise ValueError(f"task name must be a string, got {type(name).__name__}")
    if name.startswith(JSONL_PREFIX):
        return JsonlTask.from_spec(name)
    base, separator, query = name.partition(PARAMETERS_SEPARATOR)
    if separator:
        plain = get_task(base)
        if not isinstance(plain, GeneratedTask):
            raise ValueError(f"task {base!r} takes no parameters (generated tasks do: see `vase tasks`)")
        with _LOCK:
            inst = _INSTANCES.get(name)
        if inst is None:
            inst = type(plain).from_query(query)
            with _LOCK:
                _INSTANCES[name] = inst
        return inst
    with _LOCK:
        inst = _INSTANCES.get(name)
        if inst is not None:
            return inst
        factory = _REGISTRY.get(name)
        if factory is None:
            known = ", ".join(sorted(_REGISTRY))
            raise ValueError(
                f"unknown task {name!r}; known tasks: {known} "
                f"(or a local file as 'jsonl:/path/file.jsonl?question=...&answer=...')"
            )
        inst = factory()
        _INSTANCES[name] = inst
        return inst


def list_tasks() -> list[dict[str, Any]]:
    """``[{"name", "offline", "size", "description", "params"}]`` for every registered task, sorted by
    name; ``params`` maps a generated task's difficulty parameters to their default, range and help."""
    out = []
    for name in task_names():
        task = get_task(name)
        try:
            size = task.size()
        except Exception:  # a broken offline copy must not break the listing
            size = None
        params = task.describe_parameters() if isinstance(task, GeneratedTask) else {}
        out.append({"name": name, "offline": bool(task.offline), "size": size,
                    "description": getattr(task, "description", ""), "params": params})
    return out


def parameter_table_markdown() -> str:
    """The generated tasks' parameters as the README's markdown table (task, parameter, default,
    range, meaning), one row per parameter, tasks by name; the README shows exactly this."""
    lines = ["| task | parameter | default | range | meaning |", "| --- | --- | --- | --- | --- |"]
    for name in task_names():
        task = get_task(name)
        if not isinstance(task, GeneratedTask):
            continue
        for param, p in task.describe_parameters().items():
            lines.append(f"| `{name}` | `{param}` | {p['default']} | {p['min']}\u2013{p['max']} | {p['help']} |")
    return "\n".join(lines)


def _register_builtins() -> None:
    for cls in (ArithChainTask, FactRecallTask, CountItemsTask):
        register_task(cls.name, cls, replace=True)
    for task in builtin_hub_tasks():
        register_task(task.name, task, replace=True)


_register_builtins()
