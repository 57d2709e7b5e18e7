"""Latency and throughput of `POST /v1/jobs` and `GET /v1/jobs/{id}` under concurrent clients.

Starts the API (`vase serve`) on loopback in Celery mode, with PostgreSQL behind it (a fresh
database on 127.0.0.1:5432 unless --database-url) and its own redis-server as the broker (no
worker consumes it: submitted jobs only queue up, so the API alone is measured). Then N clients
(asyncio, one HTTP/1.1 keep-alive connection each, a minimal client so that the load
generator, which shares the CPUs, costs little) send requests back to back (closed loop), or,
with --rate, at a fixed total rate (open loop: latency counted from each request's scheduled
start, so queueing inside the client is not hidden). Prints p50/p90/p99/max latency and
throughput per endpoint; --out writes them as JSON.

    .venv/bin/python benchmarks/api_latency.py --clients 50 --duration 20
    .venv/bin/python benchmarks/api_latency.py --clients 100 --requests 3000
    .venv/bin/python benchmarks/api_latency.py --clients 100 --rate 200 --duration 10

Before/after in one run: ``--source before=DIR --source after=.`` serves the API from each source
tree in turn (DIR: a copy of another commit, e.g. ``git archive main | tar -x -C DIR``; it comes
first on the server's PYTHONPATH), ``--repeats`` times, the order alternating, each on a fresh
database and broker.

Each POST is the issue's smallest job (task arith-chain, limit 1, full + vase, budget 64); every
request is checked (201 / 200), errors are counted and reported.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
VASE = str(Path(sys.executable).with_name("vase"))
JOB = {"task": "arith-chain", "limit": 1, "methods": [{"name": "full"}, {"name": "vase", "params": {"n_large": 16}}],
       "budgets": [64], "residual": 16, "samples": 1, "max_new_tokens": 96}
ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def summary(name: str, latencies: list[float], errors: int, wall: float) -> dict:
    ms = [x * 1000 for x in latencies]
    return {
        "endpoint": name, "requests": len(ms), "errors": errors, "wall_s": round(wall, 3),
        "throughput_rps": round(len(ms) / wall, 1) if wall else None,
        "p50_ms": round(percentile(ms, 0.50), 2), "p90_ms": round(percentile(ms, 0.90), 2),
        "p99_ms": round(percentile(ms, 0.99), 2), "max_ms": round(max(ms), 2) if ms else None,
        "mean_ms": round(statistics.fmean(ms), 2) if ms else None,
    }


class Connection:
    """One keep-alive HTTP/1.1 connection (a lean client: the load generator shares the CPUs with
    the server, so it must cost as little as possible per request)."""

    def __init__(self, host: str, port: int, token: str):
        self.host, self.port = host, port
        self.auth = f"Authorization: Bearer {token}\r\n"
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\n{self.auth}"
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        self.writer.write(head.encode() + b"\r\n" + (body or b""))
        status_line = await self.reader.readuntil(b"\r\n")
        status = int(status_line.split()[1])
        length = 0
        while (line := await self.reader.readuntil(b"\r\n")) != b"\r\n":
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
        return status, await self.reader.readexactly(length)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(Exception):
                await self.writer.wait_closed()


async def closed_loop(conns: list[Connection], total: int | None, make_request,
                      duration: float | None = None) -> tuple[list[float], int, float]:
    """Every client sends its next request as soon as the previous answer arrived, until ``total``
    requests were sent or (``total`` None) for ``duration`` seconds."""
    latencies: list[float] = []
    errors = 0
    remaining = total if total is not None else float("inf")
    stop_at = time.perf_counter() + duration if total is None else float("inf")

    async def one_client(conn: Connection) -> None:
        nonlocal remaining, errors
        while remaining > 0 and time.perf_counter() < stop_at:
            remaining -= 1
            start = time.perf_counter()
            ok = await make_request(conn)
            latencies.append(time.perf_counter() - start)
            errors += not ok

    started = time.perf_counter()
    await asyncio.gather(*(one_client(c) for c in conns))
    return latencies, errors, time.perf_counter() - started


async def open_loop(conns: list[Connection], rate: float, duration: float,
                    make_request) -> tuple[list[float], int, float]:
    """Requests start on a fixed schedule; latency counts from the scheduled start."""
    latencies: list[float] = []
    errors = 0
    n = int(rate * duration)
    started = time.perf_counter()
    schedule = [started + i / rate for i in range(n)]
    next_index = 0

    async def one_client(conn: Connection) -> None:
        nonlocal next_index, errors
        while next_index < n:
            due = schedule[next_index]
            next_index += 1
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            ok = await make_request(conn)
            latencies.append(time.perf_counter() - due)  # includes waiting for a free client
            errors += not ok

    await asyncio.gather(*(one_client(c) for c in conns))
    return latencies, errors, time.perf_counter() - started


async def run_load(port: int, token: str, args: argparse.Namespace) -> list[dict]:
    job_ids: list[str] = []
    body = json.dumps(JOB).encode()

    async def post(conn: Connection) -> bool:
        status, payload = await conn.request("POST", "/v1/jobs", body)
        if status == 201:
            job_ids.append(json.loads(payload)["id"])
            return True
        return False

    async def get(conn: Connection) -> bool:
        status, _ = await conn.request("GET", f"/v1/jobs/{random.choice(job_ids)}")
        return status == 200

    conns = [Connection("127.0.0.1", port, token) for _ in range(args.clients)]
    out = []
    try:
        await closed_loop(conns, args.warmup, post)  # open every connection, warm the server
        await closed_loop(conns, args.warmup, get)
        for name, fn in (("POST /v1/jobs", post), ("GET /v1/jobs/{id}", get)):
            if args.rate:
                lat, err, wall = await open_loop(conns, args.rate, args.duration, fn)
            else:
                lat, err, wall = await closed_loop(conns, args.requests, fn, args.duration)
            out.append(summary(name, lat, err, wall))
    finally:
        for conn in conns:
            await conn.close()
    return out


def wait_ready(base: str, proc: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"the API exited:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    sys.exit(f"the API did not become ready:\n{log.read_text()[-3000:]}")


def measure(args: argparse.Namespace, source: Path | None) -> list[dict]:
    """Start PostgreSQL's database, a broker and the API (from ``source`` when given), load it,
    stop everything; the per-endpoint figures."""
    tmp = Path(tempfile.mkdtemp(prefix="vase-bench-"))
    procs: list[subprocess.Popen] = []
    created_db = None
    import psycopg
    from psycopg import sql

    try:
        if args.database_url:
            database_url = args.database_url
        else:
            created_db = f"vase_bench_{uuid.uuid4().hex[:10]}"
            with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
                admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(created_db)))
            database_url = f"postgresql://postgres@127.0.0.1:5432/{created_db}"
        redis_server = shutil.which("redis-server")
        if redis_server is None:
            sys.exit("redis-server is needed (the API's broker)")
        redis_port = free_port()
        procs.append(subprocess.Popen([redis_server, "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
                                       "--appendonly", "no"], stdout=subprocess.DEVNULL, start_new_session=True))
        env = {**os.environ, "VASE_DATABASE_URL": database_url,
               "VASE_BROKER_URL": f"redis://127.0.0.1:{redis_port}/0", "HF_HUB_OFFLINE": "1"}
        env.pop("VASE_API_TOKEN", None)
        if source is not None:
            env["PYTHONPATH"] = os.pathsep.join([str(source.resolve()), *filter(None, [env.get("PYTHONPATH")])])
        made = subprocess.run([VASE, "token", "create", "bench"], env=env, capture_output=True, text=True, check=True)
        token = made.stdout.strip()
        port = free_port()
        log = tmp / "api.log"
        with open(log, "wb") as fh:
            procs.append(subprocess.Popen([VASE, "serve", "--port", str(port), "--workers", str(args.workers),
                                           "--log-level", "warning"], env=env, cwd=source or ROOT, stdout=fh,
                                          stderr=subprocess.STDOUT, start_new_session=True))
        base = f"http://127.0.0.1:{port}"
        wait_ready(base, procs[-1], log)
        return asyncio.run(run_load(port, token, args))
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
        if created_db:
            with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
                admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(created_db)))
        shutil.rmtree(tmp, ignore_errors=True)


def _source(text: str) -> tuple[str, Path]:
    label, _, path = text.rpartition("=")
    return label or path, Path(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=50, help="concurrent clients (connections)")
    parser.add_argument("--requests", type=int, default=None,
                        help="closed loop: requests per endpoint (default: as many as fit in --duration)")
    parser.add_argument("--rate", type=float, default=None, help="open loop: total requests per second")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per endpoint")
    parser.add_argument("--warmup", type=int, default=200, help="warm-up requests per endpoint")
    parser.add_argument("--workers", type=int, default=1, help="API processes (uvicorn workers)")
    parser.add_argument("--database-url", default=None, help="PostgreSQL URL (default: a fresh database)")
    parser.add_argument("--source", action="append", type=_source, default=None, metavar="LABEL=DIR",
                        help="serve the API from this source tree (repeatable: compared in one run)")
    parser.add_argument("--repeats", type=int, default=1, help="measurements per source, the order alternating")
    parser.add_argument("--out", default=None, help="write the figures as JSON here")
    args = parser.parse_args()

    sources: list[tuple[str, Path | None]] = args.source or [("this checkout", None)]
    results = []
    for repeat in range(args.repeats):
        for label, source in (sources if repeat % 2 == 0 else sources[::-1]):
            load = os.getloadavg()[0]
            for row in measure(args, source):
                results.append({"source": label, "repeat": repeat, "load_1min_before": round(load, 2), **row})

    if args.rate:
        mode = f"open loop at {args.rate:g} req/s for {args.duration:g} s"
    elif args.requests:
        mode = f"closed loop, {args.requests} requests"
    else:
        mode = f"closed loop for {args.duration:g} s"
    print(f"{args.clients} clients, {mode}, {args.workers} API process(es), PostgreSQL + Redis on loopback, "
          f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()}); load: 1-min load average "
          f"when the run started")
    print(f"{'source':14s} {'#':>2s} {'load':>5s} {'endpoint':20s} {'req':>6s} {'err':>4s} {'rps':>7s} "
          f"{'p50 ms':>8s} {'p90 ms':>8s} {'p99 ms':>8s} {'max ms':>8s}")
    for r in results:
        print(f"{r['source']:14s} {r['repeat']:2d} {r['load_1min_before']:5.2f} {r['endpoint']:20s} {r['requests']:6d} "
              f"{r['errors']:4d} {r['throughput_rps']:7.1f} {r['p50_ms']:8.2f} {r['p90_ms']:8.2f} {r['p99_ms']:8.2f} "
              f"{r['max_ms']:8.2f}")
    if args.out:
        Path(args.out).write_text(json.dumps({"clients": args.clients, "mode": mode, "workers": args.workers,
                                              "cpus": os.cpu_count(), "results": results}, indent=2))


if __name__ == "__main__":
    main()
