"""The `vase` command line contract (methods, generate) run as a real subprocess."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

VASE = [sys.executable, "-m", "vase.cli"]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


def run(*args, timeout=300):
    return subprocess.run([*VASE, *args], capture_output=True, text=True, timeout=timeout, env=ENV,
                          cwd=Path(__file__).resolve().parents[1])


def test_methods_json():
    out = run("methods", "--json")
    assert out.returncode == 0, out.stderr
    methods = {m["name"]: m for m in json.loads(out.stdout)}
    assert methods["full"]["kind"] == "none"
    assert methods["quest"]["kind"] == "selection"
    assert methods["vase"]["kind"] == "eviction"
    assert methods["vase"]["params"]["n_sink"] == 4
    assert methods["vase-dkv"]["params"]["rank"] == 20
    assert methods["rkv"]["params"]["lam"] == 0.5
    # Defaults made explicit, and the paper's ablations with the authors' mode they reproduce.
    assert methods["random"]["params"]["n_sink"] == 0 and methods["snapkv"]["params"]["n_sink"] == 0
    assert methods["vase"]["params"]["metric"] == "range"
    assert methods["vase"]["reference_mode"] == "range_sink_sample_attn"
    assert methods["range-attn"]["reference_mode"] == "range_attn"
    assert methods["range-attn"]["params"]["n_sink"] == 0


@pytest.mark.parametrize(
    "args,name",
    [
        (["--method", "vase", "--budget", "100", "--residual", "64"], "budget"),
        (["--method", "vase", "--budget", "64", "--residual", "64"], "budget"),
        (["--method", "vase", "--budget", "128", "--residual", "32", "--param", "n_large=200"], "n_large"),
        (["--method", "nope", "--budget", "128"], "method"),
        (["--method", "full", "--max-new-tokens", "0"], "max-new-tokens"),
        (["--method", "vase", "--budget", "128", "--residual", "-4"], "residual"),
        (["--method", "vase", "--budget", "128", "--residual", "32", "--param", "metric=max"], "metric"),
        (["--method", "random", "--budget", "128", "--residual", "32", "--param", "n_sink=-1"], "n_sink"),
    ],
)
def test_generate_bad_parameters_exit_2_naming_the_parameter(args, name):
    out = run("generate", "--prompt", "hi", *args, "--json")
    assert out.returncode == 2
    assert name in out.stderr


def test_generate_json_on_the_embedded_model(smollm2):  # fixture: the converted model is cached
    out = run("generate", "--method", "vase", "--budget", "32", "--residual", "8", "--max-new-tokens", "40",
              "--seed", "0", "--param", "n_large=8", "--greedy", "--prompt", "Write a short story about a cat.",
              "--json")
    assert out.returncode == 0, out.stderr
    payload = json.loads(out.stdout)
    assert {"text", "new_tokens", "evictions", "kv_cache_bytes_peak", "tokens_per_s"} <= payload.keys()
    assert payload["new_tokens"] == 40 or payload["finish_reason"] == "eos"
    assert payload["evictions"] > 0 and payload["tokens_per_s"] > 0


@pytest.mark.parametrize(
    "body,name",
    [
        ({"task": "arith-chain", "limit": "3"}, "limit: Input should be a valid integer"),
        ({"task": "arith-chain", "samples": 0}, "samples: Input should be greater than or equal to 1"),
        ({"task": "arith-chain", "methods": [{"name": "vase", "params": {"n_large": [1]}}]}, "methods[0].params.n_large"),
        ({"limit": 3}, "task: Field required"),
        ({"task": "arith-chain", "budget": 64}, "budget: Extra inputs are not permitted"),
    ],
)
def test_submit_checks_the_job_definition_before_any_request(body, name):
    """`vase submit` reads the body with vase.spec.JobSpec: exit 2 naming the field, and no request
    (the API URL is a closed port: a request would exit 1, unreachable)."""
    out = subprocess.run([*VASE, "submit", "-", "--api-url", "http://127.0.0.1:9"], input=json.dumps(body),
                         capture_output=True, text=True, timeout=300, env=ENV)
    assert out.returncode == 2, out.stderr
    assert name in out.stderr
