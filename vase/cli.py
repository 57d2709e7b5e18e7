"""The `vase` command line. Bad parameters exit with code 2 and a message naming the parameter."""

from __future__ import annotations

import json
import sys
from typing import Any, NoReturn

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, help="KV-cache eviction benchmarks (VaSE and baselines).")


def fail_usage(message: str) -> NoReturn:
    """Invalid input: say what is wrong on stderr and exit 2 (the shell's usage-error code)."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code=2)


def parse_params(pairs: list[str]) -> dict[str, Any]:
    """`--param n_large=16 --param smoothing=false` → {"n_large": 16, "smoothing": False}."""
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            fail_usage(f"param: expected NAME=VALUE, got {pair!r}")
        try:
            params[key] = json.loads(raw)
        except json.JSONDecodeError:
            params[key] = raw
    return params


def emit_json(payload: Any) -> None:
    sys.stdout.write(json.dumps(payload, indent=2, default=str) + "\n")


@app.command()
def methods(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List the cache methods with their parameters and defaults."""
    from .policies import describe_policies

    described = describe_policies()
    if as_json:
        emit_json([{"name": d["name"], "kind": d["kind"], "params": d["params"]} for d in described])
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("method", "kind", "parameters (defaults)", "description")
    for d in described:
        params = ", ".join(f"{k}={v}" for k, v in d["params"].items()) or "-"
        table.add_row(d["name"], d["kind"], params, d["description"])
    Console().print(table)


@app.command()
def generate(
    prompt: str = typer.Option(..., "--prompt", help="The user message (sent through the chat template)."),
    method: str = typer.Option("vase", "--method"),
    budget: int | None = typer.Option(None, "--budget", help="KV pairs kept per layer and head."),
    residual: int = typer.Option(64, "--residual", help="Recency window; evictions run every `residual` steps."),
    max_new_tokens: int = typer.Option(256, "--max-new-tokens"),
    seed: int = typer.Option(0, "--seed"),
    param: list[str] = typer.Option([], "--param", help="Method parameter NAME=VALUE (repeatable)."),
    model_id: str | None = typer.Option(None, "--model", help="HF hub id or local path; default: embedded SmolLM2."),
    sample: bool | None = typer.Option(None, "--sample/--greedy", help="Default: the model's generation config."),
    temperature: float | None = typer.Option(None, "--temperature"),
    top_p: float | None = typer.Option(None, "--top-p"),
    top_k: int | None = typer.Option(None, "--top-k"),
    raw: bool = typer.Option(False, "--raw", help="Send the prompt as is, without the chat template."),
    attention_backend: str = typer.Option("auto", "--attention", help="auto | sdpa | flash | eager"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Generate one answer under one cache method and report evictions, speed and KV memory."""
    from .cache import CacheConfig
    from .generation import SamplingConfig
    from .policies import InvalidParameter

    params = parse_params(param)
    try:
        CacheConfig.build(method, params, budget=budget, residual=residual)  # fail before loading a model
        sampling = SamplingConfig(do_sample=sample, temperature=temperature, top_p=top_p, top_k=top_k)
        sampling.check()
        if max_new_tokens < 1:
            raise InvalidParameter("max-new-tokens", "must be >= 1", max_new_tokens)
        if not prompt.strip():
            raise InvalidParameter("prompt", "must not be empty")
    except InvalidParameter as exc:
        fail_usage(str(exc))

    from . import generation
    from .models import load_model

    model, tokenizer = load_model(model_id)
    text = prompt
    if not raw and getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )
    progress = None if as_json else _progress(max_new_tokens, "decoding")
    try:
        (result,) = generation.generate(
            model, tokenizer, [text], method=method, params=params, budget=budget, residual=residual,
            max_new_tokens=max_new_tokens, seeds=[seed], sampling=sampling, attention_backend=attention_backend,
            on_step=(lambda step, cache: progress.update(1)) if progress else None,
        )
    except (InvalidParameter, ValueError) as exc:
        fail_usage(str(exc))
    finally:
        if progress:
            progress.close()
    payload = {"method": method, "budget": budget, "residual": residual, "seed": seed, **result.as_dict()}
    if as_json:
        emit_json(payload)
        return
    typer.echo(result.text)
    typer.echo(
        f"\n[{method}] {result.new_tokens} tokens, {result.tokens_per_s:.1f} tok/s, "
        f"{result.evictions} evictions, KV cache peak {result.kv_cache_bytes_peak / 2**20:.2f} MiB",
        err=True,
    )


def _progress(total: int, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="tok", leave=False, file=sys.stderr)


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
