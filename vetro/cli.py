"""The `vetro` command: submit jobs, run the demo and the partner stub, inspect jobs."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import typer
from kombu.exceptions import OperationalError
from redis import RedisError
from rich.console import Console
from rich.progress import Progress

from pipeline.telemetry import logs
from settings import ConfigError
from vetro.console import fail, first_line, tables
from vetro.console import messages as console
from vetro.console_users_cli import audit_cli, user_cli
from vetro.dead_letters_cli import cli_actor, db_cli, dlq_cli, parse_duration
from vetro.quarantine_cli import quarantine_cli
from vetro.queues_cli import queues_cli

cli = typer.Typer(
    help="vetro: multi-stage pipelines on Celery that lose nothing and repeat nothing.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
job_cli = typer.Typer(help="Look at one job.", no_args_is_help=True)
cli.add_typer(job_cli, name="job")
breakers_cli = typer.Typer(help="Show the circuit breakers, or force one open or closed.")
cli.add_typer(breakers_cli, name="breakers")
cli.add_typer(dlq_cli, name="dlq")
cli.add_typer(db_cli, name="db")
cli.add_typer(quarantine_cli, name="quarantine")
cli.add_typer(queues_cli, name="queues")
cli.add_typer(user_cli, name="user")
cli.add_typer(audit_cli, name="audit")


def _read_jsonl(path: str) -> list[dict[str, Any]]:
    """Every payload of a .jsonl file (or stdin), each checked; the first bad line stops everything."""
    from pipeline.jobs.producer import InvalidJobError, parse_json_lines

    if path == "-":
        data = sys.stdin.buffer.read()
    elif Path(path).is_file():
        data = Path(path).read_bytes()
    else:
        raise fail(f"{path}: no such file")
    try:
        return parse_json_lines(data, path)
    except InvalidJobError as error:
        raise fail(str(error)) from None


@cli.command()
def submit(
    file: str = typer.Argument(None, help="A .jsonl file of payloads, one JSON object a line ('-' for stdin)."),
    payload_json: str = typer.Option(None, "--json", help="One payload as a JSON object."),
    key: str = typer.Option(None, "--key", help="Idempotency key (default: derived from the payload)."),
    pipeline: str = typer.Option("orders", help="Pipeline to run."),
) -> None:
    """Enqueue jobs. Nothing is published unless every payload is valid."""
    from pipeline.jobs.producer import InvalidJobError, check_payload, parse_payload, submit_many

    if (file is None) == (payload_json is None):
        raise fail("give either --json '{...}' or a FILE.jsonl")
    if payload_json is not None:
        try:
            payloads = [parse_payload(payload_json, "--json")]
        except InvalidJobError as error:
            raise fail(str(error)) from None
    else:
        if key:
            raise fail("--key applies to --json; a file's payloads derive their own keys")
        payloads = _read_jsonl(file)
    new = 0

    def count_new(handled: int, fresh: int) -> None:
        nonlocal new
        new += fresh
        if progress is not None:
            progress.advance(bar, handled)

    try:
        if payload_json is not None:
            progress = None
            check_payload(payloads[0], key)  # its error names the payload, not "item 0"
            job_ids = submit_many([(payloads[0], key)], pipeline=pipeline, on_progress=count_new)
        else:
            with Progress(console=console, transient=True) as progress:
                bar = progress.add_task("submitting", total=len(payloads))
                job_ids = submit_many(payloads, pipeline=pipeline, on_progress=count_new)
    except (InvalidJobError, ValueError) as error:
        raise fail(str(error)) from None
    except (RedisError, OperationalError, OSError) as error:
        raise fail(f"cannot reach the broker or result store: {error}", code=1) from None
    for job_id in job_ids:
        print(job_id)
    known = len(job_ids) - new
    again = f"; {known} submitted before under the same key (not run again: see vetro job show)" if known else ""
    console.print(f"submitted {new} new job(s) to pipeline {pipeline!r}{again}", highlight=False)


@job_cli.command("show")
def job_show(
    job_id: str, as_json: bool = typer.Option(False, "--json", help="Print JSON (times in ISO 8601 UTC).")
) -> None:
    """A job's timeline: each step with when it began and ended, attempts, waits and worker; re-drives, replays."""
    from pipeline.jobs.timeline import describe_job
    from vetro.timeline import for_scripts, render

    described = describe_job(job_id)
    if described is None:
        raise fail(f"no job {job_id!r}")
    if as_json:
        print(json.dumps(for_scripts(described), indent=2, default=str))
    else:
        render(described, tables())


