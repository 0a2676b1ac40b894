"""The console's API on a real `vetro serve`, a real dead-letter database (SQLite and PostgreSQL) and Redis:
who may do what (checked on the server), CSRF, sign-in, bulk actions on exactly the selection shown,
one-line refusals, and the audit log the CLI and the console share."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest

from dlq import store
from dlq.db import session
from dlq.models import DeadLetter, Status
from pipeline.dependencies.breakers import force, status
from pipeline.dependencies.ratelimit import take
from pipeline.jobs import quarantine
from pipeline.store import redis_client
from pipeline.telemetry import metrics
from settings import RateLimit
from tests.conftest import CONSOLE_PASSWORD, worker_env
from tests.helpers import dead_letter_event, serving, vetro, workers
from tests.pipelines import pack
from vetro.testing.processes import free_port, wait_until
from vetro.web import users
from vetro.web.security import FAILED_SIGN_INS, FAILED_SIGN_INS_KEY
from vetro.web.users import Role

pytestmark = pytest.mark.integration


def signed_in(url: str, name: str) -> httpx.Client:
    """A client with a session, sending the session's CSRF token on every request, as the pages do."""
    client = httpx.Client(base_url=url, timeout=30)
    answer = client.post("/api/session", json={"name": name, "password": CONSOLE_PASSWORD})
    assert answer.status_code == 200, answer.text
    client.headers["x-csrf-token"] = answer.json()["csrf"]
    return client


def add_rows(*events: store.DeadLetterEvent) -> None:
    with session() as active:
        for event in events:
            store.write(active, event)


def statuses() -> dict[str, str]:
    with session() as active:
        return {row.job_id: row.status for row in active.query(DeadLetter)}


def preview(client: httpx.Client, action: str, **given: object) -> dict:
    answer = client.post("/api/dead-letters/preview", json={"action": action, "filter": given})
    assert answer.status_code == 200, answer.text
    return answer.json()


def assert_refused(answer: httpx.Response, status: int, says: str) -> None:
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert says in error and "\n" not in error, error


def test_a_filtered_bulk_discard_acts_on_exactly_the_rows_shown_and_the_audit_log_says_who(console):
    add_rows(
        *(dead_letter_event(f"sku-{n}", message="unknown sku ABC-1") for n in range(3)),
        *(dead_letter_event(f"late-{n}", message="partner timed out") for n in range(3)),
    )
    otto = signed_in(console, "otto")
    shown = preview(otto, "discard", error="unknown sku")
    assert shown["count"] == 3 and {row["job_id"] for row in shown["sample"]} == {"sku-0", "sku-1", "sku-2"}

    done = otto.post(
        "/api/dead-letters/discard",
        json={"filter": {"error": "unknown sku"}, "digest": shown["digest"], "reason": "bad catalogue import"},
    )
    assert done.json() == {"discarded": 3, "selected": 3}
    assert statuses() == {
        **{f"sku-{n}": Status.DISCARDED for n in range(3)},
        **{f"late-{n}": Status.FAILED for n in range(3)},  # nothing outside the filter changed
    }
    (entry,) = otto.get("/api/audit", params={"action": "discard"}).json()["entries"]
    assert entry["actor"] == "otto" and entry["via"] == "console" and entry["count"] == 3
    assert entry["filter"] == {"error": "unknown sku"} and entry["reason"] == "bad catalogue import"
    assert entry["ids_digest"] == shown["digest"]


def test_an_action_on_a_selection_that_changed_since_its_preview_is_refused_with_the_new_one(console):
    add_rows(*(dead_letter_event(f"a-{n}", message="unknown sku") for n in range(2)))
    otto = signed_in(console, "otto")
    shown = preview(otto, "discard", error="unknown sku")
    add_rows(dead_letter_event("a-late", message="unknown sku"))  # a new failure arrives meanwhile

    stale = otto.post(
        "/api/dead-letters/discard", json={"filter": {"error": "unknown sku"}, "digest": shown["digest"], "reason": "x"}
    )
    assert_refused(stale, 409, "the selection changed since it was shown (3 rows match now)")
    assert stale.json()["preview"]["count"] == 3
    assert set(statuses().values()) == {Status.FAILED}  # nothing was discarded

    empty = preview(otto, "discard", error="no such error")
    body = {"filter": {"error": "no such error"}, "digest": empty["digest"], "reason": "x"}
    nothing = otto.post("/api/dead-letters/discard", json=body)
    assert empty["count"] == 0
    assert_refused(nothing, 409, "nothing matches: nothing to discard")


