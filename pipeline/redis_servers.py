"""How vetro reaches a Redis from its URL: `redis://`, `rediss://`, `unix://`, or `sentinel://`.

A `sentinel://` URL names the Sentinels that know where the master is, in kombu's form
(`sentinel://:pw@s1:26379;sentinel://s2:26379;sentinel://s3:26379/0`); the master's name is
VETRO_SENTINEL_MASTER. One URL means the same server to the broker (kombu's Sentinel transport)
and to vetro's own clients here: the database and the password are the first sentinel's, and the
password is the master's (kombu reads it so). After a failover, a client's next connection asks the
Sentinels again and reaches the new master; a command sent to the old one fails and is retried, or
raises a ConnectionError that the caller handles as it handles any lost Redis.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

import redis
from redis.sentinel import Sentinel

from settings import get_settings

SENTINEL_SCHEME = "sentinel"
SENTINEL_PORT = 26379
C = TypeVar("C", bound=redis.Redis)

# Options that also apply to the Sentinels themselves: a slow or gone Sentinel costs a timeout, not a hang.
_SENTINEL_OPTIONS = ("socket_timeout", "socket_connect_timeout")


@dataclass(frozen=True)
class SentinelAddress:
    sentinels: list[tuple[str, int]]
    db: int
    username: str | None
    password: str | None


def is_sentinel(url: str) -> bool:
    return url.startswith(f"{SENTINEL_SCHEME}://")


def sentinel_address(url: str) -> SentinelAddress:
    """The sentinels a `sentinel://` URL lists (`;` between them), its database and credentials."""
    parts = [urlsplit(part) for part in url.split(";") if part.strip()]
    sentinels = [(part.hostname or "127.0.0.1", part.port or SENTINEL_PORT) for part in parts]
    first = parts[0]
    path = first.path.strip("/")
    db = int(path) if path.isdigit() else 0
    return SentinelAddress(
        sentinels,
        db,
        unquote(first.username) if first.username else None,
        unquote(first.password) if first.password else None,
    )


def connect(url: str, client_class: type[C] = redis.Redis, **options: Any) -> C:  # type: ignore[assignment]
    """A client of `client_class` for the Redis `url` names (through Sentinel: for its current master)."""
    if not is_sentinel(url):
        return client_class.from_url(url, **options)
    address = sentinel_address(url)
    sentinel_options = {name: options[name] for name in _SENTINEL_OPTIONS if name in options}
    credentials = {"username": address.username, "password": address.password}
    sentinel = Sentinel(
        address.sentinels,
        sentinel_kwargs=sentinel_options or None,
        db=address.db,
        **{name: value for name, value in credentials.items() if value},
        **options,
    )
    return sentinel.master_for(str(get_settings().sentinel_master), redis_class=client_class)


def where(url: str) -> str:
    """Which server `url` names, for a log line or an error (never its password)."""
    if is_sentinel(url):
        sentinels = ", ".join(f"{host}:{port}" for host, port in sentinel_address(url).sentinels)
        return f"the Redis master {get_settings().sentinel_master!r} of the Sentinels at {sentinels}"
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return f"the Redis at {parts.path}"
    return f"the Redis at {parts.hostname or 'localhost'}:{parts.port or 6379}"
