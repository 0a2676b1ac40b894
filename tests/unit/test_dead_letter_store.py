"""The dead-letter store on a real SQLite file: upsert, grouping, statuses, retention."""

from __future__ import annotations

from datetime import timedelta

import pytest

from dlq import store
from dlq.db import upgrade
from dlq.fingerprint import fingerprint, normalise
from dlq.models import Status
from settings import reset_settings
from tests.helpers import dead_letter_event as event


@pytest.fixture
def sqlite_store(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path}/dlq.db"
    upgrade(url)
    monkeypatch.setenv("VETRO_DATABASE_URL", url)
    monkeypatch.setenv("VETRO_QUARANTINE_AFTER", "2")
    reset_settings()
    yield
    reset_settings()


def test_ids_and_numbers_do_not_split_a_cause_but_status_codes_do():
    assert (
        normalise("bug for order order-17 (job 5534d355-4671-4178-a15d-2f8a3a13fd48)") == "bug for order # (job <uuid>)"
    )
    assert normalise("lines.0.quantity: got 503 after 12 tries") == "lines.#.quantity: got 503 after # tries"
    assert normalise("order bug-577a1485-39 failed") == normalise("order bug-6fe8d879-26 failed")
    same = fingerprint("transform", "E", "order order-1 failed"), fingerprint("transform", "E", "order order-2 failed")
    assert same[0] == same[1]
    assert fingerprint("operate", "E", "503 Service Unavailable") != fingerprint("operate", "E", "500 Internal")


def test_a_failure_makes_one_row_and_failing_again_updates_it(sqlite_store):
    store.record(event("job-1"))
    store.record(event("job-1", message="boom for order order-1 again"))
    rows = store.rows(store.RowFilter(job="job-1"))
    assert len(rows) == 1
    assert rows[0].message.endswith("again") and rows[0].status == Status.FAILED


def test_a_spooled_copy_older_than_the_rows_failure_changes_nothing(sqlite_store):
    late = store.utcnow()
    store.record(event("job-2", message="the newer failure", failed_at=late.isoformat()))
    stale = event("job-2", message="an older failure", failed_at=(late - timedelta(minutes=5)).isoformat())
    with store.session() as active:
        assert store.write(active, stale) is False
    [row] = store.rows(store.RowFilter(job="job-2"))
    assert row.message == "the newer failure" and row.last_failed_at == late


def test_a_failure_ends_the_replays_of_the_jobs_other_failed_steps(sqlite_store):
    store.record(event("job-3", scope="operate.billing", message="503 Service Unavailable"))
    store.record(event("job-3", scope="operate.crm", message="503 Service Unavailable"))
    rows = store.rows(store.RowFilter(job="job-3"))
    store.mark_replaying({row.id: f"task-{row.id}" for row in rows})
    store.record(event("job-3", scope="operate.billing", message="409 Conflict"))
    statuses = {
        row.scope: (row.status, row.replay_count, row.first_failed_at)
        for row in store.rows(store.RowFilter(job="job-3"))
    }
    assert statuses["operate.crm"][0] == Status.FAILED
    assert statuses["operate.billing"][:2] == (Status.FAILED, 1)  # its replay is counted, its first failure kept
    assert statuses["operate.billing"][2] == next(row.first_failed_at for row in rows if row.scope == "operate.billing")


def test_patterns_group_rows_by_cause(sqlite_store):
    for number in range(5):
        store.record(event(f"job-{number}", message=f"boom for order order-{number}"))
    store.record(event("other", scope="operate.billing", message="503 Service Unavailable"))
    found = store.patterns(store.RowFilter())
    assert [(p.count, p.stage) for p in found] == [(5, "transform"), (1, "operate.billing")]


def test_filters_select_exactly_the_rows_they_name(sqlite_store):
    store.record(event("a"))
    store.record(event("b", scope="operate.billing", failure_class="transient", message="503 Service Unavailable"))
    assert [r.job_id for r in store.rows(store.RowFilter(stage="operate"))] == ["b"]
    assert [r.job_id for r in store.rows(store.RowFilter(stage="operate.billing"))] == ["b"]
    assert [r.job_id for r in store.rows(store.RowFilter(failure_class="technical"))] == ["a"]
    assert [r.job_id for r in store.rows(store.RowFilter(error="service unavailable"))] == ["b"]
    assert store.count(store.RowFilter(since=store.utcnow() + timedelta(hours=1))) == 0