def test_a_large_selection_needs_its_count_typed_back(console):
    add_rows(*(dead_letter_event(f"bulk-{n}", message="bulk failure") for n in range(101)))
    otto = signed_in(console, "otto")
    shown = preview(otto, "discard", error="bulk failure")
    assert shown["count"] == 101 and shown["confirm"] and len(shown["sample"]) == 20
    body = {"filter": {"error": "bulk failure"}, "digest": shown["digest"], "reason": "load test"}
    assert_refused(otto.post("/api/dead-letters/discard", json=body), 422, "type their number to confirm")
    assert_refused(otto.post("/api/dead-letters/discard", json={**body, "confirm_count": 100}), 422, "101 rows")
    assert otto.post("/api/dead-letters/discard", json={**body, "confirm_count": 101}).json()["discarded"] == 101


def test_a_viewer_reads_but_every_change_is_refused_on_the_server(console):
    add_rows(dead_letter_event("v-1"))
    (row_id,) = [row["id"] for row in signed_in(console, "ada").get("/api/dead-letters").json()["rows"]]
    vera = signed_in(console, "vera")
    assert vera.get("/api/dead-letters").json()["total"] == 1
    assert vera.get(f"/api/dead-letters/{row_id}").json()["job_id"] == "v-1"
    shown = preview(vera, "replay", job="v-1")  # looking is reading

    act = {"filter": {"job": "v-1"}, "digest": shown["digest"]}
    assert_refused(vera.post("/api/dead-letters/replay", json=act), 403, "vera is a viewer: replaying needs")
    assert_refused(vera.post("/api/dead-letters/discard", json={**act, "reason": "x"}), 403, "discarding needs")
    assert_refused(vera.post(f"/api/dead-letters/{row_id}/claim"), 403, "claiming needs the operator role")
    form = vera.post("/dead-letters/act", data={"action": "discard", "ids": str(row_id), "digest": shown["digest"],
                                                "reason": "x", "csrf": vera.headers["x-csrf-token"]})  # fmt: skip
    assert form.status_code == 403 and "vera is a viewer" in form.text
    assert statuses() == {"v-1": Status.FAILED}
    assert signed_in(console, "ada").get("/api/audit").json()["total"] == 0


def test_a_cross_site_request_is_refused_and_changes_nothing(console):
    add_rows(dead_letter_event("x-1"))
    otto = signed_in(console, "otto")
    shown = preview(otto, "discard", job="x-1")
    body = {"filter": {"job": "x-1"}, "digest": shown["digest"], "reason": "forged"}
    token = otto.headers.pop("x-csrf-token")

    assert_refused(otto.post("/api/dead-letters/discard", json=body), 403, "no valid CSRF token")
    assert_refused(otto.post("/api/dead-letters/discard", json=body, headers={"x-csrf-token": "guess"}), 403, "CSRF")
    forged = {"x-csrf-token": token, "origin": "https://evil.example"}
    assert_refused(otto.post("/api/dead-letters/discard", json=body, headers=forged), 403, "from another site")
    # What a page on another site can send: a form post with the victim's cookie and no token.
    fields = {"action": "discard", "job": "x-1", "digest": shown["digest"], "reason": "forged"}
    form = otto.post("/dead-letters/act", data=fields, headers={"origin": "https://evil.example"})
    assert form.status_code == 403
    assert statuses() == {"x-1": Status.FAILED}


@pytest.fixture
def no_failed_sign_ins() -> Iterator[None]:
    """This address's failed sign-ins forgotten before and after: the limit would refuse other tests' users."""
    key = f"{FAILED_SIGN_INS_KEY}127.0.0.1"
    redis_client().delete(key)
    yield
    redis_client().delete(key)


