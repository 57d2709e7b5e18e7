"""The GPU decode performance model of docs/performance.md, in one place.

Decode at small batch is bound by HBM bandwidth: each step reads every weight once (the batch
shares them) and every row's KV cache once. Step time = bytes read / bandwidth, plus the eviction
step amortised over the `residual` steps between evictions (its FLOPs at peak bf16 compute and its
extra memory traffic: reading the candidates' keys and values and writing the kept ones back).
Summed over every decode step of a run (the context grows from the prompt; a budgeted cache stops
growing at budget + residual), tokens/s = batch x new tokens / total time. It is a roofline: an
upper bound that ignores kernel launch and Python overheads, which is what a measurement is held
against (`measured / predicted` = the fraction of the roofline achieved).

    python benchmarks/roofline.py            # the prediction table of docs/performance.md
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass


@dataclass(frozen=True)
class Gpu:
    name: str
    bandwidth: float  # HBM bytes/s (datasheet peak)
    bf16_flops: float  # dense bf16 tensor FLOP/s (datasheet peak, no sparsity)
    memory: float  # bytes


@dataclass(frozen=True)
class ModelShape:
    name: str
    vocab: int
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    tied_embeddings: bool
    dtype_bytes: int = 2  # bf16

    @classmethod
    def from_config(cls, name: str, config, dtype_bytes: int) -> ModelShape:
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        return cls(name, config.vocab_size, config.hidden_size, config.intermediate_size, config.num_hidden_layers,
                   config.num_attention_heads, config.num_key_value_heads, head_dim,
                   bool(config.tie_word_embeddings), dtype_bytes)

    @property
    def layer_params(self) -> int:
        q_out, kv_out = self.heads * self.head_dim, self.kv_heads * self.head_dim
        attention = self.hidden * q_out + 2 * self.hidden * kv_out + q_out * self.hidden
        return attention + 3 * self.hidden * self.intermediate + 2 * self.hidden + 2 * self.head_dim

    @property
    def params(self) -> int:
        embeddings = self.vocab * self.hidden * (1 if self.tied_embeddings else 2)
        return self.layers * self.layer_params + embeddings + self.hidden

    @property
    def weight_bytes_read_per_step(self) -> int:
        """Every layer plus the output projection; the input embedding lookup reads one row."""
        return (self.layers * self.layer_params + self.vocab * self.hidden + self.hidden) * self.dtype_bytes

    @property
    def weight_bytes_stored(self) -> int:
        return self.params * self.dtype_bytes

    @property
    def kv_bytes_per_token(self) -> int:
        return 2 * self.layers * self.kv_heads * self.head_dim * self.dtype_bytes


H100 = Gpu("H100 SXM", bandwidth=3.35e12, bf16_flops=989e12, memory=80e9)
H200 = Gpu("H200", bandwidth=4.8e12, bf16_flops=989e12, memory=141e9)
GPUS = {"H100": H100, "H200": H200}

QWEN3_4B = ModelShape("Qwen3-4B", vocab=151936, hidden=2560, intermediate=9728, layers=36, heads=32, kv_heads=8,
                      head_dim=128, tied_embeddings=True)
QWEN3_14B = ModelShape("Qwen3-14B", vocab=151936, hidden=5120, intermediate=17408, layers=40, heads=40, kv_heads=8,
                       head_dim=128, tied_embeddings=False)
MODELS = {"Qwen3-4B": QWEN3_4B, "Qwen3-14B": QWEN3_14B}


@dataclass(frozen=True)
class Prediction:
    tokens_per_s: float  # whole batch
    mean_step_ms: float
    eviction_share: float  # of decode time
    peak_memory_gib: float  # weights + KV at its largest
    fits: bool


def eviction_cost(model: ModelShape, gpu: Gpu, candidates: int, keep: int, residual: int) -> float:
    """Seconds for one row's eviction over all layers: window-attention scoring (the residual
    queries against every candidate, the costliest scorer here) at peak FLOPs, plus reading the
    candidates' keys and values and writing the kept ones, at peak bandwidth."""
    flops = 2 * residual * candidates * model.head_dim * model.heads * model.layers
    traffic = (candidates + keep) * model.kv_bytes_per_token
    return flops / gpu.bf16_flops + traffic / gpu.bandwidth


def predict(model: ModelShape, gpu: Gpu, *, prompt: int, new_tokens: int, budget: int | None, residual: int = 64,
            batch: int = 1) -> Prediction:
    """Roofline decode throughput of `new_tokens` steps after a `prompt`-token prefill."""
    weights = model.weight_bytes_read_per_step / gpu.bandwidth
    per_token_kv = batch * model.kv_bytes_per_token / gpu.bandwidth
    total = evicting = 0.0
    length = prompt
    largest = prompt
    for _ in range(new_tokens):
        length += 1  # the step attends over the cache including its own token
        total += weights + per_token_kv * length
        largest = max(largest, length)
        if budget is not None and length > budget and length % residual == 0:
            cost = batch * eviction_cost(model, gpu, length - residual, budget - residual, residual)
            total += cost
            evicting += cost
            length = budget
    peak = model.weight_bytes_stored + batch * largest * model.kv_bytes_per_token
    return Prediction(batch * new_tokens / total, 1e3 * total / new_tokens, evicting / total, peak / 2**30,
                      peak <= gpu.memory)


def prediction_table(batches=(1, 16), lengths=(4096, 16384, 32768), budgets=(None, 2048, 4096), prompt: int = 256,
                     residual: int = 64) -> str:
    lines = ["| model | GPU | batch | new tokens | full | budget 2048 | budget 4096 | 2048 / full | 4096 / full |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for model in MODELS.values():
        for gpu in GPUS.values():
            for batch in batches:
                for n in lengths:
                    p = {b: predict(model, gpu, prompt=prompt, new_tokens=n, budget=b, residual=residual, batch=batch)
                         for b in budgets}
                    cells = [f"{p[b].tokens_per_s:.0f}" + ("" if p[b].fits else " (OOM)") for b in budgets]
                    ratios = [f"{p[b].tokens_per_s / p[None].tokens_per_s:.2f}" for b in budgets[1:]]
                    lines.append(f"| {model.name} | {gpu.name} | {batch} | {n} | " + " | ".join(cells + ratios) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompt", type=int, default=256)
    parser.add_argument("--residual", type=int, default=64)
    args = parser.parse_args()
    print(f"Roofline decode tokens/s (whole batch), bf16, prompt {args.prompt}, residual {args.residual}")
    print(prediction_table(prompt=args.prompt, residual=args.residual))
