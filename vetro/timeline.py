"""A job's timeline, for people (`vetro job show`) and for scripts (`--json`), from pipeline.jobs.timeline."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.tree import Tree

UNFINISHED = ("queued", "compensating")


def iso(epoch: float | None) -> str | None:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds") if epoch else None


def for_scripts(described: dict[str, Any]) -> dict[str, Any]:
    """The description with every time as ISO 8601 UTC, flags as booleans, and no error once the job is fine."""
    shown = {name: iso(value) if name.endswith("_at") else value for name, value in described.items()}
    shown["dead_lettered"] = bool(described.get("dead_lettered"))
    if described["status"] not in ("failed", "compensating", "compensated"):
        for stale in ("error", "failed_stage", "failure_class", "compensating_for"):
            shown.pop(stale, None)
    shown["steps"] = {  # by scope, in the order the steps began
        scope: {name: iso(value) if name.endswith("_at") else value for name, value in step.items()}
        for scope, step in _in_order(described["steps"])
    }
    shown["redrives"] = [{**entry, "at": iso(entry.get("at"))} for entry in described.get("redrives", [])]
    return shown


def _in_order(steps: dict[str, dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """Steps by when they began (steps that never began last, by name)."""
    return sorted(
        steps.items(), key=lambda item: (item[1].get("began_at") is None, item[1].get("began_at") or 0, item[0])
    )


def _offset(epoch: float | None, start: float) -> str:
    return f"+{epoch - start:.3f}s" if epoch else "-"


def _attempts(step: dict[str, Any]) -> int:
    """Runs of the step: each failed one, plus the one that succeeded (a dead-lettered step's last failed)."""
    failed = int(step.get("failed", 0))
    if step["status"] == "done":
        return failed + 1
    return max(failed, 1) if step.get("began_at") else failed


def _tree(shape: dict[str, Any], tree: Tree) -> Tree:
    """A plan's outline (pipeline.plan.outline) as a tree: chains, groups, chords and fan-outs, each step's status."""
    if "step" in shape:
        node = tree.add(f"{shape['step']}  [bold]{shape['status']}[/bold]  [dim]{shape['task']}[/dim]")
        for callback in shape.get("then", []):
            _tree(callback, node.add("then"))
        return tree
    for kind in ("chain", "group"):
        if kind in shape:
            branch = tree.add(kind)
            for child in shape[kind]:
                _tree(child, branch)
            return tree
    if "chord" in shape:
        chord = tree.add("chord")
        header = chord.add("group")
        for child in shape["chord"]:
            _tree(child, header)
        _tree(shape["body"], chord.add("then"))
        return tree
    fan_out = tree.add("fan-out")
    _tree(shape["fan_out"], fan_out)
    parts = fan_out.add(f"parts ({len(shape['parts'])})")
    for part in shape["parts"]:
        _tree(part, parts)
    _tree(shape["join"], fan_out.add("then"))
    return tree


def render(described: dict[str, Any], console: Console) -> None:
    """The job in a few lines, then a table of its steps, then what else happened to it."""
    submitted = float(described.get("submitted_at") or 0)
    finished = described.get("finished_at")
    took = f" in {finished - submitted:.3f}s" if finished and submitted else ""
    console.print(f"job {described['job_id']} ({described['pipeline']}): [bold]{described['status']}[/bold]{took}")
    console.print(f"  correlation id  {described.get('correlation_id')}", highlight=False)
    console.print(f"  idempotency key {described.get('idempotency_key')}", highlight=False)
    console.print(f"  submitted       {iso(submitted)}", highlight=False)
    if described.get("branches"):
        console.print(f"  fan-out to      {', '.join(json.loads(described['branches']))}", highlight=False)
    if described["status"] == "revoked":
        revoked = f"{iso(float(described.get('revoked_at') or 0))} by {described.get('revoked_by')}"
        console.print(f"  revoked         {revoked} (it was {described.get('revoked_from')})", highlight=False)
    if described["status"] in ("failed", "compensating", "compensated") and described.get("error"):
        console.print(
            f"  failed at       {described.get('failed_stage')} ({described.get('failure_class')}): "
            f"{described['error']}",
            highlight=False,
        )
        if described["status"] == "failed":
            console.print("  next            vetro dlq list --job " + described["job_id"], highlight=False)
    if "plan" in described:
        console.print(_tree(described["plan"], Tree("plan", guide_style="dim")))
    table = Table(title="steps (times from submission)", title_justify="left")
    for column in ("step", "outcome", "began", "ended", "took", "attempts", "waits", "worker"):
        table.add_column(column, no_wrap=column != "worker")
    for scope, step in _in_order(described["steps"]):
        began, ended = step.get("began_at"), step.get("ended_at")
        duration = f"{ended - began:.3f}s" if began and ended and ended >= began else "-"
        table.add_row(
            scope,
            step["status"],
            _offset(began, submitted),
            _offset(ended, submitted),
            duration,
            str(_attempts(step)),
            str(step.get("waits", 0)),
            step.get("worker", "-"),
        )
    console.print(table)
    events = [
        (entry["at"], f"re-driven at {', '.join(entry['steps'])}: {entry['reason']}") for entry in described["redrives"]
    ]
    if described.get("replays"):
        events.append(
            (described.get("replayed_at"), f"replayed from the dead-letter store ({described['replays']} time(s))")
        )
    for entry in described.get("compensations", []):
        events.append((None, f"compensation {entry['stage']}: {entry['status']}"))
    for at, text in events:
        when = _offset(at, submitted) if at else ""
        console.print(f"  {when:>10} {text}", highlight=False)
