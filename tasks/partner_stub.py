"""A stand-in for the partners the reference pipelines call, with fault injection.

- orders: a customer service (GET /customers/<id>) and destination webhooks (POST /webhooks/<name>);
- provider sync: a provider's records, paged by an opaque cursor
  (GET /providers/<provider>/records?cursor=&limit=), and a destination that upserts them
  (PUT /destination/<provider>/<record id>);
- payment saga: a payment service (POST /payments/<action>: reservations, releases,
  charges, refunds, shipments; a shipment to country "AQ" is refused with a 422).

It keeps what a test or the demo needs to see: every effect keyed by (idempotency key,
destination), how many deliveries carried that key (an effect is recorded once however
many times the key arrives), and the time of every call. Faults can be set at start or at
run time with POST /faults: error rate and status, latency, down (connections dropped, now or after N more calls),
429/503 with Retry-After, and ack loss (the effect is recorded but the answer never sent),
all limited to the paths under `scope`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import random
import sys
import threading
import time
from collections import Counter, deque
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

CALL_LOG_SIZE = 200_000
PROVIDER_RECORDS = 45  # records each provider holds unless POST /providers/<provider> says otherwise
MAX_PAGE = 100
UNSHIPPABLE = "AQ"  # no carrier serves it: the payment saga's permanent failure at ship


@dataclass
class Faults:
    error_rate: float = 0.0  # share of calls answered with error_status
    error_status: int = 503
    retry_after: float | str | None = None  # sent as Retry-After with error answers (a string as it is)
    latency_ms: int = 0
    down: bool = False  # drop every connection without an answer
    down_after: int | None = None  # answer this many more calls, then go down (an outage at a chosen point)
    ack_loss_rate: float = 0.0  # record the effect, then drop the connection
    ack_delay_ms: int = 0  # record the effect, then wait this long before answering
    scope: str = "/"  # only paths starting with this are affected

    def update(self, changes: dict[str, Any]) -> None:
        for name, value in changes.items():
            if name not in self.__dataclass_fields__:
                raise ValueError(f"unknown fault {name!r}")
            setattr(self, name, value)


@dataclass
class Effect:
    effect_id: str
    correlation_id: str | None
    order_id: str | None
    recorded_at: float
    delivered_at: list[float] = field(default_factory=list)  # every call that carried its key

    @property
    def deliveries(self) -> int:
        return len(self.delivered_at)


@dataclass
class PartnerState:
    faults: Faults = field(default_factory=Faults)
    effects: dict[tuple[str, str], Effect] = field(default_factory=dict)
    calls: deque = field(default_factory=lambda: deque(maxlen=CALL_LOG_SIZE))
    lock: threading.Lock = field(default_factory=threading.Lock)
    providers: dict[str, dict[str, int]] = field(default_factory=dict)  # provider -> {"count", "version"}
    destination: dict[tuple[str, str], dict] = field(default_factory=dict)  # (provider, record id) -> record
    upsert_keys: dict[str, str] = field(default_factory=dict)  # idempotency key -> the outcome it had

    def record_delivery(
        self, key: str, destination: str, correlation_id: str | None, order_id: str | None
    ) -> tuple[Effect, bool]:
        """The effect for (key, destination), and whether this delivery created it."""
        with self.lock:
            now = time.time()
            effect = self.effects.get((key, destination))
            if effect is not None:
                effect.delivered_at.append(now)
                return effect, False
            effect_id = hashlib.sha256(f"{key}|{destination}".encode()).hexdigest()[:16]
            effect = Effect(effect_id, correlation_id, order_id, now, [now])
            self.effects[(key, destination)] = effect
            return effect, True

    def summary(self) -> dict[str, Any]:
        with self.lock:
            rows = [
                {
                    "key": key,
                    "destination": dest,
                    "order_id": effect.order_id,
                    "deliveries": effect.deliveries,
                    "delivered_at": list(effect.delivered_at),
                    "correlation_id": effect.correlation_id,
                    "recorded_at": effect.recorded_at,
                }
                for (key, dest), effect in self.effects.items()
            ]
        per_order = Counter((row["order_id"], row["destination"]) for row in rows)
        return {
            "effects": rows,
            "total_effects": len(rows),
            "total_deliveries": sum(row["deliveries"] for row in rows),
            "repeated_deliveries": sum(row["deliveries"] - 1 for row in rows),
            # The same order at the same destination under two keys: a real double effect.
            "duplicate_effects": sum(count - 1 for count in per_order.values()),
        }

    def reset(self) -> None:
        with self.lock:
            self.effects.clear()
            self.calls.clear()
            self.providers.clear()
            self.destination.clear()
            self.upsert_keys.clear()
            self.faults = Faults()

    def provider_page(self, provider: str, offset: int, limit: int) -> tuple[list[dict], int | None]:
        """Records [offset, offset + limit) of a provider, and the offset of the next page (None at the end)."""
        with self.lock:
            shape = self.providers.get(provider, {})
        count, version = shape.get("count", PROVIDER_RECORDS), shape.get("version", 1)
        records = [provider_record(provider, n, version) for n in range(offset, min(offset + limit, count))]
        following = offset + limit
        return records, (following if following < count else None)

    def upsert(self, key: str, provider: str, record_id: str, record: dict) -> str:
        """Store a record: 'created', 'updated' or 'unchanged'; a repeated key gets its first outcome again."""
        with self.lock:
            if key in self.upsert_keys:
                return self.upsert_keys[key]
            previous = self.destination.get((provider, record_id))
            outcome = "created" if previous is None else "unchanged" if previous == record else "updated"
            self.destination[(provider, record_id)] = record
            self.upsert_keys[key] = outcome
            return outcome

    def destination_summary(self) -> dict[str, Any]:
        with self.lock:
            per_provider = Counter(provider for provider, _ in self.destination)
            return {"records": len(self.destination), "by_provider": dict(per_provider), "keys": len(self.upsert_keys)}


def provider_record(provider: str, number: int, version: int) -> dict[str, Any]:
    """A provider's record as providers send them: mixed-case emails, and now and then one without."""
    email = None if number % 20 == 13 else f"Contact.{number}@{provider.title()}.example"
    return {"id": f"{provider}-{number:05d}", "name": f"Contact {number}", "email": email, "version": version}


