"""Alembic migrations of the vase results store (see ``vase/store/alembic.ini``)."""
