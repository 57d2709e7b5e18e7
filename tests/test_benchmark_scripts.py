"""The performance scripts on CPU: the roofline model, gpu_check's --tiny smoke run and the
long-context benchmark on a tiny random model (kvpress left out: it needs its own virtualenv)."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from factories import tiny

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "VASE_TORCH_THREADS": "1"}


def _script(name: str, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / name), *args], capture_output=True, text=True,
                          cwd=ROOT, env=ENV, timeout=timeout)


@pytest.fixture(scope="module")
def roofline():
    spec = importlib.util.spec_from_file_location("roofline", ROOT / "benchmarks" / "roofline.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["roofline"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_roofline_model_sizes_and_paper_memory(roofline):
    # Published sizes: Qwen3-4B 4.0B parameters, Qwen3-14B 14.8B.
    assert 3.95e9 < roofline.QWEN3_4B.params < 4.1e9
    assert 14.7e9 < roofline.QWEN3_14B.params < 14.9e9
    assert roofline.QWEN3_14B.kv_bytes_per_token == 40 * 8 * 128 * 2 * 2
    # The paper's throughput setting (batch 16, prompt 256, 16k new tokens): peak memory within 5%.
    paper = {None: 68.7, 2048: 33.9, 4096: 38.9}
    for budget, gib in paper.items():
        p = roofline.predict(roofline.QWEN3_14B, roofline.H100, prompt=256, new_tokens=16384, budget=budget, batch=16)
        assert abs(p.peak_memory_gib - gib) / gib < 0.05, (budget, p.peak_memory_gib)


def test_roofline_budget_pays_only_where_kv_dominates(roofline):
    def tps(budget, n, batch):
        return roofline.predict(roofline.QWEN3_4B, roofline.H200, prompt=256, new_tokens=n, budget=budget,
                                batch=batch).tokens_per_s

    assert tps(2048, 32768, 16) / tps(None, 32768, 16) > 3  # KV reads dominate full
    assert tps(2048, 4096, 1) / tps(None, 4096, 1) < 1.05  # weights dominate at batch 1, short output
    full_oom = roofline.predict(roofline.QWEN3_14B, roofline.H100, prompt=256, new_tokens=32768, budget=None, batch=16)
    assert not full_oom.fits  # the paper reports the full cache out of memory here


def test_gpu_check_tiny_prints_measured_beside_predicted():
    done = _script("gpu_check.py", "--tiny", "--lengths", "12,24", "--budgets", "12", "--residual", "4",
                   "--prompt-tokens", "8", "--minutes", "30")
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [line for line in done.stdout.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert "| measured tok/s | predicted tok/s | measured / predicted |" in done.stdout
    assert [r.split(" | ")[1] for r in rows] == ["full", "vase", "vase-dkv"] * 2
    for row in rows:
        measured, predicted = (float(x) for x in row.split(" | ")[3:5])
        assert measured > 0 and predicted > 0


def test_gpu_check_minutes_leaves_out_what_does_not_fit():
    done = _script("gpu_check.py", "--tiny", "--lengths", "12,100000", "--budgets", "12", "--residual", "4",
                   "--prompt-tokens", "8", "--minutes", "1")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "lengths left out: [100000]" in done.stdout
    assert "| 100000 |" not in done.stdout and "| 12 | vase | 12 |" in done.stdout


def test_long_context_on_a_tiny_model(tmp_path):
    model, tokenizer = tiny("llama")
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    done = _script("long_context.py", "--model", str(tmp_path / "model"), "--json", str(tmp_path / "out.json"),
                   "--prompt-tokens", "39", "--new-tokens", "12", "--budget", "16", "--residual", "4", "--no-kvpress",
                   "--methods", "full,full-prealloc,vase,snapkv", "--threads", "1,2")
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    for threads in (1, 2):
        for method in ("full (HF DynamicCache)", "full (preallocated)", "vase", "snapkv"):
            assert f"| {threads} | {method} |" in out
        assert f"| {threads} | vase / full (HF DynamicCache) |" in out
    assert "| vase | " in out.split("2 threads faster?")[1]
    rows = json.loads((tmp_path / "out.json").read_text())["rows"]
    held = {r["method"]: r["kv_mib_live_end"] for r in rows if r["threads"] == 1}
    assert all(r["new_tokens"] == 12 for r in rows)
    # The budget holds: 16..20 tokens per layer at the end, against 50 for the full cache.
    assert held["vase"] <= held["full (preallocated)"] * 20 / 50


def test_long_context_rejects_bad_threads():
    done = _script("long_context.py", "--threads", "0")
    assert done.returncode == 2 and "--threads" in done.stderr


def test_decode_threads_prints_bandwidth_and_step_times():
    out = _script("decode_threads.py", "--threads", "1,2", "--batches", "1,2", "--new-tokens", "10", "--repeats", "1")
    assert out.returncode == 0, out.stderr
    rows = [line for line in out.stdout.splitlines() if line.startswith("| 1 |") or line.startswith("| 2 |")]
    assert len(rows) == 4  # two thread counts x two batches
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert float(cells[1]) > 0 and float(cells[4]) > 0  # GB/s, step ms
    assert "| decode speed, batch 2 |" in out.stdout and "| eviction speed, batch 1 |" in out.stdout
