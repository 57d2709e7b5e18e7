"""vase.config: the one redaction of database and broker URLs (a password is never shown)."""

from __future__ import annotations

import pytest

from vase.config import redact_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://vase:s3cret@db:5432/vase", "postgresql://vase:***@db:5432/vase"),
        ("postgresql+psycopg://vase:p@ss@db/vase", "postgresql+psycopg://vase:***@db/vase"),
        ("redis://:s3cret@redis:6379/0", "redis://:***@redis:6379/0"),
        ("postgresql://db/vase?sslmode=require&password=s3cret", "postgresql://db/vase?sslmode=require&password=***"),
        ("postgresql://vase@db/vase", "postgresql://vase@db/vase"),
        ("sqlite:////var/lib/vase/vase.sqlite", "sqlite:////var/lib/vase/vase.sqlite"),
    ],
)
def test_passwords_are_hidden(url, shown):
    assert redact_url(url) == shown
    assert "s3cret" not in redact_url(url)
