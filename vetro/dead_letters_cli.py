"""`vetro dlq` and `vetro db`: the operator's commands for dead letters, one to one with dlq.store.

Every bulk command acts on exactly the rows its filter selects, says how many first, and
asks before acting (--yes skips the question); --dry-run shows the rows and stops.
"""

from __future__ import annotations

import functools
import inspect
import json
import os
import re
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from dlq import actions, audit, filters, store
from dlq.export import audit_export, jsonl
from dlq.models import DeadLetter
from dlq.selection import Selection, resolve, rows_of
from vetro.console import fail
from vetro.console import messages as err

dlq_cli = typer.Typer(help="See, group, replay and discard dead letters.", no_args_is_help=True)
db_cli = typer.Typer(help="The dead-letter database's schema.", no_args_is_help=True)
out = Console(soft_wrap=True)


def database_ready() -> None:
    """Every dlq command needs a reachable, migrated database: say so in one line if not (its help needs none)."""
    from sqlalchemy.exc import SQLAlchemyError

    from dlq.db import NotMigratedError, require_migrated

    try:
        require_migrated()
    except NotMigratedError as error:
        raise fail(str(error)) from None
    except SQLAlchemyError as error:
        detail = str(error.orig or error).splitlines()[0]
        raise fail(f"cannot reach the dead-letter database: {type(error).__name__}: {detail}") from None


def _possible_id(row_id: int) -> bool:
    """An id a row could have: asking the database for another one overflows its integer column."""
    return 0 < row_id <= store.MAX_ROW_ID


def parse_duration(text: str) -> timedelta:
    try:
        return filters.duration(text)
    except filters.FilterError as error:
        raise fail(str(error)) from None


_FILTER_OPTIONS = {
    "stage": (str | None, typer.Option(None, help="Stage, or stage.destination (e.g. operate.billing).")),
    "status": (str | None, typer.Option(None, help="failed, replaying, resolved, discarded or quarantined.")),
    "failure_class": (str | None, typer.Option(None, "--class", help="transient, permanent, business, technical.")),
    "error": (str | None, typer.Option(None, help="Text in the exception type or message.")),
    "fingerprint": (str | None, typer.Option(None, help="Rows with this cause (see `patterns`).")),
    "job": (str | None, typer.Option(None, help="Rows of this job id.")),
    "key": (str | None, typer.Option(None, help="Rows of the job with this idempotency key.")),
    "correlation": (str | None, typer.Option(None, help="Rows with this correlation id.")),
    "search": (str | None, typer.Option(None, help="Text in the input (sealed inputs: in job id, key, error).")),
    "since": (str | None, typer.Option(None, help="Last failed at or after: ISO time or 2h / 7d ago.")),
    "until": (str | None, typer.Option(None, help="Last failed before: ISO time or 2h / 7d ago.")),
}


def with_filter(command: Callable[..., Any]) -> Callable[..., Any]:
    """Give a command the shared filter options; it receives them as one store.RowFilter named `rows`."""
    signature = inspect.signature(command)
    own = [parameter for name, parameter in signature.parameters.items() if name != "rows"]
    added = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=annotation)
        for name, (annotation, option) in _FILTER_OPTIONS.items()
    ]

    @functools.wraps(command)
    def wrapper(**kwargs: Any) -> Any:
        values = {name: kwargs.pop(name) for name in _FILTER_OPTIONS}
        try:
            rows = filters.row_filter(ids=list(kwargs.pop("ids", None) or []), **values)
        except filters.FilterError as error:
            raise fail(f"--{str(error).replace('_', '-')}") from None
        if "ids" in signature.parameters:
            kwargs["ids"] = rows.ids
        return command(rows=rows, **kwargs)

    wrapper.__signature__ = signature.replace(parameters=[*own, *added])
    wrapper.__annotations__ = {**{p.name: p.annotation for p in own}, **{n: a for n, (a, _) in _FILTER_OPTIONS.items()}}
    return wrapper


def _check_ids(ids: list[int]) -> None:
    for row_id in ids:
        if not _possible_id(row_id):
            raise fail(f"no dead letter with id {row_id}")
    found = {row.id for row in store.rows(store.RowFilter(ids=ids))}
    missing = [row_id for row_id in ids if row_id not in found]
    if missing:
        raise fail(f"no dead letter with id {', '.join(map(str, missing))}")


def _selection(rows: store.RowFilter, everything: bool, action: str) -> Selection:
    """The rows a bulk command acts on: ids, or a filter, or --all; never an accidental 'everything'."""
    if rows.ids:
        _check_ids(rows.ids)
    elif rows.is_empty() and not everything:
        raise fail(f"say which rows to {action}: ids, a filter (see --help), or --all")
    return resolve(action, rows, everything)


def _nothing_selected(verb: str) -> None:
    """An empty selection acts on nothing, and says so."""
    err.print(f"no dead letter matches: nothing to {verb}", highlight=False)


