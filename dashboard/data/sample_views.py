"""Sample views: one stored sample with its run, the text of each of its token positions, the
full-cache sample it was compared with, and everything the Sample page shows about it."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from vase.config import EMBEDDED_MODEL
from vase.methods import method_label

from .base import NotFound, database_url, log, query, query_cache, store
from .queries import SAMPLE_COLUMNS, runs, samples


@query_cache(ttl=30, max_entries=64)
def _sample(url: str, sample_id: int) -> dict[str, Any] | None:
    s = store(url)
    smp = query(s.get_sample, int(sample_id))
    if smp is None:
        return None
    smp["run"] = query(s.get_run, int(smp["run_id"]))
    return smp


def sample(sample_id: int) -> dict[str, Any]:
    """The stored sample (all columns, texts, ``metrics``, ``trace`` info) with its ``run``."""
    smp = _sample(database_url(), int(sample_id))
    if smp is None:
        raise NotFound(f"Sample {sample_id} does not exist (it may have been deleted).")
    return smp


def verdict_symbol(correct: Any) -> str:
    """✓ correct, ✗ wrong, · not graded."""
    if correct is None or (isinstance(correct, float) and math.isnan(correct)) or correct is pd.NA:
        return "·"
    return "✓" if bool(correct) else "✗"


def sample_label(row: Any, run: Any | None = None) -> str:
    verdict = verdict_symbol(row["correct"])
    loop = " · loop" if bool(row["loop_detected"]) else ""
    head = f"{run['method']} @ {'full' if pd.isna(run['budget']) else int(run['budget'])} · " if run is not None else ""
    return f"#{int(row['sample_id'])} · {head}{row['problem_id']} [{int(row['sample_index'])}] {verdict}{loop}"


def reference_sample_id(sample_id: int) -> int | None:
    """The full-cache sample of the same grid (same scope, task, model), problem and sample index:
    what fidelity compared against. None if there is none."""
    smp = sample(sample_id)
    run = smp.get("run") or {}
    if run.get("method") == "full":
        return None
    s = store()
    for ref in query(s.list_runs, scope=run.get("scope"), task=run.get("task"), model=run.get("model"), method="full"):
        if ref.get("generation") not in (None, {}, run.get("generation")):
            continue
        for cand in query(s.list_samples, run_id=ref["id"], problem_id=smp["problem_id"], include_text=False):
            if int(cand["sample_index"]) == int(smp["sample_index"]):
                return int(cand["id"])
    return None


def same_prompt_samples(sample_id: int) -> pd.DataFrame:
    """Other samples of the same task, model, problem and sample index (other methods and budgets:
    the same prompt), with a ``label`` column; those with a ``full`` trace first."""
    smp = sample(sample_id)
    run = smp.get("run") or {}
    all_runs = runs(task=run.get("task"), model=run.get("model"))
    others = all_runs[all_runs["run_id"] != int(smp["run_id"])]
    if others.empty:
        return pd.DataFrame(columns=[*SAMPLE_COLUMNS, "label"])
    frame = samples(tuple(others["run_id"]), problem_id=smp["problem_id"])
    frame = frame[frame["sample_index"] == smp["sample_index"]]
    by_run = others.set_index("run_id")
    frame = frame.assign(
        label=[sample_label(r, by_run.loc[r["run_id"]]) for _, r in frame.iterrows()],
        has_trace=frame["trace_level"] == "full",
    )
    return frame.sort_values(["has_trace", "sample_id"], ascending=[False, True]).drop(columns="has_trace")


@dataclass(frozen=True)
class TokenTexts:
    """Text of every original position of a sample: the prompt's tokens, then the generated ones."""

    prompt: list[str]
    generated: list[str]
    available: bool
    note: str = ""

    @property
    def all(self) -> list[str]:
        return self.prompt + self.generated

    def text(self, start: int, stop: int) -> str:
        """Concatenated text of positions [start, stop)."""
        p = len(self.prompt)
        parts = self.prompt[max(0, start) : min(stop, p)] + self.generated[max(0, start - p) : max(0, stop - p)]
        return "".join(parts)

    def at(self, position: int) -> str:
        p = len(self.prompt)
        if 0 <= position < p:
            return self.prompt[position]
        if 0 <= position - p < len(self.generated):
            return self.generated[position - p]
        return ""


