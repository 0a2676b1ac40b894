"""`vetro chaos`: the whole pipeline under seeded faults on this machine, checked at the partner.

Everything runs on 127.0.0.1 and is started here: a Redis with its append-only file on,
a SQLite dead-letter store, the partner stub, workers (each under vetro.supervise, as
the Procfile runs them) and celery beat. Half the orders are submitted as the declared
pipeline, half as a hand-built Celery canvas of the same stages (tasks.orders.order_canvas),
while faults are injected:
SIGKILLs of pool processes and of whole workers (their supervisor starts them again), a
SIGTERM (a deploy: the worker shuts down warm and is started again), a Redis restart, a
partner outage and a partner error rate. Then the faults stop, the system drains, and the
outcome is checked against what the partner recorded, not against vetro's own records:

- every job completed or dead-lettered with a reason; none lost;
- every completed job's effect at each destination its routing rules name;
- no order took effect twice at a destination (under any key);
- every worker alive at the end.

It also lists each duplicate delivery (a key the partner got twice and absorbed) with the
faults that happened between the two deliveries. It prints a JSON report and returns
non-zero when a check fails.

`--engine raw` runs the same canvas on raw Celery instead (bench.raw_orders: the same stage
bodies, a Redis result backend, acks late), under the same fault schedule: the anchor. Its
report counts the jobs that ended incomplete (neither finished nor failed: a lost chain link
or chord join) and the effects the partner got twice; it has no checks to pass.
"""

from __future__ import annotations

import importlib
import json
import os
import random
import signal
import tempfile
import threading
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from typing import Any

from pipeline.adapter.app import reconfigure
from settings import reset_settings
from tasks.orders.config import orders_settings
from tasks.orders.routing import destinations_for
from tasks.orders.samples import sample_batch
from tasks.partner_stub import Faults, PartnerServer
from vetro.testing.processes import BeatProcess, RedisServer, WorkerProcess

SUBMIT_BATCH = 10
SUBMIT_SHARE = 0.7  # jobs are submitted over this share of the fault window
# Short limits, so that redelivery and reconciliation happen within the run: a stalled job is
# looked at after 16 + 10 + 10 = 36 s.
CHAOS_SETTINGS = {
    "VETRO_VISIBILITY_TIMEOUT": "16",
    "VETRO_RECONCILE_INTERVAL": "2",
    "VETRO_SPOOL_FLUSH_INTERVAL": "5",
    "VETRO_BREAKER__RESET_TIMEOUT": "5",
    "VETRO_ALL_STAGES__TIME_LIMIT": "10",
    "VETRO_ALL_STAGES__SOFT_TIME_LIMIT": "8",
    "VETRO_ALL_STAGES__BACKOFF_BASE": "1",
    "VETRO_ALL_STAGES__BACKOFF_MAX": "4",
}


@dataclass(frozen=True)
class Plan:
    """What to run and which faults to inject (counts over `window` seconds)."""

    jobs: int = 1000
    seed: int = 1
    workers: int = 3
    concurrency: int = 2
    window: float = 90.0
    pool_kills: int = 45
    worker_kills: int = 11
    sigterms: int = 1
    redis_restarts: int = 1
    outage: float = 20.0  # seconds the partner is down
    error_rate: float = 0.2  # share of partner calls answered 503 during the window
    drain_timeout: float = 600.0
    canvas_share: float = 0.5  # orders submitted as a hand-built Celery canvas rather than the declared pipeline
    engine: str = "vetro"  # or "raw": the same canvas on raw Celery (the anchor), no checks
    quiet: float = 120.0  # raw: stop waiting once no job has ended for this long after the faults stop
    redis_kill: bool = False  # restart Redis with SIGKILL (its append-only file fsynced on every write)
    broker_url: str | None = None  # another broker (a RabbitMQ virtual host); the ledger stays on the run's Redis
    amqp_queue_type: str = "classic"  # with a RabbitMQ broker: classic or quorum queues


@dataclass(frozen=True)
class Fault:
    at: float  # seconds after the start of the window
    kind: str  # pool-kill, worker-kill, sigterm, redis-restart, outage-start, outage-end
    worker: int = 0