def test_a_row_failing_after_enough_replays_is_quarantined(sqlite_store):
    store.record(event("poison"))
    row = store.rows(store.RowFilter(job="poison"))[0]
    for replay in range(2):
        store.mark_replaying({row.id: f"task-{replay}"})
        store.record(event("poison"))
    row = store.get_row(row.id)
    assert (row.status, row.replay_count, row.replay_task_ids) == (Status.QUARANTINED, 2, ["task-0", "task-1"])


def test_a_finished_job_resolves_its_rows_and_purge_removes_old_finished_rows(sqlite_store):
    store.record(event("done"))
    store.record(event("open"))
    store.resolve_job("done")
    assert store.stats()["status"] == {"failed": 1, "resolved": 1}
    assert store.purge(timedelta(days=30)) == 0
    assert store.purge(timedelta(seconds=-1)) == 1
    assert [r.job_id for r in store.rows(store.RowFilter())] == ["open"]


def test_discard_keeps_the_row_with_who_and_why(sqlite_store):
    store.record(event("x"))
    [row] = store.rows(store.RowFilter(job="x"))
    assert store.discard([row.id], by="ana", reason="duplicate order") == 1
    row = store.rows(store.RowFilter(job="x"))[0]
    assert (row.status, row.discarded_by, row.discard_reason) == (Status.DISCARDED, "ana", "duplicate order")


def test_discarding_no_rows_changes_none(sqlite_store):
    store.record(event("x"))
    assert store.discard([], by="ana", reason="an empty selection") == 0
    assert store.rows(store.RowFilter(job="x"))[0].status == Status.FAILED


def test_an_error_filter_is_matched_literally(sqlite_store):
    store.record(event("plain", message="timeout after 5s"))
    store.record(event("percent", message="disk 100% full"))
    assert [row.job_id for row in store.rows(store.RowFilter(error="%"))] == ["percent"]
    assert store.rows(store.RowFilter(error="_")) == []
    assert [row.job_id for row in store.rows(store.RowFilter(error="100% FULL"))] == ["percent"]


def test_a_spooled_failure_is_written_by_flush(sqlite_store, monkeypatch):
    entries = [
        {"kind": "failure", **vars(event("spooled"))},
        {"kind": "resolve", "job_id": "nobody", "at": "2026-01-01T00:00:00"},
    ]
    store.write_spooled(entries)
    assert store.rows(store.RowFilter(job="spooled"))[0].status == Status.FAILED


def test_a_new_sqlite_store_is_readable_by_its_owner_only(tmp_path):
    import stat

    from dlq.db import engine

    path = tmp_path / "private" / "dlq.db"
    with engine(f"sqlite:///{path}").connect():
        pass
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_dead_letters_kept_before_vetros_failures_moved_group_with_those_kept_after(tmp_path, monkeypatch):
    """Migration 0002: a poison job's row of the previous release takes the new name and its fingerprint."""
    from alembic import command
    from sqlalchemy import text

    from dlq.db import alembic_config, engine

    url = f"sqlite:///{tmp_path}/dlq.db"
    command.upgrade(alembic_config(url), "0001")
    old, new = "pipeline.phases.PoisonJobError", "pipeline.failures.PoisonJobError"
    message = "the step's process died 3 times running it"
    with engine(url).begin() as connection:
        connection.execute(
            text(
                "INSERT INTO dead_letters (job_id, scope, pipeline, stage, input, headers, idempotency_key,"
                " correlation_id, exception_type, message, traceback, failure_class, attempts, first_failed_at,"
                " last_failed_at, fingerprint, status, replay_count, replay_task_ids, updated_at) VALUES ('j', 'ship',"
                " 'orders', 'ship', '[]', '{}', 'k', 'c', :old, :message, '', 'technical', 3, '2026-12-01',"
                " '2026-12-01', :print, 'pending', 0, '[]', '2026-12-01')"
            ),
            {"old": old, "message": message, "print": fingerprint("ship", old, message)},
        )
    upgrade(url)
    with engine(url).connect() as connection:
        row = connection.execute(text("SELECT exception_type, fingerprint FROM dead_letters")).one()
    assert tuple(row) == (new, fingerprint("ship", new, message))