def _tokenizer_file(model_id: str) -> Path | None:
    if model_id == EMBEDDED_MODEL:
        try:  # the tokenizer alone: the first use on a machine reads it from the GGUF file, no weights
            from vase.models import embedded_tokenizer_dir

            return embedded_tokenizer_dir() / "tokenizer.json"
        except Exception as error:  # pragma: no cover - the package is part of the install
            log.warning("embedded tokenizer unavailable: %s", error)
            return None
    local = Path(model_id).expanduser()
    if (local / "tokenizer.json").exists():
        return local / "tokenizer.json"
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(model_id, "tokenizer.json")
        return Path(found) if isinstance(found, str) else None
    except Exception:
        return None


@st.cache_resource(show_spinner=False, max_entries=8)
def _tokenizer(model_id: str):
    """A fast ``tokenizers.Tokenizer`` for the model (no torch, no network), or None."""
    path = _tokenizer_file(model_id)
    if path is None:
        return None
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(path))


@st.cache_resource(show_spinner=False, max_entries=16)
def _token_texts(url: str, sample_id: int) -> TokenTexts:
    smp = _sample(url, sample_id)
    if smp is None:
        raise NotFound(f"Sample {sample_id} does not exist.")
    metrics = smp.get("metrics") or {}
    ids = [int(t) for t in metrics.get("tokens") or []]
    n_prompt = metrics.get("prompt_tokens")
    model = (smp.get("run") or {}).get("model") or ""
    tok = _tokenizer(model) if model else None
    if tok is None:
        return TokenTexts(
            [""] * int(n_prompt or 0),
            [""] * len(ids),
            False,
            f"No tokenizer for {model or 'this model'} on this machine: positions are shown without text.",
        )
    generated = tok.decode_batch([[i] for i in ids], skip_special_tokens=False) if ids else []
    prompt_ids = tok.encode(smp.get("prompt") or "", add_special_tokens=False).ids
    prompt = tok.decode_batch([[i] for i in prompt_ids], skip_special_tokens=False) if prompt_ids else []
    note = ""
    if n_prompt is not None and len(prompt) != int(n_prompt):
        note = (
            f"The prompt re-tokenizes to {len(prompt)} tokens, the run saw {n_prompt}: prompt token text may be "
            "off by a few positions."
        )
        prompt = (prompt + [""] * int(n_prompt))[: int(n_prompt)]
    return TokenTexts(prompt, generated, True, note)


def token_texts(sample_id: int) -> TokenTexts:
    """The text of each position of the sample (prompt tokens, then generated tokens), decoded
    with the model's tokenizer (read from its local ``tokenizer.json``; cached per sample)."""
    return _token_texts(database_url(), int(sample_id))


