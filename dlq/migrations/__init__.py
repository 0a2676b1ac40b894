"""Alembic migrations of the dead-letter store (`vetro db upgrade`)."""