def _table(rows: list[DeadLetter]) -> Table:
    table = Table()
    for column in ("id", "job", "step", "class", "status", "replays", "last failed (UTC)", "error"):
        table.add_column(column, no_wrap=column != "error", overflow="fold")
    for row in rows:
        table.add_row(
            str(row.id),
            row.job_id[:8],
            row.scope,
            row.failure_class,
            row.status,
            str(row.replay_count),
            row.last_failed_at.strftime("%Y-%m-%d %H:%M:%S"),
            f"{row.exception_type.rsplit('.', 1)[-1]}: {row.message[:120]}",
        )
    return table


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, default=str))


@dlq_cli.command("list")
@with_filter
def list_rows(
    rows: store.RowFilter,
    page: int = typer.Option(1, min=1, max=1_000_000),
    page_size: int = typer.Option(50, min=1, max=10_000),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Dead letters, newest failure first, a page at a time."""
    total = store.count(rows)
    selected = store.rows(rows, limit=page_size, offset=(page - 1) * page_size)
    if as_json:
        return _print_json([row.as_dict() for row in selected])
    out.print(_table(selected))
    first = (page - 1) * page_size
    more = f"; next: --page {page + 1}" if first + len(selected) < total else ""
    shown = f"rows {first + 1}-{first + len(selected)}" if selected else "no rows"
    out.print(f"{shown} of {total}{more}", highlight=False)
    return None


@dlq_cli.command()
def show(row_id: int = typer.Argument(..., metavar="ID"), as_json: bool = typer.Option(False, "--json")) -> None:
    """Everything about one dead letter, its input and traceback included."""
    row = store.get_row(row_id) if _possible_id(row_id) else None
    if row is None:
        raise fail(f"no dead letter with id {row_id}")
    record = row.as_dict()
    if as_json:
        return _print_json(record)
    traceback, step_input = record.pop("traceback"), record.pop("input")
    for name, value in record.items():
        out.print(f"[bold]{name}[/bold]: {value}", highlight=False)
    out.print("[bold]input[/bold]:", highlight=False)
    print(json.dumps(step_input, indent=2))
    out.print("[bold]traceback[/bold]:", highlight=False)
    print(traceback)
    return None


@dlq_cli.command()
@with_filter
def patterns(rows: store.RowFilter, as_json: bool = typer.Option(False, "--json")) -> None:
    """Rows grouped by cause (fingerprint): the fastest way to see why things fail."""
    found = store.patterns(rows)
    if as_json:
        return _print_json([vars(pattern) for pattern in found])
    table = Table()
    for column in ("fingerprint", "rows", "step", "first seen", "last seen", "example"):
        table.add_column(column, no_wrap=column != "example", overflow="fold")
    for p in found:
        table.add_row(
            p.fingerprint,
            str(p.count),
            p.stage,
            f"{p.first_seen:%m-%d %H:%M}",
            f"{p.last_seen:%m-%d %H:%M}",
            f"{p.exception_type.rsplit('.', 1)[-1]}: {p.example}",
        )
    out.print(table)
    return None


def _confirmed(rows: store.RowFilter, everything: bool, action: str, dry_run: bool, yes: bool) -> Selection | None:
    """The selection a bulk command acts on, confirmed; None when it acts on none (nothing matched, or a dry run)."""
    selected = _selection(rows, everything, action)
    if not selected.ids:
        _nothing_selected(action)
        return None
    if dry_run:
        out.print(_table(rows_of(selected.ids)))
        err.print(f"would {action} {selected.count} dead letter(s)", highlight=False)
        return None
    err.print(f"{action.removesuffix('e')}ing {selected.count} dead letter(s)", highlight=False)
    if not yes and not typer.confirm("go ahead?", err=True):
        raise typer.Exit(1)
    return selected


def cli_actor(by: str | None = None) -> actions.Actor:
    """The OS user, as the audit log records a CLI action (and whom `--by` names for them)."""
    user = audit.os_user()
    return actions.Actor(by or user, "cli", os_user=user)


def _parse_rate(text: str | None) -> float | None:
    if text is None:
        return None
    match = re.match(r"^(\d+(?:\.\d+)?)(?:/s)?$", text.strip())
    if not match or float(match.group(1)) <= 0:
        raise fail(f"--rate {text!r}: expected a positive number per second, like 20/s")
    return float(match.group(1))


@dlq_cli.command()
@with_filter
def replay(
    rows: store.RowFilter,
    ids: list[int] = typer.Argument(None, help="Row ids (or use a filter)."),
    everything: bool = typer.Option(False, "--all", help="Every failed row."),
    dry_run: bool = typer.Option(False, help="Show the rows and stop."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask."),
    rate: str = typer.Option(None, help="At most this many replays a second, e.g. 20/s."),
    force: bool = typer.Option(False, help="Replay quarantined, resolved or discarded rows too."),
    incident: str = typer.Option(None, help="The incident this replay answers, for the audit log."),
) -> None:
    """Re-enqueue each job at its failed step, with the same job id and idempotency key."""
    per_second = _parse_rate(rate)
    selected = _confirmed(rows, everything, "replay", dry_run, yes)
    if selected is None:
        return
    report = actions.replay(selected, cli_actor(), incident=incident, rate=per_second, force=force)
    for row_id, reason in report.refused.items():
        err.print(f"not replayed: {row_id}: {reason}", highlight=False)
    err.print(f"replayed {len(report.replayed)} dead letter(s) in {report.seconds:.1f}s", highlight=False)
    if report.refused and not report.replayed:
        raise typer.Exit(1)


@dlq_cli.command()
@with_filter
def discard(
    rows: store.RowFilter,
    ids: list[int] = typer.Argument(None, help="Row ids (or use a filter)."),
    reason: str = typer.Option(..., help="Why, for whoever looks later."),
    by: str = typer.Option(None, help="Who (default: the login name)."),
    everything: bool = typer.Option(False, "--all", help="Every open row."),
    dry_run: bool = typer.Option(False, help="Show the rows and stop."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask."),
) -> None:
    """Mark rows discarded: kept for the record, never replayed unless forced."""
    if not reason.strip():
        raise fail("--reason: say why, for whoever looks later")
    selected = _confirmed(rows, everything, "discard", dry_run, yes)
    if selected is None:
        return
    discarded = actions.discard(selected, cli_actor(by), reason)
    err.print(f"discarded {discarded} dead letter(s)", highlight=False)


@dlq_cli.command()
def claim(
    row_id: int = typer.Argument(..., metavar="ID"),
    by: str = typer.Option(None, help="Who (default: the login name)."),
) -> None:
    """Take a failed dead letter into review (failed -> reviewing), so others see who is on it."""
    if not _possible_id(row_id) or store.get_row(row_id) is None:
        raise fail(f"no dead letter with id {row_id}")
    actor = cli_actor(by)
    if not actions.claim(row_id, actor):
        row = store.get_row(row_id)
        who = f" by {row.claimed_by}" if row.claimed_by else ""
        raise fail(f"dead letter {row_id} is {row.status}{who}: only a failed or quarantined one can be claimed")
    err.print(f"dead letter {row_id} is reviewing, claimed by {actor.name}", highlight=False)


@dlq_cli.command()
def purge(
    older_than: str = typer.Option("30d", help="Resolved and discarded rows older than this (30d, 12h)."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask."),
) -> None:
    """Delete resolved and discarded rows older than --older-than (open rows are never purged)."""
    age = parse_duration(older_than)
    if not yes and not typer.confirm(f"delete resolved and discarded rows older than {older_than}?", err=True):
        raise typer.Exit(1)
    err.print(f"purged {store.purge(age)} dead letter(s)", highlight=False)


@dlq_cli.command()
@with_filter
def export(
    rows: store.RowFilter,
    export_format: str = typer.Option("jsonl", "--format", help="jsonl"),
    output: Path = typer.Option(None, help="File to write (default: standard output)."),
) -> None:
    """Write the selected rows, everything included, one JSON object a line."""
    if export_format != "jsonl":
        raise fail(f"--format {export_format!r}: expected jsonl")
    stream = output.open("w", encoding="utf-8") if output else sys.stdout
    if stream is None:
        raise fail("standard output is closed: give --output FILE")
    try:
        audit_export(rows, cli_actor())
        for lines in jsonl(rows):
            stream.write(lines)
    except BrokenPipeError:  # the reader went away (`| head`): stop quietly, as a Unix filter does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python's documented remedy
    finally:
        if output:
            stream.close()


@dlq_cli.command()
def stats(as_json: bool = typer.Option(False, "--json")) -> None:
    """Row counts by status, failure class and step; changes waiting in the Redis spool."""
    from redis import RedisError

    from dlq import spool

    counts = store.stats()
    try:
        waiting = {"waiting": spool.size(), "parked (could not be written)": len(spool.parked())}
    except RedisError as error:
        waiting = {f"unknown ({type(error).__name__})": 0}
    if as_json:
        return _print_json({**counts, "spool": waiting})
    for name, by_value in counts.items():
        out.print(f"[bold]by {name}[/bold]: " + ", ".join(f"{k} {v}" for k, v in sorted(by_value.items())) or "-")
    out.print("[bold]spool[/bold]: " + ", ".join(f"{k} {v}" for k, v in waiting.items()))
    return None


@db_cli.command()
def upgrade() -> None:
    """Create or migrate the dead-letter tables to this version of vetro."""
    from dlq.db import revisions
    from dlq.db import upgrade as run_upgrade

    run_upgrade()
    database, code = revisions()
    later = "" if database == code else f" (a later release's; this code's is {code}: left as it is)"
    err.print(f"dead-letter database at revision {database}{later}", highlight=False)


@db_cli.command()
def current() -> None:
    """Print the database's revision and the one this code needs."""
    from dlq.db import revisions

    database, code = revisions()
    print(f"database {database or 'none (run `vetro db upgrade`)'}; code {code}")


def _needs_the_database(command: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(command)
    def checked(*args: Any, **kwargs: Any) -> Any:
        database_ready()
        return command(*args, **kwargs)

    return checked


for _command in dlq_cli.registered_commands:  # checked when a command runs, not when its --help is asked for
    _command.callback = _needs_the_database(_command.callback)