def schedule(plan: Plan) -> list[Fault]:
    """The faults, spread over the window by a seeded random generator."""
    rng = random.Random(plan.seed)
    span = plan.window * 0.9

    def spread(kind: str, count: int) -> list[Fault]:
        return [Fault(rng.uniform(1, span), kind, rng.randrange(plan.workers)) for _ in range(count)]

    outage_start = rng.uniform(0.2, 0.5) * plan.window
    faults = [
        *spread("pool-kill", plan.pool_kills),
        *spread("worker-kill", plan.worker_kills),
        *spread("sigterm", plan.sigterms),
        *[Fault(rng.uniform(0.3, 0.7) * plan.window, "redis-restart") for _ in range(plan.redis_restarts)],
        *(
            [Fault(outage_start, "outage-start"), Fault(outage_start + plan.outage, "outage-end")]
            if plan.outage
            else []
        ),
    ]
    return sorted(faults, key=lambda fault: fault.at)


@dataclass
class Run:
    """The parts of one run and what happened to them."""

    plan: Plan
    redis: RedisServer
    partner: PartnerServer
    workers: list[WorkerProcess]
    started: float = field(default_factory=time.time)
    orders: dict[str, dict] = field(default_factory=dict)  # job id (raw: the canvas's result id) -> order
    kinds: dict[str, str] = field(default_factory=dict)  # job id -> declared, canvas or raw
    results: dict[str, Any] = field(default_factory=dict)  # raw: the canvas's AsyncResult
    log: list[dict[str, Any]] = field(default_factory=list)  # faults as injected
    load_at_start: tuple[float, float, float] = field(default_factory=os.getloadavg)

    def note(self, kind: str, **detail: Any) -> None:
        self.log.append({"at": round(time.time() - self.started, 2), "kind": kind, **detail})


def _environment(plan: Plan, redis_url: str, partner_url: str, database_url: str) -> dict[str, str]:
    amqp = {"VETRO_AMQP_QUEUE_TYPE": plan.amqp_queue_type} if plan.broker_url else {}
    return {
        "VETRO_BROKER_URL": plan.broker_url or redis_url,
        "VETRO_RESULT_STORE_URL": redis_url,
        **amqp,
        "ORDERS_PARTNER_URL": partner_url,
        "VETRO_DATABASE_URL": database_url,
        **CHAOS_SETTINGS,
    }


def _submit(run: Run) -> None:
    """Submit the orders in small batches spread over the window, retrying a batch Redis refused."""
    orders = sample_batch(run.plan.jobs, prefix=f"chaos{run.plan.seed}-{int(run.started)}")
    pause = run.plan.window * SUBMIT_SHARE / max(1, len(orders) / SUBMIT_BATCH)
    every = round(1 / run.plan.canvas_share) if run.plan.canvas_share else 0
    for first in range(0, len(orders), SUBMIT_BATCH):
        batch = orders[first : first + SUBMIT_BATCH]
        as_canvas = [order for n, order in enumerate(batch, first) if every and n % every == 0]
        declared = [order for order in batch if order not in as_canvas]
        if run.plan.engine == "raw":
            as_canvas, declared = batch, []
        while True:
            try:
                _publish(run, declared, as_canvas)
                break
            except Exception as error:  # Redis restarting: the same keys again, deduplicated
                run.note("submit-retried", error=type(error).__name__)
                time.sleep(0.5)
        time.sleep(pause)  # pacing the submissions over the window


def _publish(run: Run, declared: list[dict], as_canvas: list[dict]) -> None:
    from pipeline.jobs.ledger import job_of_task
    from pipeline.jobs.producer import submit_many
    from tasks.orders import order_canvas

    if declared:
        job_ids = submit_many([(order, order["order_id"]) for order in declared])
        for job_id, order in zip(job_ids, declared, strict=True):
            run.orders[job_id], run.kinds[job_id] = order, "declared"
    for order in as_canvas:
        if run.plan.engine == "raw":
            result = order_canvas(order, _raw().STAGES).apply_async()
            run.orders[result.id], run.kinds[result.id], run.results[result.id] = order, "raw", result
            continue
        result = order_canvas(order).apply_async(idempotency_key=order["order_id"])
        (_, job_id) = job_of_task(result.id)
        run.orders[job_id], run.kinds[job_id] = order, "canvas"