def test_sign_in_is_refused_for_a_wrong_password_limited_per_address_and_a_removed_user_is_out(
    console, console_users, no_failed_sign_ins
):
    client = httpx.Client(base_url=console, timeout=30)
    assert_refused(client.get("/api/dead-letters"), 401, "sign in first")
    assert client.get("/dead-letters", follow_redirects=False).headers["location"] == "/login?next=/dead-letters"
    assert_refused(client.post("/api/session", json={"name": "otto", "password": "wrong"}), 401, "wrong name or")
    assert_refused(client.post("/api/session", json={"name": "nobody", "password": "x"}), 401, "wrong name or")

    removable = console_users.with_name("removable.json")
    users.add(removable, "temp", Role.OPERATOR, CONSOLE_PASSWORD)
    with serving({"VETRO_CONSOLE_USERS_FILE": str(removable)}) as url:
        temp = signed_in(url, "temp")
        assert temp.get("/api/me").json()["role"] == "operator"
        users.remove(removable, "temp")
        assert_refused(temp.get("/api/me"), 401, "sign in first")
        guesser = httpx.Client(base_url=url, timeout=30)
        for _ in range(FAILED_SIGN_INS - 2):  # the two wrong guesses above count too
            assert guesser.post("/api/session", json={"name": "temp", "password": "guess"}).status_code == 401
        assert_refused(guesser.post("/api/session", json={"name": "x", "password": "y"}), 429, "too many failed")


def test_bad_ids_filters_and_bodies_get_one_line_errors(console):
    ada = signed_in(console, "ada")
    assert_refused(ada.get("/api/dead-letters/424242"), 404, "no dead letter with id 424242")
    assert_refused(ada.get("/api/dead-letters/99999999999999999999"), 422, "row_id")
    assert_refused(ada.get("/api/dead-letters/abc"), 422, "row_id")
    assert_refused(ada.get("/api/dead-letters", params={"since": "yesterday"}), 400, "since: 'yesterday'")
    assert_refused(ada.get("/api/dead-letters", params={"status": "odd"}), 400, "status 'odd': expected one of")
    assert_refused(ada.get("/api/dead-letters", params={"limit": 0}), 422, "limit")
    assert_refused(ada.post("/api/dead-letters/preview", json={"action": "zap", "filter": {}}), 422, "action")
    assert_refused(ada.post("/api/dead-letters/preview", json={"action": "replay", "filter": {"x": 1}}), 422, "x")
    assert_refused(ada.post("/api/dead-letters/preview", content=b"{", headers={"content-type": "application/json"}),
                   422, "JSON")  # fmt: skip
    assert_refused(ada.post("/api/operations/7/stop"), 404, "no operation 7")
    assert_refused(ada.get("/api/nowhere"), 404, "Not Found")


def test_a_search_finds_text_in_the_stored_input_and_the_clear_fields(console):
    add_rows(
        dead_letter_event("s-1", input={"args": [{"sku": "ZX-81"}], "kwargs": {}}),
        dead_letter_event("s-2", correlation_id="checkout-77"),
        dead_letter_event("s-3"),
    )
    vera = signed_in(console, "vera")
    found = {
        text: {row["job_id"] for row in vera.get("/api/dead-letters", params={"search": text}).json()["rows"]}
        for text in ("zx-81", "checkout-77", "100%_")
    }
    assert found == {"zx-81": {"s-1"}, "checkout-77": {"s-2"}, "100%_": set()}


def test_a_paced_replay_runs_in_the_background_shows_its_progress_and_stops_when_asked(console):
    add_rows(*(dead_letter_event(f"p-{n}", message="paced") for n in range(40)))  # ledgers long gone: refused
    otto = signed_in(console, "otto")
    shown = preview(otto, "replay", error="paced")
    started = otto.post("/api/dead-letters/replay", json={"filter": {"error": "paced"}, "digest": shown["digest"],
                                                          "rate": 4, "incident": "INC-7"})  # fmt: skip
    assert started.status_code == 202 and started.json()["state"] == "running"
    operation = f"/api/operations/{started.json()['id']}"
    assert otto.get("/api/dead-letters", params={"limit": 1}).status_code == 200  # the console answers meanwhile
    wait_until(lambda: otto.get(operation).json()["done"] >= 4, 60, "the replay to make progress")
    assert otto.post(f"{operation}/stop").json()["state"] == "stopping"
    stopped = wait_until(lambda: (o := otto.get(operation).json())["state"] == "stopped" and o, 60, "it to stop")
    assert 4 <= stopped["done"] < 40 and stopped["refused"] == stopped["done"]
    (entry,) = otto.get("/api/audit", params={"action": "replay"}).json()["entries"]
    assert entry["incident"] == "INC-7" and entry["count"] == 40
    assert entry["outcome"]["not_reached"] == 40 - stopped["done"]


