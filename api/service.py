"""What the API process holds: settings, the store, and the dispatcher (Celery or in-process)."""

from __future__ import annotations

import hmac
import logging
import threading
import time

from vase.config import Settings
from vase.store import Store, StoreUnavailable

log = logging.getLogger("vase.api")

_MAX_CACHED_TOKENS = 4096  # the cache is emptied when it holds this many


class Service:
    """The API's resources. ``mode`` is ``celery`` when a broker is configured, else ``embedded``
    (jobs run in a background thread of this process)."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.mode = "celery" if settings.broker_url else "embedded"
        self.store = Store(settings.resolved_database_url, pool_size=settings.api_db_pool_size)
        self._migrated = False
        self._migrate_lock = threading.Lock()
        self.runner = None
        self.dispatcher = None
        self.chunks = None
        self._started = False
        self._start_lock = threading.Lock()
        self._verified_tokens: dict[str, tuple[str, float]] = {}  # token -> (name, when verified)

    # -- lifecycle --------------------------------------------------------------------------------
    def start(self) -> None:
        """Connect the dispatcher (and start the embedded runner); idempotent."""
        with self._start_lock:
            if self._started:
                return
            self._start()
            self._started = True

    def _start(self) -> None:
        try:
            self.ensure_schema()
        except StoreUnavailable as exc:
            log.warning("database unavailable at start (%s); the API answers 503 until it is back", exc)
        if self.mode == "celery":
            from worker.app import make_app
            from worker.chunks import CeleryDispatcher, RedisChunks

            self.chunks = RedisChunks(self.settings.broker_url, self.settings)
            self.dispatcher = CeleryDispatcher(make_app(self.settings), self.chunks)
        else:
            from vase.jobs import EmbeddedRunner

            self.runner = EmbeddedRunner(self.store, self.settings)
            self.dispatcher = self.runner
            self.runner.start()
        self._warm_up()
        log.info("vase API: %s mode, database %r", self.mode, self.store)

    def _warm_up(self) -> None:
        """Plan one job now: validation imports the generation stack (seconds, once), which must not
        happen inside the first request."""
        from vase.jobs import plan_job

        try:
            plan_job({"task": "arith-chain", "limit": 1, "methods": [{"name": "full"}, {"name": "vase"}],
                      "budgets": [64], "residual": 16}, self.settings)
        except Exception as exc:  # noqa: BLE001 - a warm-up never stops the API
            log.warning("warm-up failed: %s", exc)

    def stop(self) -> None:
        with self._start_lock:
            if not self._started:
                return
            self._started = False
            if self.runner is not None:
                self.runner.stop()
            self.store.close()

    @property
    def schema_ready(self) -> bool:
        return self._migrated

    def ensure_schema(self) -> None:
        """Migrate the database once (retried on the next request while it is down)."""
        if self._migrated:
            return
        with self._migrate_lock:
            if not self._migrated:
                self.store.migrate()
                self._migrated = True

    # -- auth ---------------------------------------------------------------------------------------
    def known_token_name(self, token: str) -> str | None:
        """The name of ``token`` if it is known without a database lookup: the configured
        ``VASE_API_TOKEN``, or a stored token verified less than ``token_cache_s`` ago. None:
        :meth:`token_name` must look it up."""
        configured = self.settings.api_token
        if configured and hmac.compare_digest(token.encode(), configured.encode()):
            return "api-token"
        verified = self._verified_tokens.get(token)
        if verified is not None and time.monotonic() - verified[1] < self.settings.token_cache_s:
            return verified[0]
        return None

    def token_name(self, token: str) -> str | None:
        """The name of a valid token: the configured ``VASE_API_TOKEN`` or an active stored one (looked
        up at most every ``token_cache_s`` seconds: a revoked token works at most that long)."""
        name = self.known_token_name(token)
        if name is not None:
            return name
        self.ensure_schema()
        name = self.store.verify_token(token)
        if name is not None and self.settings.token_cache_s > 0:
            if len(self._verified_tokens) >= _MAX_CACHED_TOKENS:
                self._verified_tokens.clear()
            self._verified_tokens[token] = (name, time.monotonic())
        return name

    # -- readiness ------------------------------------------------------------------------------------
    def check_database(self) -> tuple[bool, str]:
        try:
            self.ensure_schema()
            self.store.ping()
            return True, f"{self.store.dialect} answers"
        except StoreUnavailable as exc:
            return False, str(exc)

    def check_broker(self) -> tuple[bool, str]:
        if self.mode == "embedded":
            alive = self.runner is not None and self.runner.alive
            return alive, "in-process runner " + ("running" if alive else "stopped")
        try:
            self.dispatcher.ping()
            return True, "redis answers"
        except Exception as exc:  # noqa: BLE001
            return False, f"broker unavailable: {type(exc).__name__}: {exc}"
