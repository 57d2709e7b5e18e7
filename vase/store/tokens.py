"""API tokens: only a token's SHA-256 is stored; the plaintext is shown once."""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError

from .engine import StoreBase, StoreError
from .models import ApiToken, utcnow


class DuplicateTokenName(StoreError, ValueError):
    """An active API token with this name already exists."""


def _hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class TokenQueries(StoreBase):
    """The ``api_tokens`` table."""

    def create_token(self, name: str) -> str:
        """A new API token called ``name``; returns the plaintext (shown once; only its sha256 is
        stored). A revoked token's name can be reused; an active one's cannot (DuplicateTokenName)."""
        if not name or not name.strip():
            raise ValueError("token name must not be empty")
        token = "vase_" + secrets.token_urlsafe(32)
        digest = _hash_token(token)
        now = utcnow()
        with self._tx(write=True) as conn:
            existing = conn.execute(select(ApiToken.id, ApiToken.revoked_at).where(ApiToken.name == name)).first()
            if existing is not None and existing.revoked_at is None:
                raise DuplicateTokenName(f"an API token named {name!r} already exists; revoke it first")
            try:
                if existing is not None:
                    conn.execute(update(ApiToken).where(ApiToken.id == existing.id)
                                 .values(token_hash=digest, created_at=now, revoked_at=None))
                else:
                    with conn.begin_nested():
                        conn.execute(insert(ApiToken).values(name=name, token_hash=digest, created_at=now))
            except IntegrityError as error:  # a concurrent create with the same name
                raise DuplicateTokenName(f"an API token named {name!r} already exists") from error
        return token

    def revoke_token(self, name: str) -> bool:
        """Revoke the active token called ``name``; False if there is none."""
        with self._tx(write=True) as conn:
            return conn.execute(update(ApiToken).where(ApiToken.name == name, ApiToken.revoked_at.is_(None))
                                .values(revoked_at=utcnow())).rowcount > 0

    def verify_token(self, token: str) -> str | None:
        """The name of the active token ``token`` is, or None."""
        if not token:
            return None
        with self._tx() as conn:
            return conn.execute(select(ApiToken.name).where(ApiToken.token_hash == _hash_token(token),
                                                            ApiToken.revoked_at.is_(None))).scalar()

    def list_tokens(self) -> list[dict[str, Any]]:
        """[{name, created_at, revoked_at}] (never the hash)."""
        with self._tx() as conn:
            rows = conn.execute(select(ApiToken.name, ApiToken.created_at, ApiToken.revoked_at)
                                .order_by(ApiToken.name)).all()
        return [dict(r._mapping) for r in rows]
