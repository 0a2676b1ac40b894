"""`vetro dlq` as an operator uses it, against rows in SQLite and PostgreSQL."""

from __future__ import annotations

import json

import pytest

from dlq import audit, store
from dlq.db import session
from dlq.export import PAGE
from dlq.models import Status
from tests.conftest import worker_env
from tests.helpers import celery_worker, vetro
from tests.helpers import dead_letter_event as event

pytestmark = pytest.mark.integration


@pytest.fixture
def rows(database):
    """Three dead letters: two of one cause at transform, one 503 at operate.billing."""
    store.record(event("job-a", message="simulated bug in transform for order o-1"))
    store.record(event("job-b", message="simulated bug in transform for order o-2"))
    store.record(
        event(
            "job-c",
            scope="operate.billing",
            failure_class="transient",
            exception_type="httpx.HTTPStatusError",
            message="Server error '503 Service Unavailable'",
        )
    )
    return {row.job_id: row.id for row in store.rows(store.RowFilter())}


def test_list_show_patterns_and_stats(rows):
    listed = json.loads(vetro("dlq", "list", "--class", "transient", "--json").stdout)
    assert [row["job_id"] for row in listed] == ["job-c"]
    table = vetro("dlq", "list", "--page-size", "2")
    assert table.returncode == 0 and "rows 1-2 of 3; next: --page 2" in table.stdout

    shown = vetro("dlq", "show", str(rows["job-a"]))
    assert "simulated bug in transform for order o-1" in shown.stdout and "Traceback" in shown.stdout
    assert '"args"' in shown.stdout

    found = json.loads(vetro("dlq", "patterns", "--json").stdout)
    assert [(p["count"], p["stage"]) for p in found] == [(2, "transform"), (1, "operate.billing")]
    counts = json.loads(vetro("dlq", "stats", "--json").stdout)
    assert counts["status"] == {"failed": 3} and counts["stage"] == {"transform": 2, "operate.billing": 1}


def test_discard_acts_on_exactly_the_filtered_rows_and_export_writes_jsonl(rows, tmp_path):
    dry = vetro("dlq", "discard", "--error", "transform", "--reason", "test data", "--dry-run")
    assert "would discard 2 dead letter(s)" in dry.stderr
    assert store.count(store.RowFilter(status=Status.DISCARDED)) == 0

    done = vetro("dlq", "discard", "--error", "transform", "--reason", "test data", "--by", "ana", "--yes")
    assert done.returncode == 0 and "discarded 2 dead letter(s)" in done.stderr
    assert {row.job_id for row in store.rows(store.RowFilter(status=Status.DISCARDED))} == {"job-a", "job-b"}

    output = tmp_path / "dead.jsonl"
    assert vetro("dlq", "export", "--status", "discarded", "--output", str(output)).returncode == 0
    exported = [json.loads(line) for line in output.read_text().splitlines()]
    assert {row["discarded_by"] for row in exported} == {"ana"} and len(exported) == 2


def test_an_export_prints_every_row_past_a_page_as_before_and_is_audited_with_the_os_user(database):
    with session() as active:
        for n in range(PAGE + 1):  # past the first page read
            store.write(active, event(f"job-{n}", message="export me"))
        store.write(active, event("job-other"))
    result = vetro("dlq", "export", "--error", "export me")
    assert result.returncode == 0, result.stderr
    chosen = store.rows(store.RowFilter(error="export me"))
    assert len(chosen) == PAGE + 1
    assert result.stdout == "".join(json.dumps(row.as_dict(), default=str) + "\n" for row in chosen)  # as it was
    (entry,), _ = audit.entries(action="export")
    assert (entry.actor, entry.via, entry.filter) == (audit.os_user(), "cli", {"error": "export me"})
    assert entry.outcome == {"rows": PAGE + 1}


