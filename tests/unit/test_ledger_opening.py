"""The writes that open a job are ordered so that a crash part-way never strands it."""

from __future__ import annotations

import redis

from pipeline.context import JobContext
from pipeline.jobs import ledger


def test_no_prefix_of_the_opening_writes_holds_a_record_without_its_due_entry():
    """The producer's pipeline is not a transaction: a connection lost part-way can leave any prefix of it applied.
    Submitted again under its key, a job with a record is known and not published again, so only its due entry
    lets the reconciler find it. Every prefix that holds a record must therefore hold its due entry."""
    jobs = [JobContext(f"job-{n}", f"key-{n}", f"corr-{n}", "orders", 0) for n in range(3)]
    pipe = redis.Redis().pipeline(transaction=False)  # commands are only queued: nothing is sent
    ledger.open_jobs(pipe, "orders", [ledger.Opening(job, payload={"n": 1}, task_ids=("t",)) for job in jobs])
    commands = [args for args, _ in pipe.command_stack]
    due = next(n for n, args in enumerate(commands) if args[0] == "ZADD" and args[1] == ledger.due_key("orders"))
    records = [n for n, args in enumerate(commands) if args[0] == "HSET"]
    assert len(records) == 3 and due < min(records)
    assert set(commands[due][3::2]) == {job.job_id for job in jobs}  # ZADD key score member score member ...
