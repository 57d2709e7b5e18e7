"""Alembic environment of the vase results store.

``Store.migrate()`` hands over an open connection in ``config.attributes["connection"]`` (it holds
the migration lock on it). From the command line the URL comes from ``-x url=...``, then
``VASE_DATABASE_URL``/settings, then ``sqlalchemy.url`` of the ini file.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from vase.store.models import Base

config = context.config
target_metadata = Base.metadata


def _include_object(obj, name, type_, reflected, compare_to):  # noqa: ANN001
    # Only our tables: never propose dropping tables other tools keep in the same database.
    if type_ == "table" and reflected and compare_to is None:
        return False
    return True


def _configure(connection) -> None:  # noqa: ANN001
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        include_object=_include_object,
    )


def run_migrations_offline() -> None:
    context.configure(
        url=_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def _url() -> str:
    from vase.store.store import normalize_url

    url = context.get_x_argument(as_dictionary=True).get("url")
    if not url:
        try:
            from vase.config import get_settings

            url = get_settings().resolved_database_url
        except Exception:  # pragma: no cover - settings unavailable
            url = config.get_main_option("sqlalchemy.url")
    return normalize_url(url)


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(_url())
    with engine.connect() as conn:
        _configure(conn)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
