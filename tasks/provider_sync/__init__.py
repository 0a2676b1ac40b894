"""The provider sync: read every record a provider has, page by page, and upsert each into the destination.

    validate -> fetch (plans one part per page) -> upsert (per page, in parallel) -> report

`fetch` follows the provider's cursor to the end; its result maps each page to that page's
records, so each part gets its own page. A part stores each record under an idempotency key
made of the job's key and the record's id, so a retried or redelivered page writes nothing
twice. `report` adds up the parts: the provider's counts are the job's result. Written only
with vetro's public API; its own settings are PROVIDER_SYNC_* (config.py).
"""

from __future__ import annotations

import logging
from typing import Any

import pydantic

from pipeline import FanOut, PermanentError, Pipeline, Stage, TechnicalError, register, stage
from tasks.provider_sync import clients
from tasks.provider_sync.config import DESTINATION, provider_dependency, sync_settings
from tasks.provider_sync.models import SyncRequest, to_contact

PIPELINE = "provider_sync"
OUTCOMES = ("created", "updated", "unchanged")
log = logging.getLogger(__name__)


@stage("validate", PIPELINE)
def validate(self: Stage, payload: dict[str, Any]) -> dict[str, Any]:
    """A sync names one configured provider."""
    request = SyncRequest.model_validate(payload)
    known = sync_settings().providers
    if request.provider not in known:
        raise PermanentError(f"unknown provider {request.provider!r}; known: {', '.join(known)}")
    return request.model_dump()


@stage("fetch", PIPELINE, dependencies=[provider_dependency(p) for p in sync_settings().providers])
def fetch(self: Stage, request: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Follow the provider's cursor to its end; one branch per page, each with its records."""
    provider, settings = request["provider"], sync_settings()
    pages: dict[str, dict[str, Any]] = {}
    cursor, seen = None, set()
    while True:
        page = clients.fetch_page(provider, cursor)
        pages[f"page-{len(pages) + 1:04d}"] = {"provider": provider, "records": list(page.get("records") or [])}
        cursor = page.get("next_cursor")
        if not cursor:
            return pages
        if cursor in seen or len(pages) >= settings.max_pages:
            raise TechnicalError(f"provider {provider} keeps paging after {len(pages)} pages (cursor {cursor!r:.40})")
        seen.add(cursor)


@stage("upsert", PIPELINE, dependencies=[DESTINATION])
def upsert(self: Stage, page: dict[str, Any], branch: str) -> dict[str, Any]:
    """Store each of the page's records; a record the destination cannot take is counted as rejected."""
    counts = dict.fromkeys(OUTCOMES, 0)
    rejected = []
    for record in page["records"]:
        try:
            contact = to_contact(page["provider"], record)
        except pydantic.ValidationError as error:
            record_id = record.get("id") if isinstance(record, dict) else None
            rejected.append({"record": str(record_id), "reason": _first_error(error)})
            continue
        outcome = clients.upsert(contact.model_dump(), f"{self.job.idempotency_key}:{contact.record_id}")
        counts[outcome] += 1
    fetched = len(page["records"])
    return {"provider": page["provider"], "page": branch, "fetched": fetched, **counts, "rejected": rejected}


@stage("report", PIPELINE)
def report(self: Stage, pages: list[dict[str, Any]]) -> dict[str, Any]:
    """The provider's counts over every page (the job's result)."""
    totals = {
        "provider": pages[0]["provider"],
        "pages": len(pages),
        "fetched": sum(page["fetched"] for page in pages),
        **{outcome: sum(page[outcome] for page in pages) for outcome in OUTCOMES},
        "rejected": [rejected for page in pages for rejected in page["rejected"]],
    }
    log.info("synced provider %(provider)s: %(fetched)s fetched, %(created)s created, %(updated)s updated", totals)
    return totals


def _first_error(error: pydantic.ValidationError) -> str:
    first = error.errors()[0]
    return f"{'.'.join(str(part) for part in first['loc'])}: {first['msg']}"


PROVIDER_SYNC = register(Pipeline(PIPELINE, [validate, fetch], fan_out=FanOut(part=upsert, join=report)))
