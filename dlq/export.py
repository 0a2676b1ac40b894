"""Exporting dead letters, the same from the CLI and the console: the filtered rows, everything included,
one JSON object a line, read a page at a time, and an audit entry saying who took them."""

from __future__ import annotations

import json
from collections.abc import Iterator

from dlq import audit, store
from dlq.actions import Actor
from dlq.selection import shown
from dlq.store import RowFilter

PAGE = 500  # rows read at a time: a large export never sits in memory


def audit_export(rows: RowFilter, actor: Actor) -> int:
    """Record the export before any row goes out (one cut short is on record too); how many rows it selects."""
    total = store.count(rows)
    audit.write(actor.audited, actor.via, "export", row_filter=shown(rows), outcome={"rows": total})
    return total


def jsonl(rows: RowFilter, page: int = PAGE) -> Iterator[str]:
    """The rows as JSON lines, newest failure first, a page's lines at a time."""
    offset = 0
    while chunk := store.rows(rows, limit=page, offset=offset):
        yield "".join(json.dumps(row.as_dict(), default=str) + "\n" for row in chunk)
        offset += len(chunk)
