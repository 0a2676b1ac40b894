"""The `vetro` command: submit jobs, run the demo and the partner stub, inspect jobs."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import typer
from kombu.exceptions import OperationalError
from redis import RedisError
from rich.console import Console
from rich.progress import Progress

from dlq.cli import db_cli, dlq_cli
from pipeline.console import fail
from pipeline.console import messages as console
from settings import ConfigError

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


def _read_jsonl(path: str) -> list[dict[str, Any]]:
    """Every payload of a .jsonl file, each checked; the first bad line stops everything."""
    from pipeline.producer import InvalidJobError, check_payload

    if path == "-":
        lines = sys.stdin.read().splitlines()
    elif Path(path).is_file():
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    else:
        raise fail(f"{path}: no such file")
    payloads = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            payloads.append(check_payload(json.loads(line), position=f"{path}:{number}").payload)
        except json.JSONDecodeError as error:
            raise fail(f"{path}:{number}: not valid JSON: {error.msg}") from None
        except InvalidJobError as error:
            raise fail(str(error)) from None
    return payloads


@cli.command()
def submit(
    file: str = typer.Argument(None, help="A .jsonl file of payloads, one JSON object a line ('-' for stdin)."),
    payload_json: str = typer.Option(None, "--json", help="One payload as a JSON object."),
    key: str = typer.Option(None, "--key", help="Idempotency key (default: derived from the payload)."),
    pipeline: str = typer.Option("orders", help="Pipeline to run."),
) -> None:
    """Enqueue jobs. Nothing is published unless every payload is valid."""
    from pipeline.producer import InvalidJobError, submit_many
    from pipeline.producer import submit as submit_one

    if (file is None) == (payload_json is None):
        raise fail("give either --json '{...}' or a FILE.jsonl")
    if payload_json is not None:
        try:
            payloads = [json.loads(payload_json)]
        except json.JSONDecodeError as error:
            raise fail(f"--json: not valid JSON: {error.msg}") from None
    else:
        if key:
            raise fail("--key applies to --json; a file's payloads derive their own keys")
        payloads = _read_jsonl(file)
    try:
        if payload_json is not None:
            job_ids = [submit_one(payloads[0], key, pipeline=pipeline)]
        else:
            with Progress(console=console, transient=True) as progress:
                bar = progress.add_task("submitting", total=len(payloads))
                job_ids = submit_many(payloads, pipeline=pipeline, on_progress=lambda n: progress.advance(bar, n))
    except (InvalidJobError, ValueError) as error:
        raise fail(str(error)) from None
    except (RedisError, OperationalError, OSError) as error:
        raise fail(f"cannot reach the broker or result store: {error}", code=1) from None
    for job_id in job_ids:
        print(job_id)
    console.print(f"submitted {len(job_ids)} job(s) to pipeline {pipeline!r}", highlight=False)


@job_cli.command("show")
def job_show(job_id: str) -> None:
    """Print a job's record (status, where it failed and why, retries) and each step's guard."""
    from pipeline.jobs import describe_job

    record = describe_job(job_id)
    if record is None:
        raise fail(f"no job {job_id!r}")
    print(json.dumps(record, indent=2, sort_keys=True))


def _known_dependency(name: str) -> str:
    from settings import get_settings

    known = get_settings().dependencies
    if name not in known:
        raise fail(f"no breaker {name!r}; known: {', '.join(known)}")
    return name


@breakers_cli.callback(invoke_without_command=True)
def breakers_show(ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Each breaker: state, failures counted, when it opened, seconds until a trial call."""
    if ctx.invoked_subcommand:
        return
    from dataclasses import asdict

    from rich.table import Table

    from pipeline.breakers import status
    from settings import get_settings

    statuses = [status(name) for name in get_settings().dependencies]
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
    from pipeline.breakers import force

    force(_known_dependency(name), "closed")
    console.print(f"breaker {name} closed")


@breakers_cli.command("open")
def breakers_open(name: str) -> None:
    """Open a breaker: calls wait (without failing jobs) until its reset_timeout passes."""
    from pipeline.breakers import force

    force(_known_dependency(name), "open")
    console.print(f"breaker {name} opened")


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
    keep_running: bool = typer.Option(False, help="Keep everything running after the summary, for Flower."),
) -> None:
    """Run the whole pipeline on this machine and print what happened."""
    from tasks.demo import run_demo

    raise typer.Exit(run_demo(jobs=jobs, error_rate=error_rate, keep_running=keep_running))


def main() -> None:
    try:
        cli()
    except ConfigError as error:
        raise SystemExit(fail(f"bad configuration: {error}").exit_code) from None


if __name__ == "__main__":
    main()