def test_the_cli_writes_the_same_audit_log_with_the_os_user(console):
    add_rows(dead_letter_event("c-1", message="cli failure"))
    result = vetro("dlq", "discard", "--error", "cli failure", "--reason", "from the shell", "--yes")
    assert result.returncode == 0, result.stderr
    listed = json.loads(vetro("audit", "list", "--json").stdout)
    assert [(entry["via"], entry["action"], entry["count"]) for entry in listed] == [("cli", "discard", 1)]
    from dlq.audit import os_user

    assert listed[0]["actor"] == os_user()
    assert signed_in(console, "vera").get("/api/audit").json()["entries"][0]["reason"] == "from the shell"


def test_the_console_refuses_to_start_beyond_loopback_without_users(database):
    port = free_port()
    result = vetro("serve", "--host", "0.0.0.0", "--port", str(port))
    assert result.returncode == 2
    assert "beyond loopback, and has no users: set VETRO_CONSOLE_USERS_FILE" in result.stderr
    assert result.stderr.count("\n") == 1


def test_only_an_admin_forces_a_breaker_and_each_force_is_audited(console):
    otto, ada = signed_in(console, "otto"), signed_in(console, "ada")
    assert "card-service" in {breaker["name"] for breaker in otto.get("/api/breakers").json()}
    refused = otto.post("/api/breakers/card-service/open")
    assert_refused(refused, 403, "otto is an operator: forcing a breaker needs the admin role")
    try:
        opened = ada.post("/api/breakers/card-service/open").json()
        assert opened["state"] == "open" and time.time() - opened["changed_at"] < 60  # when it changed
        assert status("card-service").state == "open"  # what the workers' breakers read
        assert ada.post("/api/breakers/card-service/closed").json()["state"] == "closed"
    finally:
        force("card-service", "closed")
    assert_refused(ada.post("/api/breakers/no-such-service/open"), 404, "no breaker 'no-such-service'")
    assert_refused(ada.post("/api/breakers/card-service/half-open"), 422, "state")
    entries = ada.get("/api/audit").json()["entries"]
    assert [(entry["actor"], entry["action"]) for entry in entries] == [
        ("ada", "breaker-closed"),
        ("ada", "breaker-open"),
    ]


def test_an_admin_drops_exactly_the_quarantined_messages_chosen(console):
    kept = quarantine.put("a test's message", {"task": "x"}, b"{}", "application/json", "vetro")
    dropped = quarantine.put("a test's message", {"task": "y"}, b"{}", "application/json", "vetro")
    try:
        vera, ada = signed_in(console, "vera"), signed_in(console, "ada")
        assert {kept, dropped} <= {entry["id"] for entry in vera.get("/api/quarantine").json()["entries"]}
        assert vera.get(f"/api/quarantine/{kept}").json()["reason"] == "a test's message"
        assert_refused(vera.post("/api/quarantine/drop", json={"ids": [dropped]}), 403, "needs the admin role")
        assert_refused(ada.post("/api/quarantine/drop", json={"ids": ["nope"]}), 400, "is not a quarantine id")
        assert_refused(ada.post("/api/quarantine/drop", json={"ids": []}), 422, "ids")
        assert ada.post("/api/quarantine/drop", json={"ids": [dropped]}).json() == {"dropped": 1}
        assert quarantine.get(dropped) is None and quarantine.get(kept) is not None
        assert_refused(ada.get(f"/api/quarantine/{dropped}"), 404, f"no quarantined message {dropped}")
    finally:
        quarantine.drop([kept, dropped])


