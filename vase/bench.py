"""The benchmark: a grid of methods x budgets on a task, graded, measured and stored.

One `vase.spec.JobSpec` describes the grid. `plan_runs` turns it into stored runs (one per method x
budget, the full cache once); `execute_problems` does the work for a set of problems across all
runs, full cache first so fidelity has its reference, and writes each sample as it finishes. The
CLI runs every problem in one process; the service hands chunks of problems to workers. Samples
are keyed (run, problem, sample index), so an interrupted run resumes where it stopped and a
re-delivered chunk never duplicates a sample.
"""

from __future__ import annotations

import dataclasses
import hashlib
import platform
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from .methods import method_label
from .metrics import sparsity
from .spec import JobSpec, RunSpec
from .store import config_hash

PROMPT_TEMPLATE_VERSION = "paper-boxed-v1"
RESULT_COLUMNS = ("task", "method", "budget", "accuracy", "accuracy_se", "accuracy_flex", "accuracy_flex_se",
                  "loop_rate", "kl_mean", "top1_agreement", "tokens_per_s", "kv_bytes_peak")


def sample_seed(base: int, problem_id: str, index: int) -> int:
    """A sample's sampling seed: fixed by (base seed, problem, sample index), shared by every method."""
    digest = hashlib.sha256(f"{base}:{problem_id}:{index}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def package_versions() -> dict[str, str | None]:
    versions = {}
    for name in ("torch", "transformers", "flash-attn", "vase-bench"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


#: The full cache's per-step log-probabilities of a batch are kept for fidelity up to this size
#: (beyond it, as with long generations over a large vocabulary, fidelity replays the full cache).
REFERENCE_LOGPROBS_MAX_BYTES = 512 * 2**20


@dataclass
class Reference:
    """A batch's full-cache outputs, keyed (problem id, sample index): tokens, and (when they were
    generated in this batch and fit) the log-probabilities at each of their steps."""

    tokens: dict[tuple[str, int], list[int]] = dataclasses.field(default_factory=dict)
    logprobs: dict[tuple[str, int], Any] = dataclasses.field(default_factory=dict)


@dataclass
class PlannedRun:
    run_id: int
    spec: RunSpec


class Bench:
    """A spec bound to a loaded model, its problems and a store scope."""

    def __init__(self, spec: JobSpec, store, *, scope: str = "cli", model=None, tokenizer=None,
                 reuse_prefill: bool = True, batch_problems: int | None = None):
        from .models import load_model, model_fingerprint
        from .tasks import get_task

        self.spec = spec.check()
        self.store = store
        # One prefill per batch of problems, reused by every sample and method (results are the
        # same; see `PrefillCache`). Off only to measure what it saves.
        self.reuse_prefill = reuse_prefill
        # Problems decoded together (each with all its samples); the service may lower the spec's.
        self.batch_problems = batch_problems or spec.batch_problems
        self.scope = scope
        if model is None:
            model, tokenizer = load_model(spec.model)
        self.model, self.tokenizer = model, tokenizer
        task = get_task(spec.task)
        self.problems = task.load(limit=spec.limit, seed=spec.task_seed)
        self.fingerprint = model_fingerprint(model)
        self.dataset_fingerprint = task.fingerprint(limit=spec.limit, seed=spec.task_seed)
        self.runs = self._plan()

    def _plan(self) -> list[PlannedRun]:
        sampling = dataclasses.asdict(self.spec.sampling().resolved(self.model))
        generation = {**sampling, "max_new_tokens": self.spec.max_new_tokens, "seed": self.spec.seeds}
        manifest = {
            "packages": package_versions(),
            "model": self.fingerprint,
            "device": str(self.model.device),
            "python": platform.python_version(),
            "prompt_template": PROMPT_TEMPLATE_VERSION,
            "chat_template_sha256": hashlib.sha256(
                str(getattr(self.tokenizer, "chat_template", "")).encode()).hexdigest(),
            "dataset_fingerprint": self.dataset_fingerprint,
            "task": self.spec.task,
            "limit": self.spec.limit,
            "task_seed": self.spec.task_seed,
            "reference_exact": self.spec.reference_exact,
            "evict_after_prefill": self.spec.evict_after_prefill,
        }
        planned = []
        for run in self.spec.runs():
            key = {
                "model": self.fingerprint["model_id"], "revision": self.fingerprint["revision"],
                "dtype": self.fingerprint["dtype"], "task": self.spec.task, "limit": self.spec.limit,
                "task_seed": self.spec.task_seed, "dataset": self.dataset_fingerprint, "method": run.method,
                "params": run.params, "budget": run.budget, "residual": run.residual, "generation": generation,
                # Only when on, so runs stored before the option existed keep their hash.
                **({"evict_after_prefill": True} if self.spec.evict_after_prefill else {}),
                "fidelity": self.spec.fidelity and not run.is_reference, "trace": self.spec.trace,
                "prompt_template": PROMPT_TEMPLATE_VERSION,
            }
            if self.spec.reference_exact and not run.is_reference:
                # Only when on, so the default runs keep the hashes they were stored under.
                key["reference_exact"] = True
            run_id = self.store.get_or_create_run(
                self.scope, config_hash(key), task=self.spec.task, method=run.method,
                model=self.fingerprint["model_id"] or str(self.spec.model), params=run.params, budget=run.budget,
                residual=run.residual, generation=generation, fidelity=key["fidelity"],
                trace_level=self.spec.trace, manifest=manifest,
            )
            planned.append(PlannedRun(run_id, run))
        return planned

    @property
    def total_samples(self) -> int:
        return len(self.problems) * len(self.runs) * self.spec.samples

    def missing(self) -> int:
        done = sum(len(self.store.existing_sample_keys(r.run_id)) for r in self.runs)
        return self.total_samples - done

    def execute(
        self,
        problems: Iterable | None = None,
        *,
        should_cancel: Callable[[], bool] | None = None,
        on_sample: Callable[[], None] | None = None,
    ) -> bool:
        """Run every missing sample of the given problems (default: all). False if cancelled.

        Problems go in batches of `batch_problems`: a batch decodes together under each run (full
        cache first), its prompts prefilled once for every run (`PrefillCache`).
        """
        from .generation import PrefillCache
        from .prompting import render_prompt

        todo = list(self.problems if problems is None else problems)
        for start in range(0, len(todo), self.batch_problems):
            batch = todo[start:start + self.batch_problems]
            prompts = {problem.id: render_prompt(self.tokenizer, problem) for problem in batch}
            reference = Reference()
            prefills = PrefillCache() if self.reuse_prefill else None
            for planned in self.runs:
                if should_cancel is not None and should_cancel():
                    return False
                self._batch_run(batch, prompts, planned, reference, on_sample, prefills)
        return True

    def _batch_run(self, batch: list, prompts: dict[str, str], planned: PlannedRun, reference: Reference, on_sample,
                   prefills=None) -> None:
        import torch

        from .fidelity import first_divergence

        run, spec = planned.spec, self.spec
        existing = self.store.existing_sample_keys(planned.run_id)
        wanted = [(problem, i) for problem in batch for i in range(spec.samples) if (problem.id, i) not in existing]
        if not wanted:
            return
        needs_reference = spec.fidelity and not run.is_reference
        if needs_reference:
            missing = {p.id for p, i in wanted if (p.id, i) not in reference.tokens}
            if missing:
                reference.tokens.update(self._stored_reference(missing))
        # The full cache's log-probabilities spare fidelity its full-cache replay, when they fit.
        keep_logprobs = (run.is_reference and spec.fidelity and len(self.runs) > 1
                         and len(wanted) * spec.max_new_tokens * self._vocab_size() * 4 <= REFERENCE_LOGPROBS_MAX_BYTES)
        generated, recorder = self._generate([prompts[p.id] for p, _ in wanted], run,
                                             [(p.id, i) for p, i in wanted], prefills, return_logprobs=keep_logprobs)
        fidelity = {}
        if needs_reference:
            rows = [k for k, (p, i) in enumerate(wanted) if reference.tokens.get((p.id, i))]
            fidelity = dict(zip(rows, self._fidelity([prompts[wanted[k][0].id] for k in rows], run,
                                                     [wanted[k] for k in rows], reference, prefills)))
        for k, ((problem, index), result) in enumerate(zip(wanted, generated)):
            key = (problem.id, index)
            record = self._sample_record(problem, prompts[problem.id], run, index, result, recorder)
            if needs_reference and key in reference.tokens:
                record["first_divergence"] = first_divergence(reference.tokens[key], result.tokens)
                if k in fidelity:
                    fid = fidelity[k]
                    record.update(kl_mean=fid.kl_mean, top1_agreement=fid.top1_agreement,
                                  compared_tokens=fid.compared_tokens,
                                  kl_per_token=[round(x, 6) for x in fid.kl_per_token])
            if run.is_reference:
                reference.tokens[key] = result.tokens
                if result.logprobs is not None:
                    reference.logprobs[key] = torch.stack(result.logprobs)
            self.store.add_sample(planned.run_id, **record)
            if on_sample is not None:
                on_sample()

    def _stored_reference(self, problem_ids: set[str]) -> dict[tuple[str, int], list[int]]:
        full = next(r for r in self.runs if r.spec.is_reference)
        out = {}
        for sample in self.store.list_samples(run_id=full.run_id):
            if sample["problem_id"] in problem_ids:
                out[(sample["problem_id"], int(sample["sample_index"]))] = list(
                    (sample.get("metrics") or {}).get("tokens") or [])
        return out

    def _vocab_size(self) -> int:
        return self.model.config.get_text_config(decoder=True).vocab_size

    def _generate(self, prompts: list[str], run: RunSpec, keys: list[tuple[str, int]], prefills=None, *,
                  return_logprobs: bool = False):
        """One batch: a row per (problem, sample index); results in that order, and the trace recorder."""
        from .generation import eviction_seed, generate
        from .traces import TraceRecorder

        spec = self.spec
        text_config = self.model.config.get_text_config(decoder=True)
        kv_heads = getattr(text_config, "num_key_value_heads", None) or text_config.num_attention_heads
        recorder = TraceRecorder(spec.trace, text_config.num_hidden_layers, kv_heads)
        seeds = [sample_seed(spec.seeds, problem_id, i) for problem_id, i in keys]
        results = generate(
            self.model, self.tokenizer, prompts, method=run.method, params=run.params,
            budget=run.budget, residual=run.residual, evict_after_prefill=spec.evict_after_prefill,
            max_new_tokens=spec.max_new_tokens, seeds=seeds,
            eviction_seeds=[eviction_seed(s) for s in seeds],
            sampling=spec.sampling(),
            trace_sink=recorder if recorder.enabled else None, attention_backend=spec.attention_backend,
            reference_exact=spec.reference_exact,
            prefills=prefills, return_logprobs=return_logprobs,
        )
        return results, recorder

    def _fidelity(self, prompts: list[str], run: RunSpec, rows: list[tuple], reference: Reference, prefills):
        """KL and top-1 agreement of each row against its full-cache output, replayed as one batch."""
        from .fidelity import teacher_forced_fidelity

        seeds = [sample_seed(self.spec.seeds, problem.id, i) for problem, i in rows]
        keys = [(problem.id, i) for problem, i in rows]
        logprobs = [reference.logprobs.get(k) for k in keys]
        return teacher_forced_fidelity(
            self.model, self.tokenizer, prompts, [reference.tokens[k] for k in keys],
            method=run.method, params=run.params, budget=run.budget, residual=run.residual,
            evict_after_prefill=self.spec.evict_after_prefill, seeds=seeds,
            attention_backend=self.spec.attention_backend, prefills=prefills,
            reference_exact=self.spec.reference_exact,
            reference_logprobs=None if any(lp is None for lp in logprobs) else logprobs,
        )

    def _sample_record(self, problem, prompt, run: RunSpec, index, result, recorder) -> dict[str, Any]:
        from .generation import eviction_seed
        from .grading import grade
        from .metrics import detect_repetition_loop
        from .prompting import prompt_opens_thinking, split_thinking

        opened = prompt_opens_thinking(prompt)
        thinking, answer_text, _closed = split_thinking(result.text, opened_in_prompt=opened)
        verdict = grade(problem, result.text, opened_in_prompt=opened)
        loop = detect_repetition_loop(result.tokens)
        seed = sample_seed(self.spec.seeds, problem.id, index)
        record: dict[str, Any] = {
            "problem_id": problem.id,
            "sample_index": index,
            "seed": seed,
            "eviction_seed": eviction_seed(seed),
            "prompt": prompt,
            "output": result.text,
            "thinking": thinking,
            "answer_text": answer_text,
            "extracted": verdict.extracted,
            "correct": verdict.correct,
            "grade_status": verdict.status,
            "grade_reason": verdict.reason,
            "correct_flex": verdict.correct_flex,
            "extracted_flex": verdict.extracted_flex,
            "flex_rule": verdict.flex_rule,
            "new_tokens": result.new_tokens,
            "truncated": result.finish_reason == "length",
            "tokens_per_s": result.tokens_per_s,
            "kv_bytes_peak": result.kv_cache_bytes_peak,
            "evictions": result.evictions,
            "sparsity": kept_fraction(result.prompt_tokens, run.budget, run.residual, result.evictions,
                                      evict_after_prefill=self.spec.evict_after_prefill),
            "loop_detected": loop is not None,
            "loop_start": loop.start if loop else None,
            "loop_span": self.tokenizer.decode(loop.span) if loop else None,
            # Not columns: kept in the sample's metrics JSON.
            "tokens": result.tokens,
            "prompt_tokens": result.prompt_tokens,
            "finish_reason": result.finish_reason,
            "eviction_seconds": result.eviction_seconds,
            "answer": problem.answer,
        }
        if recorder.enabled:
            record["trace"] = recorder.record_for(
                int(result.row), new_tokens=result.new_tokens, prompt_length=result.prompt_tokens, residual=run.residual
            )
        return record

    def results(self) -> list[dict[str, Any]]:
        """The comparison rows of this grid, in the spec's order (full cache first)."""
        order = {r.run_id: i for i, r in enumerate(self.runs)}
        return sorted(self.store.results(run_ids=list(order)), key=lambda row: order[row["run_id"]])


def kept_fraction(prompt_tokens: int, budget: int | None, residual: int, evictions: int, *,
                  evict_after_prefill: bool = False) -> float | None:
    """Mean over a sample's evictions of kept / logical length (`vase.metrics.sparsity`).

    Evictions are deterministic in time: the first at the smallest multiple of `residual` above
    max(budget, prompt) (with `evict_after_prefill` and a prompt over the budget: at the end of the
    prefill), then one every `residual` tokens; each leaves `budget` tokens.
    """
    if budget is None or evictions == 0:
        return None
    if evict_after_prefill and prompt_tokens > budget:
        first = prompt_tokens
    else:
        first = (max(budget, prompt_tokens) // residual + 1) * residual
    lengths = [first + k * residual for k in range(evictions)]
    return sum(sparsity(budget, n) for n in lengths) / len(lengths)


def result_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Flatten store result rows for printing and export (label includes non-default params)."""
    out = []
    for row in rows:
        label = method_label(row["method"], row.get("params"))
        flat = {key: row.get(key) for key in RESULT_COLUMNS}
        flat.update({
            "method": label,
            "model": row.get("model"),
            "residual": row.get("residual"),
            "n_problems": row.get("n_problems"),
            "n_samples": row.get("n_samples"),
            "truncated_rate": row.get("truncated_rate"),
            "mean_new_tokens": row.get("mean_new_tokens"),
            "evictions": row.get("evictions"),
            "sparsity": row.get("sparsity"),
            "pass_at_k": row.get("pass_at_k"),
            "pass_at_k_flex": row.get("pass_at_k_flex"),
            "run_id": row.get("run_id"),
        })
        out.append(flat)
    return out
