"""The Celery and kombu adapter: the app, its message builder, transport and templates, the publishing bracket.

Every private Celery or kombu internal vetro relies on is named in `internals`, with a contract test."""