def test_a_bulk_command_without_a_selection_asks_for_one(rows):
    result = vetro("dlq", "replay")
    assert result.returncode == 2 and "say which rows to replay" in result.stderr
    unanswered = vetro("dlq", "discard", "--all", "--reason", "x", stdin="n\n")
    assert unanswered.returncode == 1 and "discarding 3 dead letter(s)" in unanswered.stderr
    assert store.count(store.RowFilter(status=Status.DISCARDED)) == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["show", "99999"], "error: no dead letter with id 99999"),
        (["replay", "99999", "--yes"], "error: no dead letter with id 99999"),
        (["list", "--since", "yesterday"], "error: --since: 'yesterday' is neither an ISO date-time nor a duration"),
        (["list", "--class", "odd"], "error: --class 'odd': expected one of"),
        (["purge", "--older-than", "soon", "--yes"], "error: 'soon' is not a duration"),
        (["replay", "--all", "--rate", "fast", "--yes"], "error: --rate 'fast'"),
        # Mistyped arguments, refused by typer's own parsing before vetro's code runs.
        (["show", "abc"], "error: Invalid value for 'ID'"),
        (["list", "--page-size", "x"], "error: Invalid value for '--page-size'"),
        (["list", "--bogus"], "error: No such option: --bogus; see 'vetro dlq list --help'"),
        (["nosuch"], "error: No such command 'nosuch'; see 'vetro dlq --help'"),
    ],
)
def test_bad_arguments_get_one_line_and_exit_code_2(rows, args, message):
    result = vetro("dlq", *args)
    assert result.returncode == 2
    assert result.stderr.startswith(message) and result.stderr.count("\n") == 1


def test_purge_removes_only_old_finished_rows(rows):
    store.resolve_job("job-a")
    assert "purged 0" in vetro("dlq", "purge", "--older-than", "30d", "--yes").stderr
    assert "purged 1" in vetro("dlq", "purge", "--older-than", "0s", "--yes").stderr
    assert store.count(store.RowFilter()) == 2


def test_a_commands_help_needs_no_database(tmp_path):
    database = tmp_path / "never.db"
    shown = vetro("dlq", "replay", "--help", env={"VETRO_DATABASE_URL": f"sqlite:///{database}"})
    assert shown.returncode == 0 and "--fingerprint" in shown.stdout, shown.stderr
    assert not database.exists()


def test_a_worker_refuses_an_unmigrated_database(tmp_path):
    env = worker_env(VETRO_DATABASE_URL=f"sqlite:///{tmp_path}/empty.db")
    result = celery_worker(env)
    assert result.returncode != 0
    assert "is at revision none, the code needs 0003: run `vetro db upgrade`" in result.stderr


@pytest.mark.parametrize(
    "no_match",
    [["--job", "00000000-nope"], ["--error", "%"]],  # '%' is matched literally: no row has one
)
def test_a_filter_that_matches_nothing_changes_nothing_for_every_verb(rows, no_match, tmp_path):
    before = {row.id: (row.status, row.replay_count) for row in store.rows(store.RowFilter())}
    discarded = vetro("dlq", "discard", *no_match, "--reason", "none", "--yes")
    assert discarded.returncode == 0 and "no dead letter matches: nothing to discard" in discarded.stderr
    replayed = vetro("dlq", "replay", *no_match, "--yes")
    assert replayed.returncode == 0 and "no dead letter matches: nothing to replay" in replayed.stderr
    exported = vetro("dlq", "export", *no_match, "--output", str(tmp_path / "none.jsonl"))
    assert exported.returncode == 0 and (tmp_path / "none.jsonl").read_text() == ""
    purged = vetro("dlq", "purge", "--older-than", "0s", "--yes")  # only resolved and discarded rows, and none are
    assert purged.returncode == 0 and "purged 0 dead letter(s)" in purged.stderr
    assert {row.id: (row.status, row.replay_count) for row in store.rows(store.RowFilter())} == before


@pytest.mark.parametrize(
    "args",
    [
        ["show", "99999999999999999999"],
        ["list", "--since", "99999999d"],
        ["list", "--page", "99999999999"],
        ["list", "--page-size", "99999999999"],
        ["purge", "--older-than", "99999999999d", "--yes"],
    ],
)
def test_an_out_of_range_operator_input_is_one_line_and_exit_2(args):
    result = vetro("dlq", *args)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr


def test_export_to_a_closed_standard_output_is_one_line():
    import os
    import subprocess
    import sys

    exported = subprocess.run(
        [sys.executable, "-m", "vetro.cli", "dlq", "export"],
        stderr=subprocess.PIPE,
        env=worker_env(),
        preexec_fn=lambda: os.close(1),  # as `vetro dlq export >&-` runs it
        text=True,
        timeout=60,
    )
    assert exported.returncode == 2
    assert exported.stderr.strip() == "error: standard output is closed: give --output FILE"
