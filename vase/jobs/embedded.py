"""The embedded runner: no broker, one background thread in the API process."""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Iterable

from ..config import Settings, get_settings
from ..store import Store, StoreUnavailable
from .recovery import recover
from .run import ChunkOutcome, execute_chunk

log = logging.getLogger("vase.jobs")


class EmbeddedRunner:
    """Runs jobs in the API process when no broker is configured (the single-command default).

    A background thread takes (job, chunk) items from an in-memory queue and runs them one at a
    time with :func:`execute_chunk`. Jobs live in the database, not in the queue: on start, and
    every ``recovery_interval_s``, the runner picks up queued jobs and running jobs whose
    heartbeat went stale (e.g. the previous server was killed), so nothing is lost with the process.
    """

    kind = "embedded"

    def __init__(self, store: Store, settings: Settings | None = None):
        self.store = store
        self.settings = settings or get_settings()
        self._queue: queue.Queue[tuple[str, int] | None] = queue.Queue()
        self._pending: set[tuple[str, int]] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.current: tuple[str, int] | None = None

    # -- Dispatcher -------------------------------------------------------------------------------
    def dispatch(self, job_id: str, chunks: Iterable[int], queue: str = "") -> None:
        with self._lock:
            for chunk in chunks:
                item = (job_id, int(chunk))
                if item not in self._pending:
                    self._pending.add(item)
                    self._queue.put(item)

    # -- lifecycle ----------------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="vase-embedded-runner", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop after the current sample; unfinished chunks stay in the database for next time."""
        self._stop.set()
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def idle(self) -> bool:
        with self._lock:
            return not self._pending

    # -- the thread -----------------------------------------------------------------------------------
    def _recover(self) -> None:
        """The recovery sweep (:func:`~vase.jobs.recover`, without a chunk tracker) with this runner
        as the dispatcher: it picks up queued jobs and running jobs whose heartbeat went stale
        (their server died; one with a fresh heartbeat may belong to another server on the same
        database). Chunks pending here are not queued twice; complete ones return at once."""
        try:
            recover(self.store, self, None, settings=self.settings, grace_s=0.0)
        except StoreUnavailable as exc:
            log.warning("embedded runner: recovery skipped, database unavailable: %s", exc)

    def _requeue(self, job_id: str) -> None:
        """Shutting down mid-job: put it back in the queue, so the next start resumes it at once."""
        with contextlib.suppress(StoreUnavailable):
            job = self.store.get_job(job_id)
            if job is not None and job["status"] == "running" and not job["cancel_requested"]:
                self.store.set_job_status(job_id, "queued")
                log.info("embedded runner: job %s put back in the queue (shutdown)", job_id)

    def _loop(self) -> None:
        self._recover()
        last_sweep = time.monotonic()
        while not self._stop.is_set():
            try:
                item = self._queue.get(timeout=min(1.0, self.settings.recovery_interval_s))
            except queue.Empty:
                item = None
            if self._stop.is_set():
                break
            if item is None:
                if time.monotonic() - last_sweep >= self.settings.recovery_interval_s:
                    self._recover()
                    last_sweep = time.monotonic()
                continue
            job_id, chunk = item
            self.current = item
            try:
                outcome = execute_chunk(self.store, job_id, chunk, settings=self.settings,
                                        interrupted=self._stop.is_set, sleep=self._stop.wait)
                if outcome == ChunkOutcome.DEFERRED:
                    log.warning("embedded runner: job %s chunk %d deferred", job_id, chunk)
                elif outcome == ChunkOutcome.INTERRUPTED:
                    self._requeue(job_id)
            except Exception:
                log.exception("embedded runner: job %s chunk %d", job_id, chunk)
            finally:
                self.current = None
                with self._lock:
                    self._pending.discard(item)
