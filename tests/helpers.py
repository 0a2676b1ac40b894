"""Small helpers the tests share: waiting for jobs and reading the partner's effects."""

from __future__ import annotations

import httpx

from pipeline.jobs import QUEUED, get_jobs
from pipeline.local import wait_until


def wait_for_jobs(job_ids: list[str], timeout: float = 120) -> list[dict[str, str]]:
    """Every job's record once none is still queued."""

    def finished() -> list[dict[str, str]] | None:
        records = get_jobs(job_ids)
        return records if all(record and record["status"] != QUEUED for record in records) else None

    return wait_until(finished, timeout, f"{len(job_ids)} jobs to finish", interval=0.2)


def effects_by_key(partner_url: str) -> dict[tuple[str, str], dict]:
    rows = httpx.get(f"{partner_url}/effects", timeout=10).json()["effects"]
    return {(row["key"], row["destination"]): row for row in rows}


def set_faults(partner_url: str, **faults: object) -> None:
    httpx.post(f"{partner_url}/faults", json=faults, timeout=10).raise_for_status()


def effects_summary(partner_url: str) -> dict:
    return httpx.get(f"{partner_url}/effects", timeout=10).json()