@job_cli.command("list")
def job_list(
    pipeline: list[str] = typer.Option(None, "--pipeline", help="Only this pipeline (repeatable; default: all)."),
    status: str = typer.Option(None, help="Only jobs with this status (queued, completed, failed, ...)."),
    since: str = typer.Option("1h", help="Submitted within this long: 90s, 15m, 2h, 7d, 2w."),
    correlation_id: str = typer.Option(None, "--correlation-id", help="Only jobs with this correlation id."),
    limit: int = typer.Option(50, min=1, max=10_000, help="At most this many, newest first."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Recent jobs, newest first, from the ledger's job index (no scan of the keyspace)."""
    import time

    from rich.table import Table

    from pipeline.jobs.ledger import recent_jobs
    from pipeline.jobs.pipelines import namespaces
    from vetro.timeline import iso

    known = namespaces()
    unknown = sorted(set(pipeline or []) - set(known))
    if unknown:
        raise fail(f"no pipeline {unknown[0]!r}; known: {', '.join(known)}")
    jobs = recent_jobs(
        pipeline or known, time.time() - parse_duration(since).total_seconds(), status, correlation_id, limit
    )
    for job in jobs:
        for name in ("submitted_at", "finished_at"):
            if name in job:
                job[name] = iso(float(job[name]))
    if as_json:
        print(json.dumps(jobs, indent=2))
        return
    table = Table()
    for column in ("job", "pipeline", "status", "submitted", "finished", "failed at", "correlation id"):
        table.add_column(column, no_wrap=True)
    for job in jobs:
        failed_at = job.get("failed_stage", "-") if job.get("status") != "completed" else "-"
        table.add_row(
            job["job_id"],
            job.get("pipeline", "-"),
            job.get("status", "-"),
            job.get("submitted_at") or "-",
            job.get("finished_at") or "-",
            failed_at,
            job.get("correlation_id", "-"),
        )
    tables().print(table)
    console.print(f"{len(jobs)} job(s) submitted in the last {since}", highlight=False)


@cli.command()
def serve(
    host: str = typer.Option(None, help="Interface to listen on (default: VETRO_SERVE_HOST, 127.0.0.1)."),
    port: int = typer.Option(None, min=1, max=65535, help="Port (default: VETRO_SERVE_PORT, 9808)."),
) -> None:
    """Serve the operator console, its API, /metrics (Prometheus) and /health/live, /health/ready."""
    from vetro.serve import access_for, listening, serve
    from vetro.web.security import ConsoleError

    try:
        sock = listening(host, port)
    except OSError as error:
        raise fail(
            f"cannot listen on {host or 'VETRO_SERVE_HOST'}:{port or 'VETRO_SERVE_PORT'}: {error.strerror}", code=1
        ) from None
    try:
        access = access_for(sock)
    except ConsoleError as error:
        sock.close()
        raise fail(error.message) from None
    bound_host, bound_port = sock.getsockname()[:2]
    who = "everyone on this machine is the admin 'local'" if access.local else f"users from {access.users_file}"
    console.print(
        f"vetro serve on http://{bound_host}:{bound_port}: the console ({who}), /api, /metrics, /health/ready",
        highlight=False,
    )
    serve(sock, access)


@cli.command()
def health(
    as_json: bool = typer.Option(False, "--json", help="Print the whole report as JSON."),
    this_host: bool = typer.Option(
        False, "--this-host", help="Only: is a worker on this host alive (its heartbeat recent)? A liveness probe."
    ),
) -> None:
    """Is the service ready? Exit 0 when ready (perhaps degraded), 1 when not; says why."""
    if this_host:
        _this_host_alive()
    from vetro.ops import report

    current = report()
    if as_json:
        print(json.dumps(current.as_dict(), indent=2, default=str))
    else:
        _print_health(current)
    raise typer.Exit(0 if current.ready else 1)


def _this_host_alive() -> None:
    """A worker pod's liveness: one Redis read, and nothing of the rest of the fleet (a fleet-wide problem
    restarting every worker would make it worse); never `celery inspect ping`, which asks every worker."""
    import socket

    from pipeline.telemetry import heartbeat

    host = socket.gethostname()
    alive = heartbeat.up_on_host(host)
    if not alive:
        raise fail(f"no worker on {host} has sent a heartbeat lately", 1)
    console.print(f"alive: {', '.join(worker.name for worker in alive)}", highlight=False)
    raise typer.Exit(0)


def _print_health(current: Any) -> None:
    from rich.table import Table

    state = current.as_dict()
    colour = {"ok": "green", "degraded": "yellow", "unready": "red"}[state["status"]]
    console.print(f"[{colour}]{state['status']}[/{colour}]", highlight=False)
    for problem in state["problems"]:
        console.print(f"  not ready: {problem}", highlight=False)
    for warning in state["warnings"]:
        console.print(f"  degraded: {warning}", highlight=False)
    table = Table()
    for column in ("queue", "waiting", "oldest", "last taken", "workers", "stalled"):
        table.add_column(column, no_wrap=True)
    for queue in current.core.queues:
        oldest = f"{queue.oldest_age:.0f}s" if queue.oldest_age is not None else "-"
        taken = f"{queue.consumed_ago:.0f}s ago" if queue.consumed_ago is not None else "never"
        table.add_row(
            queue.name, str(queue.length), oldest, taken, str(queue.workers), "yes" if queue.stalled else "no"
        )
    tables().print(table)
    slow = Table()
    for column in ("dependency", "calls", "p50", "p95", "slow calls"):
        slow.add_column(column, no_wrap=True)
    for latency in current.core.dependencies:
        p50 = f"{latency.p50 * 1000:.0f} ms" if latency.p50 is not None else "-"
        p95 = f"{latency.p95 * 1000:.0f} ms" if latency.p95 is not None else "-"
        slow.add_row(latency.name, str(latency.calls), p50, p95, str(latency.slow_calls))
    if current.core.dependencies:
        tables().print(slow)


@cli.command()
def keygen() -> None:
    """Print a new encryption key for VETRO_ENCRYPTION_KEYS (put it first to rotate; keep the old ones after it)."""
    from cryptography.fernet import Fernet

    print(Fernet.generate_key().decode())


@cli.command()
def reconcile(
    dry_run: bool = typer.Option(False, help="Say what each due job needs, change nothing."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Find jobs that stopped moving and drive them on (what celery beat runs every interval)."""
    from collections import Counter
    from dataclasses import asdict

    import dlq.tasks  # noqa: F401 - registers the dead-letter store, for jobs dead-lettered as stalled
    from pipeline.jobs.reconciler import sweep

    findings = sweep(dry_run=dry_run)
    if findings is None:
        raise fail("another reconciler is sweeping right now; try again in a moment", code=1)
    if as_json:
        print(json.dumps([asdict(finding) for finding in findings], indent=2))
        return
    from rich.table import Table

    table = Table()
    for column in ("job", "verdict", "steps", "reason"):
        table.add_column(column, no_wrap=column != "reason", overflow="fold")
    for finding in findings:
        table.add_row(finding.job_id, finding.verdict, ", ".join(finding.steps), finding.reason)
    if findings:
        Console(soft_wrap=True).print(table)
    counts = Counter(finding.verdict for finding in findings)
    verb = "would be" if dry_run else "were"
    summary = ", ".join(f"{count} {verdict}" for verdict, count in sorted(counts.items())) or "nothing to do"
    console.print(f"{len(findings)} job(s) due ({verb}): {summary}", highlight=False)


@breakers_cli.callback(invoke_without_command=True)
def breakers_show(ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Each breaker: state, failures counted, when it opened, seconds until a trial call."""
    if ctx.invoked_subcommand:
        return
    from dataclasses import asdict

    from rich.table import Table

    from pipeline.dependencies.breakers import status
    from pipeline.jobs.pipelines import dependencies

    statuses = [status(name) for name in dependencies()]
    if as_json:
        print(json.dumps([asdict(s) for s in statuses], indent=2))
        return
    table = Table()
    for column in ("breaker", "state", "failures", "opened at", "half-open in"):
        table.add_column(column, no_wrap=True)
    for s in statuses:
        opened = datetime.fromtimestamp(s.opened_at, UTC).strftime("%H:%M:%S UTC") if s.opened_at else "-"
        half_open = f"{s.seconds_to_half_open:.0f}s" if s.seconds_to_half_open is not None else "-"
        table.add_row(s.name, s.state, f"{s.failures}/{s.fail_max}", opened, half_open)
    Console().print(table)


@breakers_cli.command("reset")
def breakers_reset(name: str) -> None:
    """Close a breaker and forget its failures: calls go through again at once."""
    _force_breaker(name, "closed")


@breakers_cli.command("open")
def breakers_open(name: str) -> None:
    """Open a breaker: calls wait (without failing jobs) until its reset_timeout passes."""
    _force_breaker(name, "open")


def _force_breaker(name: str, state: str) -> None:
    from vetro.admin import AdminError, force_breaker

    try:
        audited = force_breaker(name, state, cli_actor())
    except AdminError as error:
        raise fail(str(error)) from None
    console.print(f"breaker {name} {'closed' if state == 'closed' else 'opened'}", highlight=False)
    if not audited:
        console.print("warning: not in the audit log (the dead-letter database did not answer)", highlight=False)


@cli.command("partner-stub")
def partner_stub(
    host: str = typer.Option("127.0.0.1", help="Interface to listen on."),
    port: int = typer.Option(8765, help="Port to listen on."),
    error_rate: float = typer.Option(0.0, min=0, max=1, help="Share of calls answered with --error-status."),
    error_status: int = typer.Option(503, help="Status of injected errors."),
    retry_after: float = typer.Option(None, help="Retry-After seconds sent with injected errors."),
    latency_ms: int = typer.Option(0, min=0, help="Added latency per call."),
    down: bool = typer.Option(False, help="Drop every connection (the partner is down)."),
) -> None:
    """Run the partner stub: customer look-ups and webhooks, with fault injection (POST /faults)."""
    from tasks.partner_stub import Faults, PartnerServer

    faults = Faults(
        error_rate=error_rate, error_status=error_status, retry_after=retry_after, latency_ms=latency_ms, down=down
    )
    server = PartnerServer(host, port, faults)
    console.print(f"partner stub on {server.url} (GET /effects, POST /faults); Ctrl+C stops it", highlight=False)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


@cli.command()
def demo(
    jobs: int = typer.Option(300, min=1, help="How many sample orders to submit."),
    error_rate: float = typer.Option(0.15, min=0, max=0.9, help="Share of partner calls that fail transiently."),
    keep_running: bool = typer.Option(False, help="Keep everything running after the summary, with the console."),
) -> None:
    """Run the whole pipeline on this machine and print what happened."""
    from vetro.demo import run_demo

    raise typer.Exit(run_demo(jobs=jobs, error_rate=error_rate, keep_running=keep_running))


@cli.command()
def chaos(
    jobs: int = typer.Option(1000, min=1, help="Orders to submit."),
    seed: int = typer.Option(1, help="Seed of the fault schedule and the orders."),
    workers: int = typer.Option(3, min=1, help="Workers, each under vetro.supervise."),
    concurrency: int = typer.Option(2, min=1, help="Pool processes per worker."),
    window: float = typer.Option(90, min=10, help="Seconds of submitting and injecting faults."),
    pool_kills: int = typer.Option(45, min=0, help="SIGKILLs of pool processes."),
    worker_kills: int = typer.Option(11, min=0, help="SIGKILLs of whole workers (started again)."),
    sigterms: int = typer.Option(1, min=0, help="SIGTERMs of workers (a deploy: started again)."),
    redis_restarts: int = typer.Option(1, min=0, help="Restarts of Redis (append-only file on)."),
    outage: float = typer.Option(20, min=0, help="Seconds the partner is down."),
    error_rate: float = typer.Option(0.2, min=0, max=0.9, help="Share of partner calls answered 503."),
    drain_timeout: float = typer.Option(600, min=10, help="Seconds to wait for every job to end."),
    canvas_share: float = typer.Option(0.5, min=0, max=1, help="Share of orders sent as a Celery canvas."),
    engine: str = typer.Option("vetro", help="vetro, or raw: the same canvas on raw Celery (the anchor)."),
    quiet: float = typer.Option(120, min=10, help="raw: stop once no job has ended for this long."),
    redis_kill: bool = typer.Option(False, help="Restart Redis with SIGKILL (appendfsync always) instead of SIGTERM."),
    broker_url: str = typer.Option(None, help="Another broker: an empty RabbitMQ virtual host (amqp://...)."),
    amqp_queue_type: str = typer.Option("classic", help="With --broker-url: classic or quorum queues."),
    output: str = typer.Option(None, help="Also write the JSON report to this file."),
) -> None:
    """Run the whole pipeline on this machine under seeded faults and check nothing was lost or repeated."""
    from dataclasses import fields

    from vetro.chaos import Plan
    from vetro.chaos import main as run_chaos

    options = locals()
    if engine not in ("vetro", "raw"):
        raise fail(f"--engine {engine!r}: vetro or raw")
    if broker_url and (engine != "vetro" or not broker_url.startswith(("amqp://", "amqps://"))):
        raise fail("--broker-url: an amqp:// URL, with --engine vetro (the raw anchor runs on Redis)")
    if amqp_queue_type not in ("classic", "quorum"):
        raise fail(f"--amqp-queue-type {amqp_queue_type!r}: classic or quorum")
    plan = Plan(**{field.name: options[field.name] for field in fields(Plan)})
    raise typer.Exit(run_chaos(plan, output))


def main() -> None:
    from sqlalchemy.exc import SQLAlchemyError

    try:
        logs.configure(logging.WARNING)  # what vetro logs while a command runs: warnings, in VETRO_LOG_FORMAT
        code = cli(prog_name="vetro", standalone_mode=False)  # errors come here, to be printed in one line
    except USAGE_ERROR as error:
        raise SystemExit(_usage_error(error)) from None
    except typer.Abort:
        raise SystemExit(fail("aborted", 1).exit_code) from None
    except ConfigError as error:
        raise SystemExit(fail(f"bad configuration: {error}").exit_code) from None
    except (RedisError, OperationalError, SQLAlchemyError) as error:
        # A server that does not answer is the operator's to fix: say which, in one line.
        first = first_line(error)[:200]
        raise SystemExit(
            fail(f"cannot reach a server vetro needs ({type(error).__name__}): {first}").exit_code
        ) from None
    raise SystemExit(code if isinstance(code, int) else 0)


# typer vendors click (as typer._click since 0.2x) and exports only BadParameter of its exceptions.
USAGE_ERROR = next(base for base in typer.BadParameter.__mro__ if base.__name__ == "ClickException")


def _usage_error(error: Exception) -> int:
    """A mistyped command in one line, pointing at its help (no arguments at all: the help itself)."""
    context = getattr(error, "ctx", None)
    if type(error).__name__ == "NoArgsIsHelpError" and context is not None:
        console.print(context.get_help(), highlight=False, markup=False)
        return 2
    where = f"; see '{context.command_path} --help'" if context is not None else ""
    return fail(f"{error.format_message().rstrip('.')}{where}", getattr(error, "exit_code", 2)).exit_code


if __name__ == "__main__":
    main()
