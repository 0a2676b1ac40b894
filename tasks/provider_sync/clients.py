"""Calls to the provider's record API and to the destination, each through its own dependency."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote

import httpx

from pipeline import DependencyWaitError
from pipeline.dependencies import http_request
from pipeline.failures import retry_after_seconds
from tasks.provider_sync.config import DESTINATION, provider_dependency, sync_settings

INLINE_WAITS = 3  # 429s waited out within one page read before the step itself waits


def fetch_page(provider: str, cursor: str | None) -> dict[str, Any]:
    """One page of a provider's records: {"records": [...], "next_cursor": str | None}.

    A 429 is the provider's rate limit speaking, not a failure: a short Retry-After is waited
    out here, so the pages already read are kept; a longer one makes the step wait (without
    spending its retries) and read again from its first page, which has no side effects.
    """
    settings = sync_settings()
    url = f"{settings.provider_url.rstrip('/')}/providers/{quote(provider, safe='')}/records"
    params = {"limit": settings.page_size, **({"cursor": cursor} if cursor else {})}
    for waited in range(INLINE_WAITS + 1):
        try:
            return http_request(provider_dependency(provider), "GET", url, params=params)
        except httpx.HTTPStatusError as error:
            if error.response.status_code != 429:
                raise
            retry_after = retry_after_seconds(error.response.headers.get("Retry-After"))
            if retry_after is None or retry_after > settings.max_inline_wait or waited == INLINE_WAITS:
                raise DependencyWaitError(f"provider {provider} is rate limiting (429)", retry_after or 1.0) from error
            time.sleep(retry_after)
    raise AssertionError("unreachable")  # the loop returns or raises


def upsert(contact: dict[str, Any], idempotency_key: str) -> str:
    """Store one contact at the destination: 'created', 'updated' or 'unchanged'."""
    settings = sync_settings()
    provider, record_id = quote(contact["provider"], safe=""), quote(contact["record_id"], safe="")
    answer = http_request(
        DESTINATION,
        "PUT",
        f"{settings.destination_url.rstrip('/')}/destination/{provider}/{record_id}",
        json=contact,
        headers={"Idempotency-Key": idempotency_key},
    )
    return answer["outcome"]
