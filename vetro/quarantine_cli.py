"""`vetro quarantine`: the messages workers refused to run (pipeline.worker.shield), raw, with why."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import typer
from rich.table import Table

from pipeline.jobs import quarantine
from vetro.admin import AdminError, drop_quarantined, quarantine_ids
from vetro.console import fail
from vetro.console import messages as err
from vetro.dead_letters_cli import cli_actor

quarantine_cli = typer.Typer(help="Messages workers refused to run: list, show, drop.", no_args_is_help=True)


def _when(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _check_ids(entry_ids: list[str]) -> None:
    try:
        quarantine_ids(entry_ids)
    except AdminError as error:
        raise fail(str(error)) from None


@quarantine_cli.command("list")
def list_entries(
    limit: int = typer.Option(100, min=1, max=10_000, help="How many, newest first."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """The newest quarantined messages: when, which task, and why."""
    entries = quarantine.entries(limit)
    if as_json:
        print(json.dumps([{k: v for k, v in e.as_dict().items() if k != "body"} for e in entries], indent=2))
        return
    table = Table()
    for column in ("id", "quarantined (UTC)", "task", "queue", "reason"):
        table.add_column(column, no_wrap=column != "reason", overflow="fold")
    for entry in entries:
        table.add_row(entry.id, _when(entry.at), entry.task[:60], entry.queue, entry.reason)
    err.print(table)
    err.print(f"{quarantine.count()} message(s) in quarantine", highlight=False)


@quarantine_cli.command()
def show(entry_id: str) -> None:
    """One quarantined message, headers and raw body included."""
    _check_ids([entry_id])
    entry = quarantine.get(entry_id)
    if entry is None:
        raise fail(f"no quarantined message {entry_id}")
    print(json.dumps(entry.as_dict(), indent=2))


@quarantine_cli.command()
def drop(
    entry_ids: list[str] = typer.Argument(None, help="Quarantine ids."),
    everything: bool = typer.Option(False, "--all", help="Every quarantined message."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask."),
) -> None:
    """Delete quarantined messages, by id or --all."""
    entry_ids = entry_ids or []
    _check_ids(entry_ids)
    if entry_ids and everything:
        raise fail("give ids or --all, not both")
    if not entry_ids and not everything:
        raise fail("say which messages to drop: ids, or --all")
    selected = entry_ids or [entry.id for entry in quarantine.entries(quarantine.QUARANTINE_MAX)]
    if not selected:
        err.print("the quarantine is empty: nothing to drop", highlight=False)
        return
    err.print(f"dropping {len(selected)} message(s)", highlight=False)
    if not yes and not typer.confirm("go ahead?", err=True):
        raise typer.Exit(1)
    dropped, audited = drop_quarantined(selected, cli_actor())
    err.print(f"dropped {dropped} message(s)", highlight=False)
    if not audited:
        err.print("warning: not in the audit log (the dead-letter database did not answer)", highlight=False)
