"""A job's timeline, read from its ledger record: each step with its result or counters and times, the
fan-out, re-drives and compensations; what `vetro job show` prints (vetro.timeline renders it)."""

from __future__ import annotations

import json
from typing import Any

from pipeline.jobs.ledger import (
    COMPLETED,
    EDITED,
    STARTS,
    STEP_FIELDS,
    JobKeys,
    as_text,
    get_job,
    is_hidden,
    is_step_field,
    leases_held,
    load,
)
from pipeline.plan import outline
from pipeline.store import redis_client


def describe_job(job_id: str) -> dict[str, Any] | None:
    """The job's record, each step (done with its result, or running, with its counters and times), and its
    re-drives: what `vetro job show` prints as a timeline."""
    record = get_job(job_id)
    if record is None:
        return None
    pipeline, job_id = record["pipeline"], record["job_id"]
    keys = JobKeys(pipeline, job_id)
    state = load(pipeline, job_id)
    counters = as_text(redis_client().hgetall(keys.attempts))
    record = dict(state.record)
    step_fields = {name: record.pop(name) for name in list(record) if is_step_field(name)}
    for name in [name for name in record if is_hidden(name)]:
        del record[name]
    edited = [name.removeprefix(EDITED) for name in list(record) if name.startswith(EDITED) and record.pop(name)]
    payload = state.payload
    record.pop("payload", None)
    record.pop("plan", None)
    redrives = json.loads(record.pop("redrive_log", "[]"))
    steps: dict[str, dict[str, Any]] = {scope: {"status": "done", "result": r} for scope, r in state.results.items()}
    for name, value in counters.items():
        counter, scope = name.split(":", 1)
        steps.setdefault(scope, {"status": "pending"})[counter] = int(value)
    for name, value in step_fields.items():
        prefix, scope = name.split(":", 1)
        prefix += ":"
        if prefix == STARTS and scope in state.results:
            continue  # a finished step's runs all ended; the guard leaves their count behind
        shown = STEP_FIELDS[prefix]
        steps.setdefault(scope, {"status": "pending"})[shown] = value if shown == "worker" else _number(value)
    for scope in edited:  # an operator corrected its input for a replay (the audit log has the change)
        steps.setdefault(scope, {"status": "pending"})["input_edited"] = True
    for scope, seconds in leases_held(state, steps).items():
        steps[scope].update(status="running", lease_seconds_left=seconds)
    if record.get("failed_stage") in steps and record.get("status") != COMPLETED:
        steps[record["failed_stage"]]["status"] = "dead-lettered"
    numbers = {name: _number(value) for name, value in record.items() if name in NUMERIC_FIELDS}
    described = {**record, **numbers, "payload": payload, "steps": steps, "redrives": redrives}
    plan = state.plan
    described["plan"] = outline(
        plan.root,
        lambda scope: steps.get(scope, {}).get("status", "pending"),
        lambda planner: json.loads(state.record.get(plan.branches_field(planner)) or "[]"),
    )
    if state.compensations is not None:
        described["compensations"] = [
            {"stage": name, "status": steps.get(name, {}).get("status", "pending")} for name in state.compensations
        ]
    return described


NUMERIC_FIELDS = frozenset(
    {"submitted_at", "touched_at", "progress_at", "finished_at", "replayed_at", "revoked_at", "replay", "replays"}
    | {"retries"}
    | {"waits", "redrives", "stalls", "parts_expected", "parts_done", "dead_lettered"}
)


def _number(value: str) -> float | int:
    number = float(value)
    return int(number) if number.is_integer() and abs(number) < 1e9 else number
