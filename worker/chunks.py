"""Per-chunk liveness in Redis (the broker's server), and the Celery dispatcher.

Keys, under ``vase:job:<id>:``:

- ``q:<chunk>``     set when the chunk is enqueued, deleted when a worker takes it (TTL: a day);
- ``lease:<chunk>`` held by the worker running the chunk, renewed every ``stale_after_s / 3`` s,
  expires ``stale_after_s`` after its worker died;
- ``done``          a set of the chunks finished (TTL: a week);
- ``tries:<chunk>`` how often a worker took the chunk (a chunk whose workers keep dying fails the job).

A chunk that is neither queued, nor leased, nor done is lost (its worker died, or Redis lost its
message on a restart), and the recovery sweep (:func:`vase.jobs.recover`) enqueues it again.
These keys live in the same Redis as the queues, so they vanish together on a restart: then every
chunk of an active job reads as lost and is enqueued again; chunks already complete return at once.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterable

import redis

from vase.config import Settings, get_settings
from vase.jobs import DispatchError

log = logging.getLogger("vase.worker")

QUEUED_TTL_S = 24 * 3600
DONE_TTL_S = 7 * 24 * 3600
REDIS_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)

# Renew a lease we hold; take it back if it vanished (Redis restarted); report who holds it.
_RENEW = """
local v = redis.call('GET', KEYS[1])
if v == ARGV[1] then
  redis.call('EXPIRE', KEYS[1], ARGV[2])
  return 1
elseif not v then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
  return 1
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def redis_client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=5, health_check_interval=15)


class Lease:
    """A worker's claim on a chunk, renewed by a background thread while the chunk runs.

    ``lost`` turns True when another worker holds the chunk now (this one was presumed dead):
    the chunk then stops at its next check and leaves the work to the new holder.
    """

    def __init__(self, chunks: RedisChunks, key: str, owner: str, ttl: int,
                 on_tick: Callable[[], object] | None = None):
        self.chunks, self.key, self.owner, self.ttl = chunks, key, owner, ttl
        self.on_tick = on_tick
        self.lost = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew_loop, name=f"lease {key}", daemon=True)

    def __enter__(self) -> Lease:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def _renew_loop(self) -> None:
        interval = max(0.2, self.ttl / 3)
        while not self._stop.wait(interval):
            try:
                if not self.chunks.client.eval(_RENEW, 1, self.key, self.owner, self.ttl):
                    log.warning("lease %s was taken over by another worker; stopping this chunk", self.key)
                    self.lost = True
                    return
            except REDIS_ERRORS as exc:
                log.warning("lease %s: redis unavailable (%s); the chunk goes on", self.key, exc)
            if self.on_tick is not None:
                try:
                    self.on_tick()
                except Exception as exc:  # noqa: BLE001 - a heartbeat must never kill the chunk
                    log.warning("heartbeat failed: %s", exc)

    def release(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        with contextlib.suppress(*REDIS_ERRORS):
            self.chunks.client.eval(_RELEASE, 1, self.key, self.owner)


class RedisChunks:
    """Chunk bookkeeping in Redis; implements :class:`vase.jobs.ChunkTracker`."""

    def __init__(self, url: str, settings: Settings | None = None, prefix: str = "vase"):
        self.settings = settings or get_settings()
        self.client = redis_client(url)
        self.prefix = prefix

    def _key(self, job_id: str, name: str, chunk: int | None = None) -> str:
        return f"{self.prefix}:job:{job_id}:{name}" + ("" if chunk is None else f":{chunk}")

    @property
    def lease_ttl(self) -> int:
        return max(1, round(self.settings.stale_after_s))

    def mark_queued(self, job_id: str, chunks: Iterable[int]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for chunk in chunks:
            pipe.set(self._key(job_id, "q", chunk), 1, ex=QUEUED_TTL_S)
        pipe.execute()

    def unmark_queued(self, job_id: str, chunk: int) -> None:
        with contextlib.suppress(*REDIS_ERRORS):
            self.client.delete(self._key(job_id, "q", chunk))

    def acquire(self, job_id: str, chunk: int, owner: str,
                on_tick: Callable[[], object] | None = None) -> Lease | None:
        """The chunk's lease, or None when a live worker holds it. If Redis is unreachable the
        chunk runs without one (duplicate work is harmless; lost work is not)."""
        key = self._key(job_id, "lease", chunk)
        try:
            if not self.client.set(key, owner, nx=True, ex=self.lease_ttl):
                holder = self.client.get(key)
                log.info("job %s chunk %d is held by %s; skipping this delivery", job_id, chunk,
                         holder.decode() if holder else "?")
                return None
        except REDIS_ERRORS as exc:
            log.warning("job %s chunk %d: redis unavailable (%s); running without a lease", job_id, chunk, exc)
        return Lease(self, key, owner, self.lease_ttl, on_tick)

    def attempt(self, job_id: str, chunk: int, by: int = 1) -> int:
        """Count one more take of the chunk (``by=-1``: a take that ended normally); returns the
        count (0 when Redis is unreachable)."""
        key = self._key(job_id, "tries", chunk)
        try:
            pipe = self.client.pipeline()
            pipe.incrby(key, by)
            pipe.expire(key, DONE_TTL_S)
            return int(pipe.execute()[0])
        except REDIS_ERRORS:
            return 0

    def mark_done(self, job_id: str, chunk: int) -> None:
        key = self._key(job_id, "done")
        with contextlib.suppress(*REDIS_ERRORS):
            pipe = self.client.pipeline()
            pipe.sadd(key, chunk)
            pipe.expire(key, DONE_TTL_S)
            pipe.execute()

    def accounted(self, job_id: str, n_chunks: int) -> list[bool]:
        """Per chunk: queued, leased or done (one atomic read)."""
        if n_chunks == 0:
            return []
        pipe = self.client.pipeline(transaction=True)
        for chunk in range(n_chunks):
            pipe.exists(self._key(job_id, "q", chunk))
            pipe.exists(self._key(job_id, "lease", chunk))
        pipe.smembers(self._key(job_id, "done"))
        out = pipe.execute()
        done = {int(x) for x in out[-1]}
        return [bool(out[2 * i]) or bool(out[2 * i + 1]) or i in done for i in range(n_chunks)]

    def try_lock(self, name: str, ttl_s: float, owner: str) -> bool:
        """A cluster-wide lock that expires by itself (one recovery sweep at a time)."""
        return bool(self.client.set(f"{self.prefix}:lock:{name}", owner, nx=True, px=max(1, int(ttl_s * 1000))))


class CeleryDispatcher:
    """Enqueues chunks as ``vase.run_chunk`` tasks (marking each queued first)."""

    kind = "celery"

    def __init__(self, app, chunks: RedisChunks):
        self.app = app
        self.chunks = chunks

    def dispatch(self, job_id: str, chunks: Iterable[int], queue: str) -> None:
        chunks = list(chunks)
        try:
            self.chunks.mark_queued(job_id, chunks)
            with self.app.producer_or_acquire() as producer:
                for chunk in chunks:
                    self.app.send_task(
                        "vase.run_chunk", args=[job_id, int(chunk)], queue=queue, producer=producer,
                        retry=True, retry_policy={"max_retries": 2, "interval_start": 0.1,
                                                  "interval_step": 0.3, "interval_max": 1.0},
                    )
        except Exception as exc:
            raise DispatchError(f"could not enqueue job {job_id}: {type(exc).__name__}: {exc}") from exc

    def ping(self) -> None:
        self.chunks.client.ping()
