"""Request and response bodies of the API (pydantic v2); they are the OpenAPI schema."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from vase.spec import text
from vase.store.models import JOB_STATUSES

JOB_STATUS = Literal[JOB_STATUSES]

# The body of ``POST /v1/jobs`` is the job definition itself: vase.spec.JobSpec.


# ------------------------------------------------------------------------------------------------
# Responses
# ------------------------------------------------------------------------------------------------
class FieldError(BaseModel):
    field: str = Field(description="Where: a body path (`methods[1].params.n_large`) or a parameter name.")
    location: Literal["body", "query", "path", "header"] = "body"
    rule: str = Field(description="The rule the value broke.")
    value: Any = None


class ErrorOut(BaseModel):
    error: str = Field(description="A stable code: invalid_request, not_found, unauthorized, "
                                   "database_unavailable, ...")
    message: str = Field(description="What went wrong, for people.")
    errors: list[FieldError] = Field(default_factory=list, description="Per field, for invalid requests.")


class Progress(BaseModel):
    total: int = Field(description="Samples the job will produce.")
    done: int = Field(description="Samples stored so far.")
    failed: int = Field(description="Samples given up on.")
    remaining: int
    fraction: float = Field(ge=0, le=1)


class Timings(BaseModel):
    created_at: datetime
    updated_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    heartbeat_at: datetime | None = Field(None, description="Last sign of life of a worker running the job.")
    queued_s: float | None = Field(None, description="Seconds from submission to the first worker start.")
    elapsed_s: float | None = Field(None, description="Seconds running (until now, or until it finished).")


class JobOut(BaseModel):
    id: str
    status: JOB_STATUS
    model: str
    task: str
    owner: str | None = Field(None, description="Name of the API token that submitted it.")
    progress: Progress
    timings: Timings
    error: str | None = None
    cancel_requested: bool = False
    queue: str | None = None
    chunks: int | None = Field(None, description="Worker tasks the job is split into.")
    spec: dict[str, Any] = Field(description="The job as stored: its JobSpec fields (defaults filled in) and the "
                                             "service's plan under `service`, with `estimate`: the longest "
                                             "prompt, KV bytes per sample and per problem, and generated tokens, "
                                             "at most.")


class JobList(BaseModel):
    items: list[JobOut]
    total: int = Field(description="Jobs matching the filters.")
    limit: int
    offset: int


class ResultRow(BaseModel):
    run_id: int
    task: str | None = None
    model: str | None = None
    method: str = Field(description="Method label with its non-default parameters.")
    method_name: str
    params: dict[str, Any] = Field(default_factory=dict)
    budget: int | None = None
    residual: int | None = None
    n_problems: int | None = None
    n_samples: int | None = None
    accuracy: float | None = Field(None, description="Strict: mean pass@1 over problems.")
    accuracy_se: float | None = Field(None, description="Standard error of `accuracy` over problems.")
    pass_at_k: dict[str, float] = Field(default_factory=dict, description="Strict: k -> mean unbiased pass@k.")
    accuracy_flex: float | None = Field(None, description="Flexible grading (boxed, answer phrase, trailing "
                                                          "'=', last number; last choice letter): mean pass@1.")
    accuracy_flex_se: float | None = Field(None, description="Standard error of `accuracy_flex` over problems.")
    pass_at_k_flex: dict[str, float] = Field(default_factory=dict, description="Flexible: k -> mean pass@k.")
    loop_rate: float | None = None
    truncated_rate: float | None = None
    mean_new_tokens: float | None = None
    kl_mean: float | None = None
    top1_agreement: float | None = None
    tokens_per_s: float | None = None
    kv_bytes_peak: int | None = None
    evictions: float | None = None
    sparsity: float | None = None


class ResultsOut(BaseModel):
    job_id: str
    status: JOB_STATUS
    complete: bool = Field(description="True once the job succeeded: until then the rows are partial.")
    rows: list[ResultRow]


class SampleSummary(BaseModel):
    id: int
    run_id: int
    method: str | None = None
    budget: int | None = None
    problem_id: str
    sample_index: int
    correct: bool | None = None
    correct_flex: bool | None = None
    grade_status: str | None = None
    new_tokens: int | None = None
    truncated: bool | None = None
    loop_detected: bool | None = None
    kl_mean: float | None = None
    top1_agreement: float | None = None
    trace_level: str | None = None


class SampleList(BaseModel):
    items: list[SampleSummary]
    total: int
    limit: int
    offset: int


class Verdict(BaseModel):
    correct: bool | None = None
    status: str | None = Field(None, description="Grader status (graded, no_answer, ...).")
    reason: str | None = None
    extracted: str | None = Field(None, description="The answer extracted from the output.")
    answer: str | None = Field(None, description="The gold answer.")
    correct_flex: bool | None = Field(None, description="The flexible verdict (None: undecided).")
    extracted_flex: str | None = Field(None, description="The answer the flexible rules extracted.")
    flex_rule: str | None = Field(None, description="The flexible rule that extracted it: boxed, answer_phrase, "
                                                    "equals, last_number, letter or strict.")


class LoopSpan(BaseModel):
    detected: bool | None = None
    start: int | None = Field(None, description="Token index where the repetition loop starts.")
    span: str | None = Field(None, description="The repeated text.")


class RunRef(BaseModel):
    id: int
    method: str
    params: dict[str, Any] = Field(default_factory=dict)
    budget: int | None = None
    residual: int | None = None
    model: str | None = None


class TraceRef(BaseModel):
    level: str
    encoding: str | None = None
    n_events: int | None = None
    n_evicted: int | None = None
    nbytes: int | None = None


class SampleOut(BaseModel):
    id: int
    job_id: str | None = None
    run: RunRef | None = None
    problem_id: str
    sample_index: int
    seed: int | None = None
    eviction_seed: int | None = None
    prompt: str | None = None
    output: str | None = None
    thinking: str | None = None
    answer_text: str | None = None
    verdict: Verdict
    loop: LoopSpan
    metrics: dict[str, Any] = Field(description="new_tokens, truncated, tokens_per_s, kv_bytes_peak, evictions, "
                                                "sparsity, kl_mean, top1_agreement, first_divergence, and the "
                                                "sample's other measurements (generated token ids, ...).")
    trace: TraceRef | None = None
    created_at: datetime | None = None


class HeldOut(BaseModel):
    step: int = Field(description="Decode step (0: right after the prompt), clamped to the sample's last.")
    positions: list[int] = Field(description="Original token positions the (layer, head) held after the step.")
    count: int


class EvictionEventOut(BaseModel):
    step: int
    evicted: list[int]


class SurvivalOut(BaseModel):
    values: list[list[float | None]] = Field(description="Fraction kept per (position bin, step bin); null: "
                                                         "nothing written yet.")
    position_edges: list[int]
    step_edges: list[int]


class HeadTrace(BaseModel):
    layer: int
    head: int
    events: list[EvictionEventOut] = Field(description="Every eviction of this (layer, head): step and evicted "
                                                       "positions.")
    held: HeldOut | None = Field(None, description="With `step`: the cache content after that step.")
    survival: SurvivalOut | None = Field(None, description="With `survival=true`: a down-sampled heatmap.")


class TraceOut(BaseModel):
    sample_id: int
    level: str
    encoding: str | None = None
    n_events: int | None = None
    n_evicted: int | None = None
    nbytes: int | None = None
    prompt_length: int | None = None
    n_steps: int | None = None
    num_layers: int | None = None
    num_kv_heads: int | None = None
    summary: dict[str, Any] | None = Field(None, description="Per-layer eviction counts and value statistics.")
    head: HeadTrace | None = Field(None, description="With `layer` and `head` (full traces only).")


class MethodOut(BaseModel):
    name: str
    kind: str = Field(description="none (full cache), eviction, or selection.")
    stochastic: bool
    description: str
    params: dict[str, Any] = Field(description="Parameters and their defaults.")
    reference_mode: str | None = Field(
        None, description="The authors' eviction_mode (GitHub terarachang/VaSE) this method reproduces with these "
                          "defaults; `reference_exact` jobs match it.")


class TaskOut(BaseModel):
    name: str
    offline: bool = Field(description="Runs without network access.")
    size: int | None = None
    description: str = ""
    params: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Difficulty parameters of a generated task: {name: {default, min, max, "
                                          "help}}; give them in the task name, `fact-recall?facts=8&filler=600`.")


class HealthOut(BaseModel):
    status: Literal["ok"]


class CheckOut(BaseModel):
    ok: bool
    detail: str


class ReadyOut(BaseModel):
    status: Literal["ready", "unavailable"]
    mode: Literal["embedded", "celery"]
    checks: dict[str, CheckOut]