def _raw() -> Any:
    """The raw-Celery anchor's app (bench.raw_orders), from the repository's checkout."""
    return importlib.import_module("bench.raw_orders")


def _running(run: Run, preferred: int) -> WorkerProcess:
    """The scheduled worker if it is up, else the next one that is (waiting while all restart)."""
    deadline = time.time() + 30
    while True:
        for offset in range(len(run.workers)):
            worker = run.workers[(preferred + offset) % len(run.workers)]
            if worker.pool_pids():
                return worker
        if time.time() > deadline:
            return run.workers[preferred]
        time.sleep(0.2)  # polling for a worker that is up


def _inject(run: Run, fault: Fault, rng: random.Random) -> None:
    worker = _running(run, fault.worker)
    if fault.kind == "pool-kill":
        run.note(fault.kind, worker=worker.name, pid=worker.kill_pool_child(rng))
    elif fault.kind == "worker-kill":
        run.note(fault.kind, worker=worker.name, pid=worker.main_pid())
        worker.kill(signal.SIGKILL)  # its supervisor starts it again
    elif fault.kind == "sigterm":
        run.note(fault.kind, worker=worker.name)
        threading.Thread(target=_redeploy, args=(worker,), daemon=True).start()
    elif fault.kind == "redis-restart":
        run.note(fault.kind)
        run.redis.restart(kill=run.plan.redis_kill)
        run.note("redis-back")
    else:
        run.partner.state.faults.down = fault.kind == "outage-start"
        run.note(fault.kind)


def _redeploy(worker: WorkerProcess) -> None:
    """SIGTERM to the worker's supervisor (a deploy): a warm shutdown, then the worker starts again."""
    worker.stop(timeout=60)
    worker.start(wait=False)


def _inject_all(run: Run) -> None:
    rng = random.Random(run.plan.seed + 1)
    for fault in schedule(run.plan):
        delay = run.started + fault.at - time.time()
        if delay > 0:
            time.sleep(delay)  # the fault's moment in the schedule
        _inject(run, fault, rng)


def _drain(run: Run) -> list[dict[str, str] | None]:
    """Wait (up to the drain timeout) until no job is still queued; the jobs' records."""
    from pipeline.jobs.ledger import UNFINISHED, get_jobs

    if run.plan.engine == "raw":
        return _drain_raw(run)
    deadline = time.time() + run.plan.drain_timeout
    while True:
        records = get_jobs(list(run.orders))
        if all(record and record["status"] not in UNFINISHED for record in records) or time.time() > deadline:
            return records
        time.sleep(2)  # polling the ledger


def _drain_raw(run: Run) -> list[dict[str, str] | None]:
    """Raw Celery keeps no record of a job: its canvas's results say how it ended. A job whose chain link or
    chord join was lost never ends, so the wait stops once no job has ended for `quiet` seconds."""
    deadline, last_change, ended = time.time() + run.plan.drain_timeout, time.time(), -1
    while True:
        records = [{"status": _raw_status(run.results[ref])} for ref in run.orders]
        now_ended = sum(record["status"] != "queued" for record in records)
        if now_ended != ended:
            ended, last_change = now_ended, time.time()
        if now_ended == len(records) or time.time() > deadline or time.time() - last_change > run.plan.quiet:
            return records
        time.sleep(2)  # polling the result backend


def _raw_status(result: Any) -> str:
    """completed (the last step succeeded), failed (a step failed for good), or queued (neither, yet)."""
    steps = []
    pending = [result]
    while pending:
        node = pending.pop()
        steps.append(node)
        pending += [child for child in (getattr(node, "results", None) or [])]
        if getattr(node, "parent", None) is not None:
            pending.append(node.parent)
    states = {step.state for step in steps if not hasattr(step, "results")}
    if result.state == "SUCCESS":
        return "completed"
    return "failed" if "FAILURE" in states else "queued"


CRASHES = ("pool-kill", "worker-kill", "sigterm", "redis-restart")


def _faults_between(run: Run, first: float, last: float) -> list[str]:
    """The crashes between two deliveries of one key."""
    start, end = first - run.started, last - run.started
    return [
        " ".join(str(part) for part in (entry["kind"], entry.get("worker"), f"at {entry['at']}s") if part)
        for entry in run.log
        if start <= entry["at"] <= end and entry["kind"] in CRASHES
    ]


