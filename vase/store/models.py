"""ORM models of the results store (SQLAlchemy 2, typed). The schema's history lives in
``vase/store/migrations``; a test checks that the migrations produce exactly these tables."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

#: A job's statuses: queued -> running -> one of the terminal ones (see ``vase.jobs``).
JOB_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
TERMINAL_STATUSES = ("succeeded", "failed", "cancelled")
ACTIVE_STATUSES = tuple(s for s in JOB_STATUSES if s not in TERMINAL_STATUSES)

# JSON documents: JSONB on Postgres, JSON (text) elsewhere.
JSONType = JSON().with_variant(postgresql.JSONB(), "postgresql")
# Traces can be tens of MB: BYTEA on Postgres, BLOB on SQLite.
BinaryType = LargeBinary()


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC datetimes on every backend (SQLite keeps naive text: read back as UTC)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        value = value.astimezone(timezone.utc)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    status: Mapped[str] = mapped_column(String(16), default="queued")
    model: Mapped[str] = mapped_column(String(512))
    task: Mapped[str] = mapped_column(String(256))
    spec: Mapped[dict[str, Any]] = mapped_column(JSONType)
    total_samples: Mapped[int] = mapped_column(Integer, default=0)
    done_samples: Mapped[int] = mapped_column(Integer, default=0)
    failed_samples: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    owner: Mapped[str | None] = mapped_column(String(128))
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    __table_args__ = (
        Index(None, "status"),
        Index(None, "created_at"),
    )


class Run(Base):
    __tablename__ = "runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str | None] = mapped_column(String(32), ForeignKey("jobs.id", ondelete="CASCADE"))
    #: The resume scope: the job id, or "cli" for runs started from the command line.
    scope: Mapped[str] = mapped_column(String(64))
    task: Mapped[str] = mapped_column(String(256))
    method: Mapped[str] = mapped_column(String(128))
    params: Mapped[dict[str, Any]] = mapped_column(JSONType)
    budget: Mapped[int | None] = mapped_column(Integer)
    residual: Mapped[int | None] = mapped_column(Integer)
    model: Mapped[str] = mapped_column(String(512))
    generation: Mapped[dict[str, Any]] = mapped_column(JSONType)
    fidelity: Mapped[bool] = mapped_column(Boolean, default=False)
    trace_level: Mapped[str] = mapped_column(String(16), default="off")
    config_hash: Mapped[str] = mapped_column(String(64))
    manifest: Mapped[dict[str, Any]] = mapped_column(JSONType)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    __table_args__ = (
        UniqueConstraint("scope", "config_hash"),
        Index(None, "job_id"),
    )


class Sample(Base):
    __tablename__ = "samples"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(Integer, ForeignKey("runs.id", ondelete="CASCADE"))
    problem_id: Mapped[str] = mapped_column(String(256))
    sample_index: Mapped[int] = mapped_column(Integer)
    seed: Mapped[int | None] = mapped_column(BigInteger)
    eviction_seed: Mapped[int | None] = mapped_column(BigInteger)
    prompt: Mapped[str | None] = mapped_column(Text)
    output: Mapped[str | None] = mapped_column(Text)
    thinking: Mapped[str | None] = mapped_column(Text)
    answer_text: Mapped[str | None] = mapped_column(Text)
    extracted: Mapped[str | None] = mapped_column(Text)
    correct: Mapped[bool | None] = mapped_column(Boolean)
    grade_status: Mapped[str | None] = mapped_column(String(32))
    grade_reason: Mapped[str | None] = mapped_column(Text)
    # The flexible verdict (vase.grading.flexible), beside the strict one above.
    correct_flex: Mapped[bool | None] = mapped_column(Boolean)
    extracted_flex: Mapped[str | None] = mapped_column(Text)
    flex_rule: Mapped[str | None] = mapped_column(String(32))
    new_tokens: Mapped[int | None] = mapped_column(Integer)
    truncated: Mapped[bool | None] = mapped_column(Boolean)
    tokens_per_s: Mapped[float | None] = mapped_column(Float)
    kv_bytes_peak: Mapped[int | None] = mapped_column(BigInteger)
    evictions: Mapped[int | None] = mapped_column(Integer)
    sparsity: Mapped[float | None] = mapped_column(Float)
    loop_detected: Mapped[bool | None] = mapped_column(Boolean)
    loop_start: Mapped[int | None] = mapped_column(Integer)
    loop_span: Mapped[str | None] = mapped_column(Text)
    kl_mean: Mapped[float | None] = mapped_column(Float)
    top1_agreement: Mapped[float | None] = mapped_column(Float)
    first_divergence: Mapped[int | None] = mapped_column(Integer)
    metrics: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    __table_args__ = (UniqueConstraint("run_id", "problem_id", "sample_index"),)


class Trace(Base):
    __tablename__ = "traces"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    sample_id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), ForeignKey("samples.id", ondelete="CASCADE"), unique=True
    )
    level: Mapped[str] = mapped_column(String(16))
    encoding: Mapped[str] = mapped_column(String(32))
    data: Mapped[bytes] = mapped_column(BinaryType)
    n_events: Mapped[int] = mapped_column(Integer, default=0)
    n_evicted: Mapped[int] = mapped_column(BigInteger, default=0)
    nbytes: Mapped[int] = mapped_column(BigInteger, default=0)
    meta: Mapped[dict[str, Any] | None] = mapped_column(JSONType)


class ApiToken(Base):
    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


__all__ = [
    "ACTIVE_STATUSES",
    "ApiToken",
    "Base",
    "JOB_STATUSES",
    "Job",
    "Run",
    "Sample",
    "TERMINAL_STATUSES",
    "Trace",
    "UTCDateTime",
    "utcnow",
]