def encode_cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"after": offset}).encode()).decode()


def decode_cursor(cursor: str) -> int:
    """The offset a cursor stands for; ValueError for a cursor this provider did not issue."""
    try:
        offset = json.loads(base64.urlsafe_b64decode(cursor.encode()))["after"]
    except (binascii.Error, ValueError, TypeError, KeyError):
        raise ValueError(f"invalid cursor {cursor!r:.60}") from None
    if not isinstance(offset, int) or offset < 0:
        raise ValueError(f"invalid cursor {cursor!r:.60}")
    return offset


def customer_record(customer_id: str) -> dict[str, str] | None:
    if customer_id.startswith("unknown"):
        return None
    tier = ("gold", "silver", "bronze")[int(hashlib.md5(customer_id.encode()).hexdigest(), 16) % 3]
    return {"id": customer_id, "name": f"Customer {customer_id}", "tier": tier, "email": f"{customer_id}@example.com"}


class _Handler(BaseHTTPRequestHandler):
    server: PartnerServer
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes on a kept-alive connection: with Nagle's algorithm the body
    # waits for the client's delayed ACK, 40 ms per call, which made a stub "at zero latency" anything but.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _drop(self) -> None:
        self.close_connection = True

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length) or b"null")

    def _in_scope(self) -> bool:
        return self.path.startswith(self.server.state.faults.scope)

    def _injected_fault(self) -> bool:
        """Apply latency and faults for partner paths; True if the call was answered with one."""
        faults = self.server.state.faults
        if not self._in_scope():
            return False
        if faults.latency_ms:
            time.sleep(faults.latency_ms / 1000)
        if faults.down_after is not None:
            with self.server.state.lock:
                if faults.down_after > 0:
                    faults.down_after -= 1
                else:
                    faults.down, faults.down_after = True, None
        if faults.down:
            self._drop()
            return True
        if faults.error_rate and random.random() < faults.error_rate:
            headers = {"Retry-After": str(faults.retry_after)} if faults.retry_after is not None else {}
            self._send(faults.error_status, {"error": "injected fault"}, headers)
            return True
        return False

    def do_GET(self) -> None:
        state = self.server.state
        if self.path == "/health":
            return self._send(200, {"ok": True})
        if self.path == "/effects":
            return self._send(200, state.summary())
        if self.path == "/faults":
            return self._send(200, asdict(state.faults))
        if self.path.startswith("/calls"):
            with state.lock:
                return self._send(200, {"calls": [{"t": t, "path": p} for t, p in state.calls]})
        if self.path.startswith("/providers/"):
            state.calls.append((time.time(), self.path))
            if self._injected_fault():
                return None
            return self._provider_records()
        if self.path == "/destination":
            return self._send(200, state.destination_summary())
        if self.path.startswith("/customers/"):
            state.calls.append((time.time(), self.path))
            if self._injected_fault():
                return None
            customer = customer_record(self.path.removeprefix("/customers/"))
            return self._send(200, customer) if customer else self._send(404, {"error": "no such customer"})
        return self._send(404, {"error": "not found"})

    def _provider_records(self) -> None:
        url = urlsplit(self.path)
        provider, _, rest = url.path.removeprefix("/providers/").partition("/")
        if rest != "records" or not provider:
            return self._send(404, {"error": "not found"})
        query = parse_qs(url.query)
        try:
            limit = int(query.get("limit", ["10"])[0])
            offset = decode_cursor(query["cursor"][0]) if query.get("cursor", [""])[0] else 0
        except ValueError as error:
            return self._send(400, {"error": str(error)})
        if not 1 <= limit <= MAX_PAGE:
            return self._send(400, {"error": f"limit must be 1..{MAX_PAGE}"})
        records, following = self.server.state.provider_page(provider, offset, limit)
        return self._send(200, {"records": records, "next_cursor": encode_cursor(following) if following else None})

    def do_PUT(self) -> None:
        state = self.server.state
        if not self.path.startswith("/destination/"):
            return self._send(404, {"error": "not found"})
        state.calls.append((time.time(), self.path))
        body = self._body()
        if self._injected_fault():
            return None
        provider, _, record_id = self.path.removeprefix("/destination/").partition("/")
        key = self.headers.get("Idempotency-Key")
        if not key:
            return self._send(400, {"error": "Idempotency-Key header required"})
        if not (provider and record_id) or not isinstance(body, dict):
            return self._send(422, {"error": "PUT /destination/<provider>/<record id> with a JSON object"})
        outcome = state.upsert(key, provider, record_id, body)
        return self._send(201 if outcome == "created" else 200, {"outcome": outcome})

    def do_POST(self) -> None:
        state = self.server.state
        if self.path == "/faults":
            try:
                state.faults.update(self._body() or {})
            except (ValueError, TypeError) as error:
                return self._send(400, {"error": str(error)})
            return self._send(200, asdict(state.faults))
        if self.path == "/reset":
            state.reset()
            return self._send(200, {"ok": True})
        if self.path.startswith("/providers/"):  # set a provider's record count and version
            body = self._body() or {}
            with state.lock:
                state.providers[self.path.removeprefix("/providers/")] = {
                    "count": int(body.get("count", PROVIDER_RECORDS)),
                    "version": int(body.get("version", 1)),
                }
            return self._send(200, {"ok": True})
        if not self.path.startswith(("/webhooks/", "/payments/")):
            return self._send(404, {"error": "not found"})
        state.calls.append((time.time(), self.path))
        body = self._body()
        if self._injected_fault():
            return None
        key = self.headers.get("Idempotency-Key")
        if not key:
            return self._send(400, {"error": "Idempotency-Key header required"})
        if not isinstance(body, dict):
            return self._send(422, {"error": "body must be a JSON object"})
        if self.path == "/payments/shipments" and body.get("country") == UNSHIPPABLE:
            return self._send(422, {"error": f"no carrier ships to {UNSHIPPABLE}"})
        destination = self.path.removeprefix("/webhooks/").lstrip("/")  # payments: "payments/<action>"
        effect, created = state.record_delivery(
            key, destination, self.headers.get("X-Correlation-Id"), body.get("order_id")
        )
        if self._in_scope() and state.faults.ack_loss_rate and random.random() < state.faults.ack_loss_rate:
            return self._drop()
        if self._in_scope() and state.faults.ack_delay_ms:
            time.sleep(state.faults.ack_delay_ms / 1000)
        return self._send(201 if created else 200, {"effect_id": effect.effect_id, "duplicate": not created})


class PartnerServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, host: str = "127.0.0.1", port: int = 0, faults: Faults | None = None) -> None:
        super().__init__((host, port), _Handler)
        self.state = PartnerState(faults=faults or Faults())

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A caller that hung up (a killed worker, a timeout) is expected here, not an error.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def start_in_thread(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, name="partner-stub", daemon=True)
        thread.start()
        return thread