def _expected(order: dict) -> list[str]:
    """The destinations an order's effect must reach (its routing rules), none for an invalid order."""
    return destinations_for(str(order.get("order_type")), str(order.get("region")), orders_settings().routes)


def _by_kind(run: Run, status: dict[str, str], effects: dict, repeated: list[dict]) -> dict[str, dict[str, int]]:
    """Each half's own outcome (declared pipeline, canvas; or the raw anchor), counted at the partner."""
    twice = Counter(row["key"] for row in repeated)
    halves: dict[str, dict[str, int]] = {}
    for job_id, order in run.orders.items():
        half = halves.setdefault(
            run.kinds[job_id],
            {"submitted": 0, "completed": 0, "dead_lettered": 0, "lost": 0, "missing_effects": 0}
            | {"duplicate_deliveries": 0, "lost_chord_joins": 0, "lost_chain_links": 0},
        )
        half["submitted"] += 1
        ended = status[job_id]
        key = order["order_id"]
        reached = [destination for destination in _expected(order) if (key, destination) in effects]
        half["duplicate_deliveries"] += twice[key]
        if ended == "completed":
            half["completed"] += 1
            half["missing_effects"] += len(_expected(order)) - len(reached)
        elif ended == "failed":
            half["dead_lettered"] += 1
        else:
            half["lost"] += 1
            # Every part's effect is in and the job never ended: its chord's join was lost; else a link before.
            lost_join = bool(_expected(order)) and len(reached) == len(_expected(order))
            half["lost_chord_joins" if lost_join else "lost_chain_links"] += 1
    return halves


def report(run: Run, records: list[dict[str, str] | None], seconds: float) -> dict[str, Any]:
    """Check the outcome against the partner's own record; the JSON report."""
    status = {
        job_id: (record or {}).get("status", "missing") for job_id, record in zip(run.orders, records, strict=True)
    }
    statuses = Counter(status.values())
    lost = [
        {"job_id": job_id, **{k: (record or {}).get(k) for k in ("status", "last_step", "touched_at", "redrives")}}
        for job_id, record in zip(run.orders, records, strict=True)
        if status[job_id] not in ("completed", "failed")
    ]
    failed = [job_id for job_id in run.orders if status[job_id] == "failed"]
    rows = _dead_letter_rows(run)
    without_reason = [job_id for job_id in failed if not (job_id in rows and rows[job_id].message)]
    reasons = Counter(
        f"{row.failure_class} at {row.scope}: {row.exception_type.rsplit('.', 1)[-1]}" for row in rows.values()
    )

    redriven = Counter(
        step
        for record in records
        for entry in json.loads((record or {}).get("redrive_log") or "[]")
        for step in entry["steps"]
    )
    partner = run.partner.state.summary()
    effects = {(row["key"], row["destination"]): row for row in partner["effects"]}
    expected = [
        (order["order_id"], destination)
        for job_id, order in run.orders.items()
        if status[job_id] == "completed"
        for destination in _expected(order)
    ]
    missing = [f"{key} at {destination}" for key, destination in expected if (key, destination) not in effects]
    repeated = []
    for row in partner["effects"]:
        if row["deliveries"] > 1:
            crashes = _faults_between(run, row["delivered_at"][0], row["delivered_at"][-1])
            repeated.append(
                {
                    "key": row["key"],
                    "destination": row["destination"],
                    "deliveries": row["deliveries"],
                    "seconds_between": round(row["delivered_at"][-1] - row["delivered_at"][0], 1),
                    # The first crash after the first delivery: the process that made the call died before
                    # its guard recorded the result, and the redelivered step called again.
                    "likely_cause": crashes[0] if crashes else "none (a timeout on an answer that was on its way)",
                    "crashes_between": len(crashes),
                }
            )
    dead_workers = [worker.name for worker in run.workers if not worker.alive() or worker.main_pid() is None]
    logs = [worker.log() for worker in run.workers]
    kinds = Counter(entry["kind"] for entry in run.log)
    restarts = sum(log.count("supervise: ") for log in logs)
    unrecoverable = Counter(
        line.split("Unrecoverable error: ", 1)[1][:200]
        for log in logs
        for line in log.splitlines()
        if "Unrecoverable error: " in line
    )
    checks = {
        "no_job_lost": not lost,
        "every_dead_letter_has_a_reason": not without_reason,
        "no_effect_missing": not missing,
        "no_duplicate_effect": partner["duplicate_effects"] == 0,
        "no_worker_left_dead": not dead_workers,
    }
    if run.plan.engine == "raw":
        checks = {}  # the anchor: what raw Celery does under the same faults, not a test to pass
    return {
        "plan": asdict(run.plan),
        "seconds": round(seconds, 1),
        "load_average_at_start": run.load_at_start,
        "load_average_at_end": os.getloadavg(),
        "faults": {kind: kinds[kind] for kind in CRASHES}
        | {"partner_outage_s": run.plan.outage, "partner_error_rate": run.plan.error_rate},
        "jobs": {
            "submitted": len(run.orders),
            "completed": statuses["completed"],
            "dead_lettered": statuses["failed"],
            "lost": len(lost),
            "dead_letter_reasons": dict(reasons.most_common()),
            "redriven_by_the_reconciler": sum(int((record or {}).get("redrives") or 0) > 0 for record in records),
            "redriven_steps": dict(redriven.most_common()),
        },
        "by_kind": _by_kind(run, status, effects, repeated),
        "effects": {
            "expected": len(expected),
            "missing": len(missing),
            "duplicate_effects": partner["duplicate_effects"],
            "duplicate_deliveries": len(repeated),
            "duplicate_delivery_details": repeated,
        },
        "workers": {
            "restarted_by_their_supervisor": restarts,
            "exits_not_caused_by_a_worker_kill": restarts - kinds["worker-kill"],
            "unrecoverable_errors": dict(unrecoverable),
            "left_dead": dead_workers,
        },
        "lost_jobs": lost[:50],
        "missing_effects": missing[:50],
        "jobs_without_reason": without_reason[:50],
        "fault_log": run.log,
        "checks": checks,
        "passed": all(checks.values()),
    }


