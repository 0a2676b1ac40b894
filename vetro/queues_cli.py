"""`vetro queues`: where each stage's messages go, how many wait where, and moving them after a routing change."""

from __future__ import annotations

import json

import typer
from rich.table import Table

from vetro.console import fail, tables
from vetro.console import messages as err

queues_cli = typer.Typer(help="Queues: where each stage goes, what waits, moving after a routing change.")


@queues_cli.command("list")
def list_queues(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Each queue vetro sends to, its waiting messages, and the stages routed to it (VETRO_QUEUES)."""
    from pipeline.adapter.routing import queue_of_task
    from pipeline.jobs.pipelines import stage_tasks
    from pipeline.jobs.reconciler import queue_length
    from settings import get_settings

    settings = get_settings()
    routed: dict[str, list[str]] = {name: [] for name in (*settings.stage_queues, settings.control_queue)}
    for task in stage_tasks():
        routed.setdefault(queue_of_task(task) or settings.queue, []).append(task)
    rows = [{"queue": name, "waiting": queue_length(name), "stages": stages} for name, stages in routed.items()]
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table()
    for column in ("queue", "waiting", "stages"):
        table.add_column(column, no_wrap=column != "stages", overflow="fold")
    for row in rows:
        stages = ", ".join(row["stages"]) or ("housekeeping" if row["queue"] == settings.control_queue else "-")
        table.add_row(row["queue"], str(row["waiting"]), stages)
    tables().print(table)


@queues_cli.command()
def move(
    source: str = typer.Option(..., "--from", help="The queue to take waiting messages from."),
    idle: float = typer.Option(2.0, min=0.1, max=60, help="Stop once the queue has given nothing this long."),
) -> None:
    """Move each message waiting in a queue to where its task goes now (after a change to VETRO_QUEUES).

    Messages whose task still goes to that queue stay; run it once workers run with the new routing.
    """
    from pipeline.adapter.routing import move_waiting
    from pipeline.jobs.pipelines import load_pipelines
    from settings import get_settings

    load_pipelines()  # the stages' routes are those their modules declare, with the settings' queues
    settings = get_settings()
    known = {*settings.stage_queues, settings.control_queue}
    if source == settings.control_queue:
        raise fail(f"{source} is housekeeping's queue: nothing in it is routed elsewhere")
    moved = move_waiting(source, idle)
    for destination, count in sorted(moved.items()):
        err.print(f"moved {count} message(s) from {source} to {destination}", highlight=False)
    if not moved:
        where = "" if source in known else f" ({source} is not a queue VETRO_QUEUE or VETRO_QUEUES names)"
        err.print(f"nothing in {source} is routed elsewhere{where}", highlight=False)
