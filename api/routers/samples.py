"""/v1/samples: one sample (prompt, output, verdict, metrics, loop span) and its eviction trace."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query

from vase.store import Store

from .. import deps
from ..errors import ApiError, invalid, not_found
from ..responses import errors
from ..schemas import HeadTrace, SampleOut, TraceOut

router = APIRouter(prefix="/v1/samples", tags=["samples"])

SampleId = Annotated[int, Path(ge=1, le=2**63 - 1, description="The sample id.")]
_METRIC_COLUMNS = ("new_tokens", "truncated", "tokens_per_s", "kv_bytes_peak", "evictions", "sparsity", "kl_mean",
                   "top1_agreement", "first_divergence")


def _sample(store: Store, sample_id: int) -> dict[str, Any]:
    sample = store.get_sample(sample_id)
    if sample is None:
        raise not_found(f"sample {sample_id}")
    return sample


@router.get("/{sample_id}", response_model=SampleOut, summary="A sample: prompt, output, verdict, metrics, loop",
            responses=errors(401, 404, 422, 503))
def get_sample(sample_id: SampleId, _reader: str | None = Depends(deps.require_reader),
               store: Store = Depends(deps.store)) -> SampleOut:
    s = _sample(store, sample_id)
    run = store.get_run(s["run_id"])
    extra = dict(s.get("metrics") or {})
    gold = extra.pop("answer", None)
    metrics = {k: s.get(k) for k in _METRIC_COLUMNS}
    metrics.update(extra)
    return SampleOut(
        id=s["id"], job_id=s.get("job_id"),
        run=None if run is None else {"id": run["id"], "method": run["method"], "params": run.get("params") or {},
                                      "budget": run.get("budget"), "residual": run.get("residual"),
                                      "model": run.get("model")},
        problem_id=s["problem_id"], sample_index=s["sample_index"], seed=s.get("seed"),
        eviction_seed=s.get("eviction_seed"), prompt=s.get("prompt"), output=s.get("output"),
        thinking=s.get("thinking"), answer_text=s.get("answer_text"),
        verdict={"correct": s.get("correct"), "status": s.get("grade_status"), "reason": s.get("grade_reason"),
                 "extracted": s.get("extracted"), "answer": None if gold is None else str(gold),
                 "correct_flex": s.get("correct_flex"), "extracted_flex": s.get("extracted_flex"),
                 "flex_rule": s.get("flex_rule")},
        loop={"detected": s.get("loop_detected"), "start": s.get("loop_start"), "span": s.get("loop_span")},
        metrics=metrics, trace=s.get("trace"), created_at=s.get("created_at"),
    )


@router.get(
    "/{sample_id}/trace", response_model=TraceOut, summary="What the cache held, by layer, head and step",
    responses=errors(401, 404, 422, 503),
    description="The eviction trace of a sample whose job ran with `trace` on. Without parameters: the "
                "geometry and the per-layer summary. With `layer` and `head` (full traces): every eviction "
                "of that head (step and evicted positions); add `step` for the positions it held after that "
                "decode step (0: right after the prompt), `survival=true` for a kept-fraction heatmap.",
)
def get_trace(
    sample_id: SampleId,
    layer: int | None = Query(None, ge=0, le=10_000, description="Layer index."),
    head: int | None = Query(None, ge=0, le=10_000, description="KV head index."),
    step: int | None = Query(None, ge=0, le=10_000_000, description="Decode step (0: after the prompt)."),
    survival: bool = Query(False, description="Include the survival heatmap of (layer, head)."),
    max_positions: int = Query(256, ge=1, le=4096, description="Heatmap rows (position bins) at most."),
    max_steps: int = Query(256, ge=1, le=4096, description="Heatmap columns (step bins) at most."),
    _reader: str | None = Depends(deps.require_reader),
    store: Store = Depends(deps.store),
) -> TraceOut:
    from vase import traces

    _sample(store, sample_id)
    trace = store.get_trace(sample_id, with_data=True)
    if trace is None:
        raise not_found(f"a trace of sample {sample_id} (its job ran with trace 'off')")
    meta = trace.get("meta") or {}
    out: dict[str, Any] = {
        "sample_id": sample_id, "level": trace["level"], "encoding": trace.get("encoding"),
        "n_events": trace.get("n_events"), "n_evicted": trace.get("n_evicted"), "nbytes": trace.get("nbytes"),
        "prompt_length": meta.get("prompt_length"), "n_steps": meta.get("n_steps"),
        "num_layers": meta.get("num_layers"), "num_kv_heads": meta.get("num_kv_heads"), "summary": meta or None,
    }
    wants_head = layer is not None or head is not None or step is not None or survival
    if not wants_head:
        return TraceOut(**out)
    if layer is None:
        raise invalid("layer", "is required with head, step or survival")
    if head is None:
        raise invalid("head", "is required with layer")
    if trace["level"] != "full" or not trace.get("data"):
        raise invalid("layer", f"needs a full trace; this sample's trace is {trace['level']!r} (counts only)")
    try:
        reader = traces.decode(trace["data"])
    except ValueError as exc:
        raise ApiError(409, f"the stored trace cannot be decoded: {exc}") from None
    out.update(prompt_length=reader.prompt_length, n_steps=reader.n_steps, num_layers=reader.num_layers,
               num_kv_heads=reader.num_kv_heads)
    if layer >= reader.num_layers:
        raise invalid("layer", f"must be below {reader.num_layers} (the model's layers)", value=layer)
    if head >= reader.num_kv_heads:
        raise invalid("head", f"must be below {reader.num_kv_heads} (the model's KV heads)", value=head)
    steps, evicted = reader.eviction_timeline(layer, head)
    head_out: dict[str, Any] = {
        "layer": layer, "head": head,
        "events": [{"step": int(s), "evicted": [int(p) for p in e]} for s, e in zip(steps, evicted, strict=True)],
    }
    if step is not None:
        held = reader.held_positions(layer, head, step)
        head_out["held"] = {"step": min(step, reader.n_steps), "positions": [int(p) for p in held],
                            "count": int(held.size)}
    if survival:
        head_out["survival"] = reader.survival_matrix(layer, head, max_positions, max_steps).to_dict()
    out["head"] = HeadTrace(**head_out)
    return TraceOut(**out)