def test_the_overview_says_whether_the_service_is_ready_and_what_failed_lately(console):
    add_rows(dead_letter_event("o-1", message="partner said no"))
    vera = signed_in(console, "vera")
    before = vera.get("/api/overview").json()["last_hour"]
    metrics.count(metrics.JOBS_COMPLETED, "shop", amount=3)  # what workers count as jobs end
    metrics.count(metrics.JOBS_FAILED, "shop")
    metrics.flush()
    now = vera.get("/api/overview").json()
    assert now["last_hour"]["completed"] - before["completed"] >= 3 and now["last_hour"]["failed"] > before["failed"]
    assert (
        now["last_hour"]["by_pipeline"]["shop"]["completed"] - before["by_pipeline"].get("shop", {}).get("completed", 0)
        >= 3
    )
    by_minute = now["last_hour"]["by_minute"]
    assert len(by_minute) == 60 and sum(minute["completed"] for minute in by_minute[-2:]) >= 3  # this minute, or 1 ago
    assert now["status"] in ("ok", "degraded", "unready") and "queues" in now and "workers" in now
    assert now["dead_letters_by_status"] == {"failed": 1}
    assert [pattern["count"] for pattern in now["new_patterns"]] == [1]


@pytest.fixture
def shop_worker(database) -> Iterator[None]:
    """A real worker writing this test's dead-letter database (started after it, unlike `worker`)."""
    with workers(worker_env()):
        yield


def test_an_operator_corrects_a_failed_steps_input_and_the_job_completes_with_it(console, shop_worker):
    result = pack.delay({"sku": "OLD-7", "quantity": 2})
    rows = wait_until(lambda: store.rows(store.RowFilter(error="OLD-7")), 120, "the step to be dead-lettered")
    row_id = rows[0].id
    otto = signed_in(console, "otto")
    path = f"/api/dead-letters/{row_id}/replay-edited"

    wrong = {"args": [{"sku": "new 7", "quantity": 0}], "kwargs": {}}
    assert_refused(otto.post(path, json={"input": wrong}), 422, "shop.pack's Parcel: sku: String should match")
    assert_refused(otto.post(path, json={"input": {"args": {}}}), 422, '{"args": [...], "kwargs": {...}}')
    assert_refused(signed_in(console, "vera").post(path, json={"input": wrong}), 403, "replaying needs")
    assert_refused(otto.post("/api/dead-letters/424242/replay-edited", json={"input": wrong}), 404, "no dead letter")
    mine = rows[0].job_id  # (a worker also runs what earlier tests left queued: only this job is looked at)
    assert statuses()[mine] == Status.FAILED  # nothing was changed or run

    fixed = {"args": [{"sku": "NEW-7", "quantity": 2}], "kwargs": {}}
    assert otto.post(path, json={"input": fixed, "incident": "INC-9"}).json() == {"replayed": 1, "refused": {}}
    assert result.get(timeout=120) == {"packed": "NEW-7", "quantity": 2}
    wait_until(lambda: statuses()[mine] == Status.RESOLVED, 60, "the dead letter to be resolved")
    (entry,) = otto.get("/api/audit", params={"action": "replay-edited"}).json()["entries"]
    assert entry["incident"] == "INC-9" and entry["count"] == 1
    assert entry["diff"] == {"redacted": {"step": "pack", "before": {"args": [{"sku": "OLD-7", "quantity": 2}],
                             "kwargs": {}}, "after": fixed}}  # fmt: skip


def test_a_trusted_reverse_proxy_signs_users_in_by_its_header_and_no_one_else_can(database, console_users):
    proxied = {"VETRO_CONSOLE_USERS_FILE": str(console_users), "VETRO_CONSOLE_PROXY_USER_HEADER": "X-Forwarded-User"}
    with serving({**proxied, "VETRO_CONSOLE_TRUSTED_PROXIES": "127.0.0.1/32"}) as url:
        as_proxy = {"x-forwarded-user": "vera", "x-forwarded-for": "203.0.113.9", "x-forwarded-proto": "https"}
        assert httpx.get(f"{url}/api/me", headers=as_proxy).json()["role"] == "viewer"  # what oauth2-proxy sends
        stranger = httpx.get(f"{url}/api/me", headers={"x-forwarded-user": "mallory"})
        assert_refused(stranger, 403, "mallory is not a console user")
    with serving({**proxied, "VETRO_CONSOLE_TRUSTED_PROXIES": "10.0.0.0/8"}) as url:  # this client is not the proxy
        assert_refused(httpx.get(f"{url}/api/me", headers={"x-forwarded-user": "ada"}), 401, "sign in first")
    half = vetro("serve", "--port", str(free_port()), env=proxied)
    assert half.returncode == 2 and half.stderr.count("\n") == 1
    assert "VETRO_CONSOLE_PROXY_USER_HEADER is set without VETRO_CONSOLE_TRUSTED_PROXIES" in half.stderr