def shown(text: str, limit: int = 60) -> str:
    text = text.replace("\r", "").replace("\n", "⏎").replace("\t", "⇥")
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass
class SampleView:
    sample: dict[str, Any]
    run: dict[str, Any]
    method: str
    tokens: list[str]  # generated tokens' text ([] without a tokenizer)
    loop_start: int | None  # generated-token index where the loop begins
    loop_char: int | None  # character offset of the loop in ``output`` (approximate, from token text)
    reference: dict[str, Any] | None  # the full-cache sample (output, tokens, id) when there is one
    divergence_char: int | None  # where the output leaves the full-cache output (characters)
    identical: bool | None = None  # whether the output's text equals the full-cache output's (None: no reference)
    divergence: int | None = None  # first generated token where the outputs differ (None: identical or unknown)
    reference_char: int | None = None  # where the full-cache output leaves this one (characters)
    kl_per_token: list[float] = field(default_factory=list)
    reference_tokens: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def sample_view(sample_id: int) -> SampleView:
    """Everything the Sample page shows: texts, the verdict, the loop and the fidelity data."""
    smp = sample(sample_id)
    run = smp.get("run") or {}
    metrics = smp.get("metrics") or {}
    texts = token_texts(sample_id)
    notes = [texts.note] if texts.note else []
    gen = texts.generated if texts.available else []
    loop_start = smp.get("loop_start")
    loop_char = None
    output = smp.get("output") or ""
    if loop_start is not None and gen:
        loop_char = char_offset(output, gen, int(loop_start))
    ref = None
    ref_tokens: list[str] = []
    agreement = Agreement(None, None, None, None)
    ref_id = reference_sample_id(sample_id)
    if ref_id is not None:
        r = sample(ref_id)
        ref = {"id": ref_id, "output": r.get("output") or "", "tokens": (r.get("metrics") or {}).get("tokens") or []}
        ref_texts = token_texts(ref_id)
        ref_tokens = ref_texts.generated if ref_texts.available else []
        agreement = agreement_with_reference(
            output, metrics.get("tokens") or [], gen, ref["output"], ref["tokens"], ref_tokens,
            smp.get("first_divergence"),
        )
    return SampleView(
        sample=smp,
        run=run,
        method=method_label(run.get("method", "?"), run.get("params") or {}),
        tokens=gen,
        loop_start=None if loop_start is None else int(loop_start),
        loop_char=loop_char,
        reference=ref,
        divergence_char=agreement.output_char,
        identical=agreement.identical,
        divergence=agreement.token,
        reference_char=agreement.reference_char,
        kl_per_token=[float(x) for x in metrics.get("kl_per_token") or []],
        reference_tokens=ref_tokens,
        notes=notes,
    )


@dataclass(frozen=True)
class Agreement:
    """How an output compares with the full-cache output of the same prompt."""

    identical: bool | None  # the two texts are equal
    token: int | None  # first generated token where they differ (None when identical or unknown)
    output_char: int | None  # where the output leaves the reference (characters of the output)
    reference_char: int | None  # the same point in the reference's characters


def agreement_with_reference(
    output: str,
    output_ids: list[int],
    output_tokens: list[str],
    reference: str,
    reference_ids: list[int],
    reference_tokens: list[str],
    stored_divergence: int | None,
) -> Agreement:
    """Where ``output`` leaves ``reference``. Identity is decided on the texts themselves: the
    stored ``first_divergence`` exists only for runs benched with fidelity (None otherwise, and
    None when one output is a prefix of the other), so it cannot say the texts are equal. The
    divergent token is the stored one, else found from both outputs' stored token ids."""
    if output == reference:
        return Agreement(True, None, None, None)
    token = stored_divergence
    if token is None and output_ids and reference_ids:
        token = next((i for i, (a, b) in enumerate(zip(output_ids, reference_ids)) if a != b), None)
        if token is None:  # one token list is a prefix of the other
            token = min(len(output_ids), len(reference_ids))
    if token is not None and output_tokens and reference_tokens:
        return Agreement(
            False, int(token), char_offset(output, output_tokens, int(token)),
            char_offset(reference, reference_tokens, int(token)),
        )
    common = next((i for i, (a, b) in enumerate(zip(output, reference)) if a != b), min(len(output), len(reference)))
    return Agreement(False, None if token is None else int(token), common, common)


def char_offset(output: str, token_texts_: list[str], index: int) -> int:
    """Character offset in ``output`` where generated token ``index`` begins (token texts are
    decoded one by one, so the prefix is matched against the output when they disagree)."""
    prefix = "".join(token_texts_[:index])
    if output.startswith(prefix):
        return len(prefix)
    # special tokens or merged bytes make the concatenation differ: fall back to the proportion
    total = max(1, len("".join(token_texts_)))
    return min(len(output), round(len(output) * len(prefix) / total))