def _dead_letter_rows(run: Run) -> dict[str, Any]:
    """The dead-letter store's rows of this run's jobs (raw Celery has none)."""
    if run.plan.engine == "raw":
        return {}
    from dlq import store

    store.flush_spool()
    return {row.job_id: row for row in store.rows(store.RowFilter()) if row.job_id in run.orders}


def run_chaos(plan: Plan) -> dict[str, Any]:
    """Run the plan and return the report (every process started here is stopped here)."""
    with ExitStack() as stack:
        redis = stack.enter_context(RedisServer(appendonly=True, fsync_always=plan.redis_kill))
        database = f"sqlite:///{tempfile.mkdtemp(prefix='vetro-chaos-')}/dlq.db"
        partner = PartnerServer("127.0.0.1", 0, Faults(error_rate=plan.error_rate))
        partner.start_in_thread()
        stack.callback(partner.server_close)
        stack.callback(partner.shutdown)
        env = _environment(plan, redis.url, partner.url, database)
        os.environ.update(env)
        reset_settings()
        reconfigure()
        from dlq.db import upgrade

        upgrade()
        app = "bench.raw_orders" if plan.engine == "raw" else "pipeline"
        workers = [
            WorkerProcess(env, plan.concurrency, name=f"chaos{n}", supervised=True, app=app)
            for n in range(plan.workers)
        ]
        for worker in workers:
            stack.callback(worker.stop)
            worker.start()
        if plan.engine != "raw":  # raw Celery has no reconciler to schedule
            beat = BeatProcess(env)
            stack.callback(beat.stop)
            beat.start()

        run = Run(plan, redis, partner, workers)
        submitter = threading.Thread(target=_submit, args=(run,), daemon=True)
        submitter.start()
        _inject_all(run)
        submitter.join()
        remaining = run.started + plan.window - time.time()
        if remaining > 0:
            time.sleep(remaining)  # the end of the fault window
        partner.state.faults = Faults()
        run.note("faults-stopped")
        records = _drain(run)
        return report(run, records, time.time() - run.started)


def main(plan: Plan, output: str | None = None) -> int:
    result = run_chaos(plan)
    text = json.dumps(result, indent=2, default=str)
    if output:
        with open(output, "w", encoding="utf-8") as stream:
            stream.write(text + "\n")
    print(text)
    return 0 if result["passed"] else 1
