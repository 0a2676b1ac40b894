"""Completed jobs leave their pipelines' due sets: in batches, and on a Redis Cluster once their end is replicated.

A worker takes the jobs it completes out of the due set together, about once a second: one ZREM a
pipeline, not one a job. A batch lost with its process or with Redis leaves due entries of ended
jobs; they come due, and the reconciler, finding the jobs ended, closes them.

On a Redis Cluster, a job's record and its pipeline's due set live on different masters, each
replicated on its own. A failover that loses the last writes of the record's master would take
the job back to a step it had finished while another master has already forgotten its due entry:
nothing would watch it. So on a cluster a completed job leaves the due set only once the replicas
of its record's master have passed the replication offset that master had when the job was first
seen here (after its end was written). One whose replicas do not catch up within CLOSE_WAIT_LIMIT
(a replica paused or cut off) is left to the reconciler. On one Redis (with or without Sentinel)
the due set and the record share one replication stream, so a failover keeps them in step.
"""

from __future__ import annotations

import logging
import time

import redis
from redis.cluster import ClusterNode, RedisCluster

from pipeline.batching import Batch
from pipeline.jobs.ledger import due_key
from pipeline.store import JobKeys, redis_client

CLOSE_EVERY = 1.0  # seconds between two batches
CLOSE_WAIT_LIMIT = 60.0  # seconds a completed job waits for its record's replicas before the reconciler is left it
log = logging.getLogger("vetro.ledger")

Job = tuple[str, str]  # (pipeline, job id)
# When it completed (this process's clock), the master its record was on then ('' on one Redis), and that master's
# replication offset once a batch has read it (None before).
Waiting = tuple[float, str, int | None]


def close_soon(pipeline: str, job_id: str) -> None:
    """The job completed: it leaves the due set with the next batch (see above). (A completed job is never
    reopened: replay refuses it, so a late batch cannot take a reopened job's due entry.)"""
    client = redis_client()
    master = client.get_node_from_key(JobKeys(pipeline, job_id).record).name if isinstance(client, RedisCluster) else ""
    _closing.add((pipeline, job_id), (time.time(), master, None))


def flush() -> None:
    closing = _closing.take()
    if not closing:
        return
    client = redis_client()
    try:
        ready, waiting = _replicated(client, closing) if isinstance(client, RedisCluster) else (list(closing), {})
        if ready:
            pipe = client.pipeline(transaction=False)
            for pipeline in {pipeline for pipeline, _ in ready}:
                pipe.zrem(due_key(pipeline), *[job_id for name, job_id in ready if name == pipeline])
            pipe.execute()
    except (redis.RedisError, redis.exceptions.RedisClusterException) as error:
        log.debug("completed jobs not closed (%s); kept for the next batch", error)
        _closing.give_back(closing)
        return
    _closing.give_back(waiting)


def _replicated(client: RedisCluster, closing: dict[Job, Waiting]) -> tuple[list[Job], dict[Job, Waiting]]:
    """The jobs whose record's master has no replica or whose replicas hold their end, and those still waiting."""
    now = time.time()
    masters = {job: client.get_node_from_key(JobKeys(*job).record) for job in closing}
    offsets = {node.name: _offsets(client, node) for node in masters.values()}
    ready, waiting = [], {}
    for job, (completed_at, written_to, seen) in closing.items():
        master = masters[job].name
        if master != written_to:
            continue  # the slot's master changed since: a failover may have lost the end; the reconciler looks
        offset, replicated = offsets[master]
        if replicated is None or (seen is not None and replicated >= seen):
            ready.append(job)
        elif now - completed_at < CLOSE_WAIT_LIMIT:
            waiting[job] = (completed_at, written_to, offset if seen is None else seen)
    return ready, waiting


def _offsets(client: RedisCluster, node: ClusterNode) -> tuple[int, int | None]:
    """A master's replication offset, and the least its replicas have acknowledged (None: it has no replica)."""
    info = client.info("replication", target_nodes=node)
    replicas = [value for name, value in info.items() if name.startswith("slave") and isinstance(value, dict)]
    acknowledged = [int(replica["offset"]) for replica in replicas if "offset" in replica]
    return int(info["master_repl_offset"]), (min(acknowledged) if acknowledged else None)


def _first(kept: Waiting, more: Waiting) -> Waiting:
    return kept


_closing: Batch[Job, Waiting] = Batch("vetro-closing", CLOSE_EVERY, _first, flush)
