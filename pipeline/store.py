"""The Redis client for vetro's own state (ledger, step results, counters), and the names of its keys.

A job's keys are namespaced by its pipeline (`vetro:<pipeline>:...`) and carry the job id as a
hash tag (`{...}`), so a Lua script touching several of them stays in one slot. Keys shared by all
jobs (a pipeline's due set and job index, the queue frontier, the spool) are written by single
commands. Every script and MULTI vetro sends goes through `run_script`, `queue_script` or
`transaction`, which refuse keys of more than one Redis Cluster slot on any Redis, so a change that
would break on a cluster fails every test, not only the cluster's. The exceptions are the scripts
that push messages onto the broker's queues with the job's writes (opening a job, recording a step
with the messages of the steps it starts): they run only when the broker's Redis is the store, and
a broker is never a cluster (`spans`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from functools import cached_property
from typing import Any, TypeVar

import redis
from redis.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import NoScriptError

from pipeline.redis_servers import connect
from settings import get_settings

KEY_PREFIX = "vetro:"
_clients: dict[tuple[int, str], redis.Redis] = {}
_scripts: dict[int, dict[str, Any]] = {}
_loaded_scripts: dict[int, set[str]] = {}
T = TypeVar("T")


def redis_client() -> redis.Redis:
    """A client for the result store, created after fork so pool children never share sockets."""
    url = get_settings().results_url
    key = (os.getpid(), url)
    client = _clients.get(key)
    if client is None:
        client = connect(url, socket_connect_timeout=2, socket_timeout=5, health_check_interval=30)
        _clients.clear()
        _clients[key] = client
    return client


def script(name: str, source: str) -> Any:
    """The Lua script registered on this process's client (EVALSHA, loading it once if Redis lost it)."""
    client = redis_client()
    registered = _scripts.setdefault(id(client), {})
    if name not in registered:
        registered[name] = client.register_script(source)
    return registered[name]


def script_sha(name: str, source: str) -> str:
    """The script's SHA, loaded into Redis once by this process (again after it lost them), for an
    EVALSHA queued on a pipeline: redis-py sends SCRIPT EXISTS before every pipeline holding a Script
    object. A Redis that lost the script answers NoScriptError: send through `sent_with_scripts`."""
    client = redis_client()
    loaded = _loaded_scripts.setdefault(id(client), set())
    if name not in loaded:
        client.script_load(source)
        loaded.add(name)
    return script(name, source).sha


class CrossSlotError(RuntimeError):
    """A script or MULTI was given keys of several Redis Cluster slots: a defect in vetro, caught on any Redis."""


def one_slot(keys: Sequence[str]) -> Sequence[str]:
    """`keys`, once checked to share one Redis Cluster slot (their hash tags, see JobKeys)."""
    slots = {key_slot(name.encode()) for name in keys}
    if len(slots) > 1:
        raise CrossSlotError(f"keys of {len(slots)} Redis Cluster slots in one script or MULTI: {list(keys)}")
    return keys


def run_script(name: str, source: str, keys: Sequence[str], args: Sequence[Any], spans: bool = False) -> Any:
    """Run a registered Lua script (see `script`) on keys of one slot, unless it `spans` slots (see above)."""
    return script(name, source)(keys=_checked(name, keys, spans), args=args)


def queue_script(
    pipe: Any, name: str, source: str, keys: Sequence[str], args: Sequence[Any], spans: bool = False
) -> Any:
    """Queue the script on `pipe` as EVALSHA (see `script_sha`), on keys of one slot unless it `spans` slots.

    As a raw command: redis-py's cluster pipeline blocks its `evalsha` method (redis/redis-py#2914, open in
    8.1). On a cluster, with the node of its slot: without it, redis-py 8.1's pipeline asks a node for the
    command's keys (COMMAND GETKEYS), one more round trip for every script it sends."""
    keys = _checked(name, keys, spans)
    client = redis_client()
    options = {"target_nodes": client.get_node_from_key(keys[0])} if isinstance(client, RedisCluster) and keys else {}
    return pipe.execute_command("EVALSHA", script_sha(name, source), len(keys), *keys, *args, **options)


def _checked(name: str, keys: Sequence[str], spans: bool) -> Sequence[str]:
    """A script's keys: of one slot, or, for a script that `spans` slots, on a store that is not a cluster."""
    if not spans:
        return one_slot(keys)
    if isinstance(redis_client(), RedisCluster):
        raise CrossSlotError(f"the script {name!r} spans slots and the result store is a Redis Cluster")
    return keys


def transaction(*keys: str) -> Any:
    """A MULTI/EXEC pipeline for commands on `keys`, which must share one slot (a cluster refuses others)."""
    one_slot(keys)
    return redis_client().pipeline(transaction=True)


def sent_with_scripts(send: Callable[[], T]) -> T:
    """`send()`, a round trip with EVALSHAs (see `script_sha`); if Redis lost a script (a restart, SCRIPT
    FLUSH), none of them ran: load the scripts again and send once more."""
    try:
        return send()
    except NoScriptError:
        _loaded_scripts.clear()
        return send()


def key(*parts: str) -> str:
    """A namespaced key, e.g. key("ledger", "due") -> "vetro:ledger:due"."""
    return KEY_PREFIX + ":".join(parts)


class JobKeys:
    """The keys holding one job: its ledger record, its steps' counters, and (format 2) their results and leases."""

    def __init__(self, pipeline: str, job_id: str) -> None:
        self.job_id = job_id
        self.record = key(pipeline, "job", f"{{{job_id}}}")

    @cached_property
    def results(self) -> str:
        """Hash: step scope -> the step's recorded result (JSON), of a record of format 2 (3 keeps it on the record)."""
        return self.record + ":results"

    @cached_property
    def attempts(self) -> str:
        """Hash: '<counter>:<scope>' -> failed attempts, dependency waits and unfinished starts of each step."""
        return self.record + ":attempts"

    def lease(self, scope: str) -> str:
        """String with a TTL: the owner of the attempt running this step now, for a record of format 2 (3 keeps it on
        the record, pipeline.jobs.guard)."""
        return f"{self.record}:lease:{scope}"

    def all(self, scopes: list[str]) -> list[str]:
        return [self.record, self.results, self.attempts, *(self.lease(scope) for scope in scopes)]
