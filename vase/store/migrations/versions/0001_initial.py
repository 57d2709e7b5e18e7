"""Initial schema: jobs, runs, samples, traces, api_tokens.

Revision ID: 0001_initial
Revises:
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from vase.store.models import UTCDateTime

revision: str = "0001_initial"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSONType = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=True),
        sa.Column("finished_at", UTCDateTime(), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("model", sa.String(512), nullable=False),
        sa.Column("task", sa.String(256), nullable=False),
        sa.Column("spec", JSONType, nullable=False),
        sa.Column("total_samples", sa.Integer(), nullable=False),
        sa.Column("done_samples", sa.Integer(), nullable=False),
        sa.Column("failed_samples", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("owner", sa.String(128), nullable=True),
        sa.Column("heartbeat_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_jobs"),
    )
    op.create_index("ix_jobs_status", "jobs", ["status"])
    op.create_index("ix_jobs_created_at", "jobs", ["created_at"])

    op.create_table(
        "runs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("job_id", sa.String(32), nullable=True),
        sa.Column("scope", sa.String(64), nullable=False),
        sa.Column("task", sa.String(256), nullable=False),
        sa.Column("method", sa.String(128), nullable=False),
        sa.Column("params", JSONType, nullable=False),
        sa.Column("budget", sa.Integer(), nullable=True),
        sa.Column("residual", sa.Integer(), nullable=True),
        sa.Column("model", sa.String(512), nullable=False),
        sa.Column("generation", JSONType, nullable=False),
        sa.Column("fidelity", sa.Boolean(), nullable=False),
        sa.Column("trace_level", sa.String(16), nullable=False),
        sa.Column("config_hash", sa.String(64), nullable=False),
        sa.Column("manifest", JSONType, nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name="fk_runs_job_id_jobs", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_runs"),
        sa.UniqueConstraint("scope", "config_hash", name="uq_runs_scope_config_hash"),
    )
    op.create_index("ix_runs_job_id", "runs", ["job_id"])

    op.create_table(
        "samples",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("problem_id", sa.String(256), nullable=False),
        sa.Column("sample_index", sa.Integer(), nullable=False),
        sa.Column("seed", sa.BigInteger(), nullable=True),
        sa.Column("eviction_seed", sa.BigInteger(), nullable=True),
        sa.Column("prompt", sa.Text(), nullable=True),
        sa.Column("output", sa.Text(), nullable=True),
        sa.Column("thinking", sa.Text(), nullable=True),
        sa.Column("answer_text", sa.Text(), nullable=True),
        sa.Column("extracted", sa.Text(), nullable=True),
        sa.Column("correct", sa.Boolean(), nullable=True),
        sa.Column("grade_status", sa.String(32), nullable=True),
        sa.Column("grade_reason", sa.Text(), nullable=True),
        sa.Column("new_tokens", sa.Integer(), nullable=True),
        sa.Column("truncated", sa.Boolean(), nullable=True),
        sa.Column("tokens_per_s", sa.Float(), nullable=True),
        sa.Column("kv_bytes_peak", sa.BigInteger(), nullable=True),
        sa.Column("evictions", sa.Integer(), nullable=True),
        sa.Column("sparsity", sa.Float(), nullable=True),
        sa.Column("loop_detected", sa.Boolean(), nullable=True),
        sa.Column("loop_start", sa.Integer(), nullable=True),
        sa.Column("loop_span", sa.Text(), nullable=True),
        sa.Column("kl_mean", sa.Float(), nullable=True),
        sa.Column("top1_agreement", sa.Float(), nullable=True),
        sa.Column("first_divergence", sa.Integer(), nullable=True),
        sa.Column("metrics", JSONType, nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name="fk_samples_run_id_runs", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_samples"),
        sa.UniqueConstraint("run_id", "problem_id", "sample_index", name="uq_samples_run_id_problem_id_sample_index"),
    )

    op.create_table(
        "traces",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("sample_id", BigId, nullable=False),
        sa.Column("level", sa.String(16), nullable=False),
        sa.Column("encoding", sa.String(32), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("n_events", sa.Integer(), nullable=False),
        sa.Column("n_evicted", sa.BigInteger(), nullable=False),
        sa.Column("nbytes", sa.BigInteger(), nullable=False),
        sa.Column("meta", JSONType, nullable=True),
        sa.ForeignKeyConstraint(["sample_id"], ["samples.id"], name="fk_traces_sample_id_samples", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_traces"),
        sa.UniqueConstraint("sample_id", name="uq_traces_sample_id"),
    )

    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("revoked_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_api_tokens"),
        sa.UniqueConstraint("name", name="uq_api_tokens_name"),
        sa.UniqueConstraint("token_hash", name="uq_api_tokens_token_hash"),
    )


def downgrade() -> None:
    op.drop_table("api_tokens")
    op.drop_table("traces")
    op.drop_table("samples")
    op.drop_index("ix_runs_job_id", table_name="runs")
    op.drop_table("runs")
    op.drop_index("ix_jobs_created_at", table_name="jobs")
    op.drop_index("ix_jobs_status", table_name="jobs")
    op.drop_table("jobs")
