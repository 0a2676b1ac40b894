"""How vetro reaches a Redis from its URL: `redis://`, `rediss://`, `unix://`, `sentinel://`, or a Redis
Cluster's `redis+cluster://` (`rediss+cluster://` over TLS).

A `sentinel://` URL names the Sentinels that know where the master is, in kombu's form
(`sentinel://:pw@s1:26379;sentinel://s2:26379;sentinel://s3:26379/0`); the master's name is
VETRO_SENTINEL_MASTER. One URL means the same server to the broker (kombu's Sentinel transport)
and to vetro's own clients here: the database and the password are the first sentinel's, and the
password is the master's (kombu reads it so). After a failover, a client's next connection asks the
Sentinels again and reaches the new master; a command sent to the old one fails and is retried, or
raises a ConnectionError that the caller handles as it handles any lost Redis.

A `redis+cluster://` URL lists some of a cluster's nodes (`redis+cluster://:pw@n1:6379,n2:6379,n3:6379/0`);
redis-py's RedisCluster asks them for the rest and for the slots' owners. Only the result store and the
breaker store may be a cluster (kombu has no cluster transport), and only its database 0 exists.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import parse_qsl, unquote, urlsplit

import redis
from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import RedisClusterException
from redis.sentinel import Sentinel

from settings import get_settings
from settings.config import is_cluster

SENTINEL_SCHEME = "sentinel"
SENTINEL_PORT = 26379
C = TypeVar("C", bound=redis.Redis)
K = TypeVar("K", bound=RedisCluster)
# A cluster URL's query options that reach its nodes' connections (the TLS ones, as redis-py's from_url reads them).
_CLUSTER_QUERY_OPTIONS = ("ssl_cert_reqs", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_check_hostname")

# Options that also apply to the Sentinels themselves: a slow or gone Sentinel costs a timeout, not a hang.
_SENTINEL_OPTIONS = ("socket_timeout", "socket_connect_timeout")


@dataclass(frozen=True)
class _Credentials:
    username: str | None
    password: str | None

    def given(self) -> dict[str, str]:
        """Those given, as redis-py's keyword arguments."""
        return {name: value for name, value in (("username", self.username), ("password", self.password)) if value}


@dataclass(frozen=True)
class SentinelAddress(_Credentials):
    sentinels: list[tuple[str, int]]
    db: int


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
        username=unquote(first.username) if first.username else None,
        password=unquote(first.password) if first.password else None,
        sentinels=sentinels,
        db=db,
    )


@dataclass(frozen=True)
class ClusterAddress(_Credentials):
    nodes: list[tuple[str, int]]
    options: dict[str, Any]  # TLS: `ssl` and the query's ssl_* options


def cluster_address(url: str) -> ClusterAddress:
    """The nodes a `redis+cluster://` URL lists (`,` between them), its credentials and TLS options. (Its
    database can only be 0: settings refuse another.)"""
    scheme, _, rest = url.partition("://")
    rest, _, query = rest.partition("?")
    userinfo, _, hosts = rest.partition("/")[0].rpartition("@")
    username, _, password = userinfo.partition(":")
    nodes = []
    for node in filter(None, (part.strip() for part in hosts.split(","))):
        parts = urlsplit(f"//{node}")
        nodes.append((parts.hostname or "127.0.0.1", parts.port or 6379))
    if not nodes:
        raise ValueError("a redis+cluster:// URL lists no node")
    options: dict[str, Any] = {"ssl": True} if scheme.lower() == "rediss+cluster" else {}
    options |= {name: value for name, value in parse_qsl(query) if name in _CLUSTER_QUERY_OPTIONS}
    return ClusterAddress(
        username=unquote(username) if username else None,
        password=unquote(password) if password else None,
        nodes=nodes,
        options=options,
    )


def connect(
    url: str,
    client_class: type[C] = redis.Redis,  # type: ignore[assignment]
    cluster_class: type[K] = RedisCluster,  # type: ignore[assignment]
    **options: Any,
) -> C | K:
    """A client for the Redis `url` names: of `client_class` for one server (through Sentinel: its current
    master), of `cluster_class` for a Redis Cluster."""
    if is_cluster(url):
        address = cluster_address(url)
        try:
            return cluster_class(
                startup_nodes=[ClusterNode(host, port) for host, port in address.nodes],
                **address.given(),
                **address.options,
                **options,
            )
        except RedisClusterException as error:
            # RedisCluster asks its nodes for the slots as it is made, and raises RedisClusterException, which is
            # not a RedisError, when none answers: every caller handles a lost Redis as a ConnectionError.
            raise redis.ConnectionError(f"{where(url)}: {error}") from error
    if not is_sentinel(url):
        return client_class.from_url(url, **options)
    address = sentinel_address(url)
    sentinel_options = {name: options[name] for name in _SENTINEL_OPTIONS if name in options}
    sentinel = Sentinel(
        address.sentinels,
        sentinel_kwargs=sentinel_options or None,
        db=address.db,
        **address.given(),
        **options,
    )
    return sentinel.master_for(str(get_settings().sentinel_master), redis_class=client_class)


def where(url: str) -> str:
    """Which server `url` names, for a log line or an error (never its password)."""
    if is_sentinel(url):
        sentinels = ", ".join(f"{host}:{port}" for host, port in sentinel_address(url).sentinels)
        return f"the Redis master {get_settings().sentinel_master!r} of the Sentinels at {sentinels}"
    if is_cluster(url):
        return "the Redis Cluster of " + ", ".join(f"{host}:{port}" for host, port in cluster_address(url).nodes)
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return f"the Redis at {parts.path}"
    return f"the Redis at {parts.hostname or 'localhost'}:{parts.port or 6379}"


def read_keys(client: redis.Redis | RedisCluster, keys: list[str]) -> list[Any]:
    """The values of `keys` in one round trip: MGET on one server; on a cluster, one MGET per slot (redis-py's
    mget_nonatomic), since a cluster's MGET must stay in one slot. Not a snapshot taken at one instant."""
    if isinstance(client, RedisCluster):
        return client.mget_nonatomic(keys)
    return client.mget(keys)
