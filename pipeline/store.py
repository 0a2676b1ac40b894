"""The Redis client for vetro's own state (job records, guards, counters), one per process."""

from __future__ import annotations

import os

import redis

from settings import get_settings

KEY_PREFIX = "vetro:"
_clients: dict[tuple[int, str], redis.Redis] = {}


def redis_client() -> redis.Redis:
    """A client for the result store, created after fork so pool children never share sockets."""
    url = get_settings().results_url
    key = (os.getpid(), url)
    client = _clients.get(key)
    if client is None:
        client = redis.Redis.from_url(
            url, socket_connect_timeout=2, socket_timeout=5, health_check_interval=30, retry_on_timeout=True
        )
        _clients.clear()
        _clients[key] = client
    return client


def key(*parts: str) -> str:
    """A namespaced key, e.g. key("job", job_id) -> "vetro:job:<id>"."""
    return KEY_PREFIX + ":".join(parts)
