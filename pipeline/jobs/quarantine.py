"""The quarantine: messages a worker would not run, kept raw with the reason, for an operator.

A message that is not a well-formed vetro task (see pipeline.worker.shield) is written here and acked,
so it can neither stop a worker nor be lost. It is a Redis stream (`vetro:quarantine`), capped
at QUARANTINE_MAX entries, that lives a replay window past the last message put in it.
`vetro quarantine list/show/drop` reads and empties it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from kombu.utils.json import dumps

from pipeline.sealing import SealedValueError, open_bytes, seal_bytes, sealing
from pipeline.store import key, redis_client, transaction
from pipeline.telemetry import metrics
from settings import get_settings

log = logging.getLogger("vetro.quarantine")
QUARANTINE_KEY = key("quarantine")
QUARANTINE_MAX = 10_000  # entries kept; the oldest go first
RAW_BODY_MAX = 1024 * 1024  # bytes of a message's body kept


@dataclass(frozen=True)
class Entry:
    id: str
    at: float
    reason: str
    task: str
    message_id: str
    queue: str
    headers: str  # JSON (as far as it could be written)
    body: bytes  # the message's body, raw (cut at RAW_BODY_MAX)
    content_type: str

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "body": self.body.decode("utf-8", errors="replace")}


def _text(value: Any, limit: int = 500) -> str:
    return (value if isinstance(value, str) else repr(value))[:limit]


def put(reason: str, headers: Any, body: Any, content_type: Any, queue: Any) -> str:
    """Keep one refused message; returns its quarantine id."""
    raw = body if isinstance(body, bytes) else str(body).encode("utf-8", errors="replace")
    get = headers.get if isinstance(headers, dict) else lambda _: None
    try:
        encoded_headers = dumps(headers)
    except Exception:  # headers that JSON cannot hold are kept as their repr
        encoded_headers = _text(headers, 10_000)
    fields = {
        "at": time.time(),
        "reason": _text(reason, 1000),
        "task": _text(get("task") or ""),
        "message_id": _text(get("id") or ""),
        "queue": _text(queue or ""),
        "headers": encoded_headers[:100_000],
        "body": seal_bytes(raw[:RAW_BODY_MAX]),  # a body may hold personal data: sealed when keys are set
        "sealed": "1" if sealing() else "0",
        "content_type": _text(content_type or ""),
    }
    pipe = transaction(QUARANTINE_KEY)
    pipe.xadd(QUARANTINE_KEY, fields, maxlen=QUARANTINE_MAX, approximate=True)
    pipe.expire(QUARANTINE_KEY, get_settings().replay_window)
    entry = pipe.execute()[0].decode()
    metrics.count(metrics.QUARANTINED, fields["queue"] or "unknown")
    log.error("quarantined message %s: %s (vetro quarantine show %s)", entry, reason, entry)
    return entry


def _entry(entry_id: bytes, fields: dict[bytes, bytes]) -> Entry:
    text = {name.decode(): value for name, value in fields.items()}
    return Entry(
        id=entry_id.decode(),
        at=float(text["at"]),
        reason=text["reason"].decode(),
        task=text["task"].decode(),
        message_id=text["message_id"].decode(),
        queue=text["queue"].decode(),
        headers=text["headers"].decode("utf-8", errors="replace"),
        body=_opened(text["body"]) if text.get("sealed") == b"1" else text["body"],
        content_type=text["content_type"].decode(),
    )


def _opened(body: bytes) -> bytes:
    try:
        return open_bytes(body)
    except SealedValueError as error:
        return f"({error})".encode()


def entries(limit: int = 100) -> list[Entry]:
    """The newest entries first."""
    return [_entry(*item) for item in redis_client().xrevrange(QUARANTINE_KEY, count=limit)]


def get(entry_id: str) -> Entry | None:
    found = redis_client().xrange(QUARANTINE_KEY, min=entry_id, max=entry_id, count=1)
    return _entry(*found[0]) if found else None


def count() -> int:
    return int(redis_client().xlen(QUARANTINE_KEY))


def drop(entry_ids: list[str]) -> int:
    """Remove exactly these entries (none for []); how many there were."""
    return int(redis_client().xdel(QUARANTINE_KEY, *entry_ids)) if entry_ids else 0
