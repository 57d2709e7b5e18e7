"""Sizing a job before it is stored: does it fit the model's context, a worker's memory, and the
service's token cap? Nothing here loads a model or makes all of a task's problems.

- Context: every budget + residual, and the longest prompt + ``max_new_tokens``, must fit the
  model's context. The longest prompt is measured on the task's first :data:`PROMPT_PROBE`
  problems (generated lazily) in UTF-8 bytes plus the chat template's overhead: a byte-level
  tokenizer never makes more tokens than bytes, so this over-estimates, never under-estimates.
  Tasks that need a download are not probed (only ``max_new_tokens`` is checked).
- Memory: the KV cache of one problem's samples (they run as one batch) at the largest cache any
  run of the grid holds, in the dtype of the target queue's workers (float32 on CPU, bfloat16 on
  GPU), must fit the queue's ``VASE_WORKER_KV_GIB_*``.
- Tokens: samples x ``max_new_tokens`` must be at most ``VASE_MAX_JOB_TOKENS``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ..config import Settings
from .job import JobInvalid, JobSpec
from .models import ModelShape

PROMPT_PROBE = 32
TEMPLATE_OVERHEAD_TOKENS = 64  # chat-template markers and role names, generously
DTYPE_BYTES = {"cpu": 4, "gpu": 2}


@dataclass(frozen=True)
class Estimate:
    """What a job will use at most; returned with the job (``spec.service.estimate``)."""

    prompt_tokens_max: int | None  # None: the task was not probed (it needs a download)
    kv_bytes_per_sample: int
    kv_bytes_per_problem: int
    generated_tokens_max: int

    def as_dict(self) -> dict[str, int | None]:
        return asdict(self)


def longest_prompt_tokens(spec: JobSpec, n_problems: int) -> int | None:
    """An upper bound on the prompt tokens of the first problems, or None when the task needs a download."""
    from ..prompting import PAPER_INSTRUCTION, build_messages
    from ..tasks import get_task

    task = get_task(spec.task)
    if not task.offline:
        return None
    problems = task.head(min(n_problems, PROMPT_PROBE), seed=spec.task_seed)
    longest = max((sum(len(m["content"].encode()) for m in build_messages(p, PAPER_INSTRUCTION)) for p in problems),
                  default=0)
    return longest + TEMPLATE_OVERHEAD_TOKENS


def _largest_cache(spec: JobSpec, prompt: int) -> int:
    """Tokens held at most by one sample in any run: the whole sequence under the full cache (and
    selection methods, which keep it all), else max(prompt, budget) + residual."""
    from ..policies import policy_class

    sequence = prompt + spec.max_new_tokens
    held = 0
    for run in spec.runs():
        if run.budget is None or policy_class(run.method).kind != "eviction":
            held = max(held, sequence)
        else:
            held = max(held, min(sequence, max(prompt, run.budget) + run.residual))
    return held


def check_context(spec: JobSpec, shape: ModelShape, n_problems: int) -> int | None:
    """Every budget + residual, and the longest prompt + max_new_tokens, must fit the model's
    context; returns the longest prompt's bound (None: not probed)."""
    for j, budget in enumerate(spec.budgets):
        if budget + spec.residual > shape.context:
            raise JobInvalid(f"budgets[{j}]", f"budget + residual (= {budget + spec.residual}) must fit the "
                                              f"model's context ({shape.context} tokens)", budget)
    prompt = longest_prompt_tokens(spec, n_problems)
    if spec.max_new_tokens + (prompt or 0) > shape.context:
        measured = f" + the longest prompt (at most {prompt} tokens)" if prompt else ""
        raise JobInvalid("max_new_tokens", f"max_new_tokens{measured} must fit the model's context "
                                           f"({shape.context} tokens)", spec.max_new_tokens)
    return prompt


def check_load(spec: JobSpec, shape: ModelShape, *, prompt: int | None, total_samples: int, queue_kind: str,
               settings: Settings) -> Estimate:
    """One problem's KV cache must fit a worker of the queue; the job's tokens must stay under the
    cap. Returns the job's estimate."""
    per_sample = _largest_cache(spec, prompt or 0) * shape.kv_bytes_per_token(DTYPE_BYTES[queue_kind])
    per_problem = per_sample * spec.samples
    limit_gib = settings.worker_kv_gib_cpu if queue_kind == "cpu" else settings.worker_kv_gib_gpu
    if per_problem > limit_gib * 2**30:
        field = "samples" if per_sample <= limit_gib * 2**30 else "max_new_tokens"
        raise JobInvalid(field, f"the KV cache of one problem's {spec.samples} samples would take "
                                f"{per_problem / 2**30:.1f} GiB; a {queue_kind} worker gives it at most {limit_gib:g} GiB "
                                f"(VASE_WORKER_KV_GIB_{queue_kind.upper()})", getattr(spec, field))
    tokens = total_samples * spec.max_new_tokens
    if tokens > settings.max_job_tokens:
        raise JobInvalid("max_new_tokens", f"the job would generate up to {total_samples} samples x "
                                           f"{spec.max_new_tokens} tokens = {tokens} tokens; at most "
                                           f"{settings.max_job_tokens} are allowed (VASE_MAX_JOB_TOKENS)",
                         spec.max_new_tokens)
    return Estimate(prompt_tokens_max=prompt, kv_bytes_per_sample=per_sample, kv_bytes_per_problem=per_problem,
                    generated_tokens_max=tokens)


__all__ = ["DTYPE_BYTES", "Estimate", "PROMPT_PROBE", "check_context", "check_load", "longest_prompt_tokens"]
