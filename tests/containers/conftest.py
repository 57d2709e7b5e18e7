"""Fixtures of the compose test: this machine's Docker engine and the stack running on it.

The engine comes from ``local-docker.sh up`` (shared/tools beside the repository, or
``$VASE_LOCAL_DOCKER``): a dockerd without bridge networking, with base images built from Debian's
packages. The machine is shared, so several test runs may use the engine at once: each run has its
own compose project (``vase-e2e-<pid>``) and free ports, and registers itself; the engine is stopped
at the end only when a run of this test started it and no other run is still registered. Stacks of
runs that died are removed. No engine, no image: the test fails and says why; it never skips.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import time
from collections.abc import Iterator

import pytest

from .stack import (
    ENGINE_SOCKET,
    PROJECT_PREFIX,
    ROOT,
    RUNS,
    SERVICES,
    STARTED_MARK,
    WHEELS,
    Stack,
    docker,
    engine_answers,
    free_ports,
    live_runs,
    local_docker_script,
    remove_stacks_of_dead_runs,
    runs_locked,
    say,
    torch_wheel,
)


@pytest.fixture(scope="session")
def engine() -> Iterator[dict[str, str]]:
    """The engine's environment (DOCKER_HOST, the local base images' names)."""
    script = local_docker_script()
    base = {k: v for k, v in os.environ.items() if not k.startswith(("POSTGRES_", "HF_", "VASE_", "DOCKER_"))}
    started = time.monotonic()
    with runs_locked():
        if not engine_answers({**base, "DOCKER_HOST": f"unix://{ENGINE_SOCKET}"}):
            STARTED_MARK.touch()
        out = subprocess.run(["bash", str(script), "up"], capture_output=True, text=True, timeout=1800, env=base)
        if out.returncode != 0:
            pytest.fail(f"no Docker engine: `{script} up` exited {out.returncode}:\n{out.stderr[-3000:]}")
        env = dict(base)
        for line in out.stdout.splitlines():
            if line.startswith("export ") and "=" in line:
                key, value = line.removeprefix("export ").split("=", 1)
                env[key] = value
        if not engine_answers(env):
            pytest.fail(f"no Docker engine: `{script} up` succeeded but `docker info` fails at {env.get('DOCKER_HOST')}")
        (RUNS / f"run-{os.getpid()}").touch()
        remove_stacks_of_dead_runs(env)
    say(f"engine up in {time.monotonic() - started:.1f} s")
    try:
        yield env
    finally:
        with runs_locked():
            (RUNS / f"run-{os.getpid()}").unlink(missing_ok=True)
            if STARTED_MARK.exists() and not live_runs():
                # Old builds of the image, untagged by newer ones, go; the build cache stays.
                docker(env, "image", "prune", "-f", timeout=300)
                subprocess.run(["bash", str(script), "down"], capture_output=True, text=True, timeout=120, env=base)
                STARTED_MARK.unlink()
                say("engine stopped again (a run of this test had started it)")


@pytest.fixture(scope="module")
def stack(engine, compose_binary) -> Iterator[Stack]:
    """The image built from this repository and the stack running it; torn down with its volumes."""
    postgres_port, redis_port, api_port, dashboard_port = free_ports(4)
    env = {
        **engine,
        "POSTGRES_PASSWORD": secrets.token_hex(12),
        "PYTHON_IMAGE": engine["LOCAL_PYTHON_IMAGE"],
        "POSTGRES_IMAGE": engine["LOCAL_POSTGRES_IMAGE"],
        "REDIS_IMAGE": engine["LOCAL_REDIS_IMAGE"],
        "TORCH_WHEELS": str(WHEELS.relative_to(ROOT)),
        "POSTGRES_PORT": str(postgres_port),
        "REDIS_PORT": str(redis_port),
        "API_PORT": str(api_port),
        "DASHBOARD_PORT": str(dashboard_port),
        # The machine is shared and small: one CPU per service (the worker sizes its threads to it).
        "POSTGRES_CPUS": "1", "REDIS_CPUS": "1", "API_CPUS": "1", "WORKER_CPU_CPUS": "1", "DASHBOARD_CPUS": "1",
        "VASE_STALE_AFTER_S": "10",
    }
    s = Stack(compose_binary, env, f"{PROJECT_PREFIX}{os.getpid()}", api=f"http://127.0.0.1:{api_port}",
              dashboard=f"http://127.0.0.1:{dashboard_port}")
    torch_wheel()
    started = time.monotonic()
    s.compose("build", "api", timeout=2400)
    s.timings["build_s"] = time.monotonic() - started
    say(f"image built in {s.timings['build_s']:.1f} s")
    try:
        s.timings["up_s"] = s.up(*SERVICES)
        say(f"stack healthy in {s.timings['up_s']:.1f} s (ports api {api_port}, dashboard {dashboard_port}, "
            f"postgres {postgres_port}, redis {redis_port})")
        token = s.compose("exec", "-T", "api", "vase", "token", "create", "e2e").stdout.strip().splitlines()
        assert token and len(token[-1]) >= 20, f"vase token create printed {token!r}"
        s.token = token[-1]
        yield s
    finally:
        s.compose("down", "-v", "--remove-orphans", check=False)
        left = docker(env, "volume", "ls", "-q", "--filter", f"label=com.docker.compose.project={s.project}").stdout
        assert not left.split(), f"volumes left after down -v: {left}"
        say("timings: " + ", ".join(f"{k} {v:.1f} s" for k, v in s.timings.items()))