def test_jobs_are_found_by_pipeline_key_and_id_and_show_their_timeline(console):
    key = f"console-jobs-{uuid.uuid4().hex[:8]}"
    result = pack.apply_async(({"sku": "NEW-5", "quantity": 1},), idempotency_key=key)
    vera = signed_in(console, "vera")
    job_id = vera.get(f"/api/jobs/{result.id}").json()["job_id"]  # any of its task ids finds the job
    listed = vera.get("/api/jobs", params={"pipeline": "shop", "since": "5m"}).json()
    assert job_id in {job["job_id"] for job in listed}
    (by_key,) = vera.get("/api/jobs", params={"key": key}).json()
    assert by_key["job_id"] == job_id and by_key["status"] in ("queued", "completed") and "pack" in str(by_key["plan"])
    assert_refused(vera.get("/api/jobs/nope"), 404, "no job 'nope'")
    assert_refused(vera.get("/api/jobs", params={"since": "soon"}), 400, "since: 'soon' is not a duration")
    assert_refused(vera.get("/api/jobs", params={"pipeline": "nope"}), 400, "no pipeline 'nope'; known:")


def test_an_export_writes_exactly_the_filtered_rows_and_is_audited(console):
    add_rows(*(dead_letter_event(f"e-{n}", message="export me") for n in range(2)), dead_letter_event("e-x"))
    vera = signed_in(console, "vera")
    exported = vera.get("/api/dead-letters/export", params={"error": "export me"})
    lines = [json.loads(line) for line in exported.text.splitlines()]
    assert sorted(line["job_id"] for line in lines) == ["e-0", "e-1"]
    assert lines[0]["input"] == {"args": [{"a": 1}], "kwargs": {}}  # everything, the input included
    (entry,) = vera.get("/api/audit", params={"action": "export"}).json()["entries"]
    assert entry["actor"] == "vera" and entry["filter"] == {"error": "export me"} and entry["outcome"] == {"rows": 2}


def test_rate_limits_show_what_the_workers_share(database, console_users):
    limits = '{"card-service": {"rate": 0.01, "burst": 3}}'
    redis_client().delete("vetro:ratelimit:card-service")
    with serving({"VETRO_CONSOLE_USERS_FILE": str(console_users), "VETRO_RATE_LIMITS": limits}) as url:
        vera = signed_in(url, "vera")
        assert vera.get("/api/rate-limits").json() == [{"name": "card-service", "rate": 0.01, "burst": 3, "tokens": 3}]
        take("card-service", RateLimit(rate=0.01, burst=3))  # a worker's call
        (shown,) = vera.get("/api/rate-limits").json()
        assert 2 <= shown["tokens"] < 2.1
    redis_client().delete("vetro:ratelimit:card-service")


def test_what_a_failure_carries_is_shown_as_text_never_run_as_markup(console):
    """An exception message, an input or a job id is data from producers and partners: pages escape it."""
    hostile = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    add_rows(dead_letter_event("<b>job</b>", message=hostile, input={"args": [{"note": hostile}], "kwargs": {}}))
    vera = signed_in(console, "vera")
    (row,) = vera.get("/api/dead-letters").json()["rows"]
    for page in ("/dead-letters", f"/dead-letters/{row['id']}", "/patterns"):
        html = vera.get(page).text
        assert "<script>alert" not in html and "<img src=x" not in html and "<b>job</b>" not in html, page
        assert "&lt;script&gt;alert" in html, page
