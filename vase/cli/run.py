"""`vase generate` (one answer under one method) and `vase bench` (a method x budget grid, stored
and compared): the library on the command line. They need nothing beyond the base install."""

from __future__ import annotations

import json
from typing import Any

import typer

from ..spec import ATTENTION_BACKENDS, JobInvalid, JobSpec
from ..traces import TRACE_LEVELS
from .common import console, emit_json, fail, progress

IMPLIES_SAMPLING = "Given without --sample/--greedy it implies --sample; with --greedy it is refused (exit 2)."


def parse_params(pairs: list[str]) -> dict[str, Any]:
    """`--param n_large=16 --param smoothing=false` → {"n_large": 16, "smoothing": False}."""
    from ..methods import parse_assignments
    from ..policies import InvalidParameter

    try:
        return parse_assignments(pairs, param="param")
    except InvalidParameter as exc:
        fail(str(exc))


def generate(
    prompt: str = typer.Option(..., "--prompt", help="The user message (sent through the chat template)."),
    method: str = typer.Option("vase", "--method"),
    budget: int | None = typer.Option(None, "--budget", help="KV pairs kept per layer and head."),
    residual: int = typer.Option(64, "--residual", help="Recency window; evictions run every `residual` steps."),
    max_new_tokens: int = typer.Option(JobSpec.default("max_new_tokens"), "--max-new-tokens"),
    seed: int = typer.Option(0, "--seed"),
    param: list[str] = typer.Option([], "--param", help="Method parameter NAME=VALUE (repeatable)."),
    model_id: str | None = typer.Option(None, "--model", help="HF hub id or local path; default: embedded SmolLM2."),
    sample: bool | None = typer.Option(None, "--sample/--greedy", help="Default: the model's generation config."),
    temperature: float | None = typer.Option(None, "--temperature", help=f"Sampling temperature. {IMPLIES_SAMPLING}"),
    top_p: float | None = typer.Option(None, "--top-p", help=f"Nucleus sampling mass. {IMPLIES_SAMPLING}"),
    top_k: int | None = typer.Option(None, "--top-k", help=f"Top-k sampling. {IMPLIES_SAMPLING}"),
    raw: bool = typer.Option(False, "--raw", help="Send the prompt as is, without the chat template."),
    attention_backend: str = typer.Option(JobSpec.default("attention_backend"), "--attention",
                                          help=" | ".join(ATTENTION_BACKENDS)),
    reference_exact: bool = typer.Option(JobSpec.default("reference_exact"), "--reference-exact",
                                         help=JobSpec.describe("reference_exact")),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Generate one answer under one cache method and report evictions, speed and KV memory."""
    from ..cache import CacheConfig
    from ..generation import SamplingConfig
    from ..policies import InvalidParameter

    params = parse_params(param)
    try:
        # fail before loading a model
        CacheConfig.build(method, params, budget=budget, residual=residual, reference_exact=reference_exact)
        sampling = SamplingConfig(do_sample=sample, temperature=temperature, top_p=top_p, top_k=top_k)
        sampling.check()
        if max_new_tokens < 1:
            raise InvalidParameter("max-new-tokens", "must be >= 1", max_new_tokens)
        if not prompt.strip():
            raise InvalidParameter("prompt", "must not be empty")
    except InvalidParameter as exc:
        fail(str(exc))

    from .. import generation
    from ..models import load_model

    model, tokenizer = load_model(model_id)
    text = prompt
    if not raw and getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )
    bar = None if as_json else progress(max_new_tokens, "decoding")
    try:
        (result,) = generation.generate(
            model, tokenizer, [text], method=method, params=params, budget=budget, residual=residual,
            max_new_tokens=max_new_tokens, seeds=[seed], sampling=sampling, attention_backend=attention_backend,
            on_step=(lambda step, cache: bar.update(1)) if bar else None, reference_exact=reference_exact,
        )
    except (InvalidParameter, ValueError) as exc:
        fail(str(exc))
    finally:
        if bar:
            bar.close()
    payload = {"method": method, "budget": budget, "residual": residual, "seed": seed,
               "reference_exact": reference_exact, **result.as_dict()}
    if as_json:
        emit_json(payload)
        return
    typer.echo(result.text)
    typer.echo(
        f"\n[{method}] {result.new_tokens} tokens, {result.tokens_per_s:.1f} tok/s, "
        f"{result.evictions} evictions, KV cache peak {result.kv_cache_bytes_peak / 2**20:.2f} MiB",
        err=True,
    )


def _default_text(name: str) -> str:
    """A list field's default as the CLI's comma-separated text (``full,vase``, ``128``)."""
    return ",".join(getattr(v, "label", None) or str(v) for v in JobSpec.default(name))


def bench(
    task: str = typer.Option(JobSpec.suggested("task"), "--task",
                             help=JobSpec.describe("task") + " Or jsonl:PATH?question=..."),
    methods: str = typer.Option(_default_text("methods"), "--methods",
                                help="Comma-separated methods; parameters after a colon, e.g. "
                                     "'full,vase:n_large=16,smoothing=false,snapkv'. " + JobSpec.describe("methods")),
    budgets: str = typer.Option(_default_text("budgets"), "--budgets", help="Comma-separated. " + JobSpec.describe("budgets")),
    residual: int = typer.Option(JobSpec.default("residual"), "--residual", help=JobSpec.describe("residual")),
    evict_after_prefill: bool = typer.Option(JobSpec.default("evict_after_prefill"), "--evict-after-prefill",
                                             help=JobSpec.describe("evict_after_prefill")),
    batch_problems: int = typer.Option(JobSpec.default("batch_problems"), "--batch-problems",
                                       help=JobSpec.describe("batch_problems")),
    samples: int = typer.Option(JobSpec.default("samples"), "--samples", help=JobSpec.describe("samples")),
    limit: int | None = typer.Option(JobSpec.default("limit"), "--limit", help="Problems to run (0 = all)."),
    seed: int = typer.Option(JobSpec.default("seeds"), "--seed", help=JobSpec.describe("seeds")),
    task_seed: int = typer.Option(JobSpec.default("task_seed"), "--task-seed", help=JobSpec.describe("task_seed")),
    max_new_tokens: int = typer.Option(JobSpec.default("max_new_tokens"), "--max-new-tokens",
                                       help=JobSpec.describe("max_new_tokens")),
    model_id: str | None = typer.Option(None, "--model", help="HF hub id or local path; default: embedded SmolLM2."),
    sample: bool | None = typer.Option(None, "--sample/--greedy", help="Default: the model's generation config."),
    temperature: float | None = typer.Option(None, "--temperature", help=f"Sampling temperature. {IMPLIES_SAMPLING}"),
    top_p: float | None = typer.Option(None, "--top-p", help=f"Nucleus sampling mass. {IMPLIES_SAMPLING}"),
    top_k: int | None = typer.Option(None, "--top-k", help=f"Top-k sampling. {IMPLIES_SAMPLING}"),
    fidelity: bool = typer.Option(JobSpec.default("fidelity"), "--fidelity", help=JobSpec.describe("fidelity")),
    trace: str = typer.Option(JobSpec.default("trace"), "--trace", help=" | ".join(TRACE_LEVELS)),
    db: str | None = typer.Option(None, "--db", help="Database URL (default: the embedded SQLite file)."),
    out: str | None = typer.Option(None, "--out", help="Also export the table to PATH (.csv or .json)."),
    attention_backend: str = typer.Option(JobSpec.default("attention_backend"), "--attention",
                                          help=JobSpec.describe("attention_backend")),
    reference_exact: bool = typer.Option(JobSpec.default("reference_exact"), "--reference-exact",
                                         help=JobSpec.describe("reference_exact")),
    as_json: bool = typer.Option(False, "--json", help="Print the table as JSON rows."),
) -> None:
    """Run a method x budget grid on a task, store every sample, print the comparison table."""
    from ..methods import parse_methods
    from ..policies import InvalidParameter

    try:
        method_specs = parse_methods(methods)
        try:
            budget_list = [int(b) for b in budgets.split(",") if b.strip()]
        except ValueError:
            raise InvalidParameter("budgets", "must be comma-separated integers", budgets) from None
        if out and not out.endswith((".csv", ".json")):
            raise InvalidParameter("out", "must end in .csv or .json", out)
        generation = {"do_sample": sample, "temperature": temperature, "top_p": top_p, "top_k": top_k}
        spec = JobSpec.parse({
            "task": task, "limit": None if limit == 0 else limit, "task_seed": task_seed, "methods": method_specs,
            "budgets": budget_list, "residual": residual,
            "evict_after_prefill": evict_after_prefill, "batch_problems": batch_problems, "samples": samples,
            "seeds": seed, "model": model_id,
            "generation": {k: v for k, v in generation.items() if v is not None}, "max_new_tokens": max_new_tokens,
            "fidelity": fidelity, "trace": trace, "attention_backend": attention_backend,
            "reference_exact": reference_exact,
        }).check()
    except (InvalidParameter, JobInvalid) as exc:
        fail(str(exc))

    from ..bench import Bench, result_rows
    from ..store import open_store

    from ..runtime import size_threads

    size_threads()  # one model process on the CPUs this one may use (torch's default oversubscribes them)
    store = open_store(db)
    runner = Bench(spec, store)
    missing = runner.missing()
    bar = progress(missing, "samples", unit="sample")
    try:
        runner.execute(on_sample=lambda: bar.update(1))
    finally:
        bar.close()
    rows = result_rows(runner.results())
    if out:
        _export(rows, out)
    if as_json:
        emit_json(rows)
        return
    print_table(rows, f"{spec.task}: {rows[0]['n_problems'] if rows else 0} problems x {spec.samples} samples, "
                      f"residual {spec.residual}, max {spec.max_new_tokens} new tokens"
                      + (", reference-exact" if spec.reference_exact else "")
                      + f"; tok/s is each sequence's rate with up to {spec.batch_problems * spec.samples} "
                        "decoding together")


def _export(rows: list[dict], path: str) -> None:
    import csv

    if path.endswith(".json"):
        with open(path, "w") as fh:
            json.dump(rows, fh, indent=2, default=str)
        return
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0].keys()) if rows else [])
        writer.writeheader()
        for row in rows:
            writer.writerow({k: json.dumps(v) if isinstance(v, (dict, list)) else v for k, v in row.items()})


def print_table(rows: list[dict], title: str) -> None:
    """The comparison table: strict and flexible accuracy side by side, each ± its standard error."""
    from rich.table import Table

    def pct(v):
        return "-" if v is None else f"{100 * v:.1f}"

    def num(v, fmt):
        return "-" if v is None else format(v, fmt)

    table = Table(title=title)
    for column in ("method", "budget", "acc % ± SE", "flex acc % ± SE", "loop %", "trunc %", "KL", "top-1 %", "tok/s", "KV MiB",
                   "evictions", "kept/len"):
        table.add_column(column, justify="left" if column == "method" else "right")
    for r in rows:
        table.add_row(
            r["method"], "-" if r["budget"] is None else str(r["budget"]),
            f"{pct(r['accuracy'])} ± {pct(r['accuracy_se'])}",
            f"{pct(r['accuracy_flex'])} ± {pct(r['accuracy_flex_se'])}", pct(r["loop_rate"]), pct(r["truncated_rate"]),
            num(r["kl_mean"], ".4f"), pct(r["top1_agreement"]), num(r["tokens_per_s"], ".1f"),
            num(None if r["kv_bytes_peak"] is None else r["kv_bytes_peak"] / 2**20, ".2f"),
            num(r["evictions"], ".1f"), num(r["sparsity"], ".3f"),
        )
    console().print(table)
