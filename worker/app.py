"""The Celery application: ``celery -A worker.app worker -Q vase.gpu`` (or ``vase worker``).

Broker: Redis (``VASE_BROKER_URL``). Results go to the database, never to a result backend.

- ``acks_late`` + prefetch 1: a task is acknowledged after it ran, and a worker holds one
  message at a time; a message whose worker died is redelivered after the visibility timeout,
  which is set above the longest task. Recovery does not wait for it: a dead worker's chunk
  lease expires after ``stale_after_s`` and the recovery sweep enqueues the chunk again.
- Queues: ``vase.gpu`` for GPU workers, ``vase.cpu`` for CPU workers running small jobs on the
  embedded model (``vase.jobs.plan_job`` routes each job).
- Each worker process loads a model once (``vase.models.load_model`` memoises it) and reuses it
  for every task of that model. With several GPUs, one pool process runs per GPU, each pinned to
  its GPU through CUDA_VISIBLE_DEVICES before torch initialises CUDA.
- On start, and every ``recovery_interval_s``, one worker of the cluster (a Redis lock) sweeps
  the database for lost work (``vase.jobs.recover``): a job whose workers all died is picked up
  again as soon as any worker runs.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid

from celery import Celery, signals
from kombu import Queue

from vase.config import Settings, get_settings

log = logging.getLogger("vase.worker")


def make_app(settings: Settings | None = None) -> Celery:
    """A Celery app for ``settings`` (the API builds its own to enqueue; workers use ``app``)."""
    settings = settings or get_settings()
    app = Celery("vase", include=["worker.tasks"])
    app.conf.update(
        broker_url=settings.broker_url or "redis://127.0.0.1:6379/0",
        broker_transport_options={"visibility_timeout": settings.visibility_timeout_s},
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        broker_connection_timeout=5,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_store_errors_even_if_ignored=False,
        task_serializer="json",
        accept_content=["json"],
        task_default_queue=settings.queue_cpu,
        task_queues=(Queue(settings.queue_gpu), Queue(settings.queue_cpu)),
        task_create_missing_queues=True,
        worker_cancel_long_running_tasks_on_connection_loss=False,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        task_send_sent_event=False,
    )
    return app


app = make_app()

# ------------------------------------------------------------------------------------------------
# Shared per-process state
# ------------------------------------------------------------------------------------------------
_state_lock = threading.Lock()
_store = None
_chunks = None


def get_store():
    """The database (migrated once per process; raises StoreUnavailable while it is down)."""
    global _store
    with _state_lock:
        if _store is None:
            from vase.store import open_store

            _store = open_store(get_settings().resolved_database_url)
        return _store


def get_chunks():
    global _chunks
    with _state_lock:
        if _chunks is None:
            from .chunks import RedisChunks

            _chunks = RedisChunks(app.conf.broker_url)
        return _chunks


def get_dispatcher():
    from .chunks import CeleryDispatcher

    return CeleryDispatcher(app, get_chunks())


# ------------------------------------------------------------------------------------------------
# GPU pinning: one pool process per GPU
# ------------------------------------------------------------------------------------------------
def worker_gpus() -> list[str]:
    """The GPUs this host's worker uses: ``VASE_WORKER_GPUS``, else every GPU nvidia-smi lists."""
    configured = get_settings().worker_gpus
    if configured:
        return [g.strip() for g in configured.split(",") if g.strip()]
    import shutil
    import subprocess

    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [str(i) for i, line in enumerate(out.stdout.splitlines()) if line.startswith("GPU ")]


@signals.worker_process_init.connect
def _pin_gpu(**_kwargs) -> None:
    gpus = [g.strip() for g in (get_settings().worker_gpus or "").split(",") if g.strip()]
    if not gpus:
        return
    from billiard.process import current_process

    index = getattr(current_process(), "index", 0) or 0
    os.environ["CUDA_VISIBLE_DEVICES"] = gpus[index % len(gpus)]
    log.info("pool process %d uses GPU %s", index, os.environ["CUDA_VISIBLE_DEVICES"])


# ------------------------------------------------------------------------------------------------
# Recovery sweeps
# ------------------------------------------------------------------------------------------------
_recovery_stop = threading.Event()


def _recovery_loop() -> None:
    from vase.jobs import recover
    from vase.store import StoreUnavailable

    settings = get_settings()
    owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    interval = settings.recovery_interval_s
    while not _recovery_stop.is_set():
        try:
            chunks = get_chunks()
            if chunks.try_lock("recovery", interval * 0.9, owner):
                summary = recover(get_store(), get_dispatcher(), chunks, settings=settings)
                if summary["dispatched"] or summary["finalized"]:
                    log.warning("recovery sweep: %s", summary)
        except StoreUnavailable as exc:
            log.warning("recovery sweep skipped: database unavailable (%s)", exc)
        except Exception as exc:  # noqa: BLE001 - the sweeper must outlive broker and database outages
            log.warning("recovery sweep failed: %s: %s", type(exc).__name__, exc)
        _recovery_stop.wait(interval)


@signals.worker_ready.connect
def _start_recovery(**_kwargs) -> None:
    if not get_settings().broker_url:
        log.error("VASE_BROKER_URL is not set: this worker uses %s", app.conf.broker_url)
    _recovery_stop.clear()
    threading.Thread(target=_recovery_loop, name="vase-recovery", daemon=True).start()


@signals.worker_shutting_down.connect
def _stop_recovery(**_kwargs) -> None:
    _recovery_stop.set()
