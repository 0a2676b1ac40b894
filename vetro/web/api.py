"""The console's JSON API under /api (its OpenAPI document at /api/openapi.json): what the pages show and
do, for scripts. Every refusal is one line, `{"error": "..."}`, with the status that fits it."""

from __future__ import annotations

import time
from dataclasses import asdict
from datetime import timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from dlq import actions, audit, filters, operations, selection, store
from dlq.export import audit_export, jsonl
from dlq.models import DeadLetter
from dlq.store import MAX_ROW_ID, RowFilter
from pipeline.dependencies import breakers, ratelimit
from pipeline.jobs import ledger, quarantine
from pipeline.jobs.pipelines import dependencies, namespaces
from pipeline.jobs.timeline import describe_job
from pipeline.telemetry import metrics
from vetro import admin
from vetro.ops import report
from vetro.timeline import for_scripts, iso
from vetro.web import background
from vetro.web.security import ConsoleError, csrf_token, current_user, require, sign_in, sign_out
from vetro.web.users import Role, User

RowId = Annotated[int, Field(ge=1, le=MAX_ROW_ID)]
PathId = Annotated[int, Path(ge=1, le=MAX_ROW_ID)]
Text = Annotated[str | None, Field(max_length=filters.MAX_TEXT)]
QueryText = Annotated[str | None, Query(max_length=filters.MAX_TEXT)]


class FilterFields(BaseModel):
    """Which dead letters, as the CLI's filter says it: also a query string's fields (others are left to
    the page that reads them)."""

    stage: Text = None
    status: Text = None
    failure_class: Text = None
    error: Text = None
    fingerprint: Text = None
    job: Text = None
    key: Text = None
    correlation: Text = None
    search: Text = None
    since: Text = None
    until: Text = None

    def rows(self) -> RowFilter:
        return row_filter(self.model_dump(exclude={"everything"}))


class FilterIn(FilterFields):
    """A filter in a request's body: also row ids. An empty filter selects nothing unless `everything`."""

    model_config = ConfigDict(extra="forbid")

    ids: list[RowId] = Field(default_factory=list, max_length=10_000)
    everything: bool = False


def row_filter(fields: dict[str, Any]) -> RowFilter:
    try:
        return filters.row_filter(**fields)
    except filters.FilterError as error:
        raise ConsoleError(400, str(error)) from None


def query_filter(fields: Annotated[FilterFields, Query()]) -> RowFilter:
    """The filter from a query string (the list, the patterns, the console's address bar)."""
    return fields.rows()


class PreviewIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    action: Literal["replay", "discard"]
    filter: FilterIn


class ActIn(BaseModel):
    """An action on the selection a preview showed: its digest, and its count typed back when large."""

    model_config = ConfigDict(extra="forbid")
    filter: FilterIn
    digest: str = Field(min_length=64, max_length=64, pattern="^[0-9a-f]{64}$")
    confirm_count: int | None = Field(None, ge=0, le=MAX_ROW_ID)


class ReplayIn(ActIn):
    incident: str | None = Field(None, max_length=128)
    rate: float | None = Field(None, ge=0.1, le=10_000, description="replays a second; unset, as fast as it goes")
    force: bool = False


class DiscardIn(ActIn):
    reason: str = Field(min_length=1, max_length=2000)


class DropIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ids: list[Annotated[str, Field(max_length=41)]] = Field(min_length=1, max_length=1000)


class EditedReplayIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    input: dict[str, Any] = Field(description='the failed step\'s corrected input: {"args": [...], "kwargs": {...}}')
    incident: str | None = Field(None, max_length=128)


class SignIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(max_length=64)
    password: str = Field(max_length=1024)


Signed = Annotated[User, Depends(current_user)]


def confirmed(action: str, body: ActIn) -> selection.Selection:
    try:
        return selection.confirmed(
            action, body.filter.rows(), body.digest, body.confirm_count, everything=body.filter.everything
        )
    except selection.StaleSelectionError as error:
        raise StaleError(error) from None
    except selection.SelectionError as error:
        raise ConsoleError(409 if "nothing matches" in str(error) else 422, str(error)) from None


class StaleError(ConsoleError):
    """409 with the new preview, to show instead of the one that was acted on."""

    def __init__(self, error: selection.StaleSelectionError) -> None:
        super().__init__(409, str(error))
        self.preview = error.current.preview()


def one_line(error: ValidationError | RequestValidationError) -> str:
    """pydantic's first complaint, naming the field: `filter.since: String should have at most 256 characters`."""
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"] if part not in ("body", "query", "path"))
    more = f" (and {len(error.errors()) - 1} more)" if len(error.errors()) > 1 else ""
    return f"{where or 'request'}: {first['msg']}{more}"


def validated(model: type[BaseModel], data: dict[str, Any]) -> Any:
    """A form's fields as the API's body model, or a 422 saying what is wrong in one line."""
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise ConsoleError(422, one_line(error)) from None


def actor(user: User, via: str = "console") -> actions.Actor:
    return actions.Actor(user.name, via)


def router() -> APIRouter:
    api = APIRouter(prefix="/api")

    @api.post("/session")
    def start_session(body: SignIn, request: Request) -> dict[str, str]:
        """Sign in: a session cookie, and the CSRF token every changing request carries (X-CSRF-Token)."""
        user = sign_in(request, body.name, body.password)
        return {"user": user.name, "role": str(user.role), "csrf": request.session.get("csrf", "")}

    @api.delete("/session")
    def end_session(request: Request) -> dict[str, str]:
        sign_out(request)
        return {"signed_out": "yes"}

    @api.get("/me")
    def me(user: Signed, request: Request) -> dict[str, str]:
        return {"user": user.name, "role": str(user.role), "csrf": csrf_token(request)}

    @api.get("/dead-letters")
    def list_dead_letters(
        _: Signed,
        rows: Annotated[RowFilter, Depends(query_filter)],
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    ) -> dict[str, Any]:
        """Dead letters, newest failure first, a page at a time."""
        page = store.rows(rows, limit=limit, offset=offset)
        return {"total": store.count(rows), "rows": [listed(row) for row in page]}

    @api.get("/dead-letters/export", response_class=StreamingResponse)
    def export(user: Signed, rows: Annotated[RowFilter, Depends(query_filter)]) -> StreamingResponse:
        """The filtered rows, everything included (inputs opened), one JSON object a line; audited."""
        audit_export(rows, actor(user))
        return StreamingResponse(
            jsonl(rows),
            media_type="application/x-ndjson",
            headers={"content-disposition": 'attachment; filename="dead-letters.jsonl"'},
        )

    @api.get("/dead-letters/{row_id}")
    def dead_letter(_: Signed, row_id: PathId) -> dict[str, Any]:
        """One row with its input, error, traceback and attempts, and its job's timeline."""
        return detail(found(row_id))

    @api.get("/patterns")
    def patterns(_: Signed, rows: Annotated[RowFilter, Depends(query_filter)]) -> list[dict[str, Any]]:
        """Rows grouped by cause (fingerprint), largest group first."""
        return [pattern_shown(pattern) for pattern in store.patterns(rows)]

    @api.post("/dead-letters/preview")
    def preview(_: Signed, body: PreviewIn) -> dict[str, Any]:
        """What an action would act on: the count, a sample and the digest the action must carry."""
        return resolved(body.action, body.filter).preview()

    @api.post("/dead-letters/replay", status_code=202)
    def replay(user: Signed, body: ReplayIn) -> dict[str, Any]:
        """Replay the previewed selection in the background (paced at `rate`): the operation to follow."""
        require(user, Role.OPERATOR, "replaying")
        chosen = confirmed("replay", body)
        operation_id = background.replay(chosen, actor(user), body.incident, body.rate, body.force)
        return operations.get(operation_id)

    @api.post("/dead-letters/discard")
    def discard(user: Signed, body: DiscardIn) -> dict[str, Any]:
        """Discard the previewed selection with a reason."""
        require(user, Role.OPERATOR, "discarding")
        chosen = confirmed("discard", body)
        return {"discarded": actions.discard(chosen, actor(user), body.reason), "selected": chosen.count}

    @api.post("/dead-letters/{row_id}/claim")
    def claim(user: Signed, row_id: PathId) -> dict[str, Any]:
        """Take a failed row into review (failed -> reviewing, claimed by you)."""
        require(user, Role.OPERATOR, "claiming")
        row = found(row_id)
        if not actions.claim(row_id, actor(user)):
            who = f" by {row.claimed_by}" if row.claimed_by else ""
            raise ConsoleError(409, f"dead letter {row_id} is {row.status}{who}: only a failed one can be claimed")
        return listed(found(row_id))

    @api.post("/dead-letters/{row_id}/replay-edited")
    def replay_edited(user: Signed, row_id: PathId, body: EditedReplayIn) -> dict[str, Any]:
        """Replay the row's job from its failed step with a corrected input, checked against the stage's
        declared input model first; the audit log keeps the change."""
        require(user, Role.OPERATOR, "replaying")
        report = edited_replay(row_id, body.input, actor(user), body.incident)
        return {"replayed": len(report.replayed), "refused": report.refused}

    @api.get("/jobs")
    def list_jobs(
        _: Signed,
        pipeline: QueryText = None,
        status: QueryText = None,
        correlation: QueryText = None,
        key: QueryText = None,
        since: Annotated[str, Query(max_length=16)] = "1h",
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
    ) -> list[dict[str, Any]]:
        """Jobs submitted within `since`, newest first (or the one with idempotency key `key`)."""
        return find_jobs(pipeline, status, correlation, key, since, limit)

    @api.get("/jobs/{job_id}")
    def job(_: Signed, job_id: Annotated[str, Path(max_length=200)]) -> dict[str, Any]:
        """A job's timeline (by its id or any of its steps' task ids): steps, fan-out, re-drives, replays."""
        return job_timeline(job_id)

    @api.get("/operations")
    def list_operations(_: Signed) -> list[dict[str, Any]]:
        return operations.recent()

    @api.get("/operations/{operation_id}")
    def operation(_: Signed, operation_id: PathId) -> dict[str, Any]:
        shown = operations.get(operation_id)
        if shown is None:
            raise ConsoleError(404, f"no operation {operation_id}")
        return shown

    @api.post("/operations/{operation_id}/stop")
    def stop_operation(user: Signed, operation_id: PathId) -> dict[str, Any]:
        require(user, Role.OPERATOR, "stopping an operation")
        if operations.get(operation_id) is None:
            raise ConsoleError(404, f"no operation {operation_id}")
        if not actions.stop(operation_id, actor(user)):
            raise ConsoleError(409, f"operation {operation_id} is not running")
        return operations.get(operation_id)

    @api.get("/overview")
    def overview_now(_: Signed) -> dict[str, Any]:
        """Readiness and its reasons, queues, workers, breakers, dead letters by status and new patterns."""
        return overview()

    @api.get("/breakers")
    def list_breakers(_: Signed) -> list[dict[str, Any]]:
        """Each dependency's breaker: state, failures counted, when it opened, seconds to a trial call."""
        return [asdict(breakers.status(name)) for name in dependencies()]

    @api.get("/rate-limits")
    def list_rate_limits(_: Signed) -> list[dict[str, Any]]:
        """Each configured rate limit shared by the workers: calls a second, burst, tokens free now."""
        return [asdict(limit) for limit in ratelimit.statuses()]

    @api.post("/breakers/{name}/{state}")
    def force_breaker(user: Signed, name: Annotated[str, Path(max_length=128)], state: Literal["open", "closed"]
                      ) -> dict[str, Any]:  # fmt: skip
        """Force a breaker open (calls wait out its reset timeout) or closed (failures forgotten)."""
        require(user, Role.ADMIN, "forcing a breaker")
        admin_action(admin.force_breaker, name, state, actor(user))
        return asdict(breakers.status(name))

    @api.get("/quarantine")
    def list_quarantine(_: Signed, limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> dict[str, Any]:
        """The newest messages workers refused to run, with why (bodies on each entry's own page)."""
        listed = [{k: v for k, v in entry.as_dict().items() if k != "body"} for entry in quarantine.entries(limit)]
        return {"total": quarantine.count(), "entries": listed}

    @api.get("/quarantine/{entry_id}")
    def quarantined(_: Signed, entry_id: Annotated[str, Path(max_length=41)]) -> dict[str, Any]:
        return quarantine_entry(entry_id).as_dict()

    @api.post("/quarantine/drop")
    def drop_quarantined(user: Signed, body: DropIn) -> dict[str, int]:
        """Drop exactly these quarantined messages."""
        require(user, Role.ADMIN, "dropping quarantined messages")
        dropped, _ = admin_action(admin.drop_quarantined, body.ids, actor(user))
        return {"dropped": dropped}

    @api.get("/audit")
    def audit_log(
        _: Signed,
        action: QueryText = None,
        actor_name: Annotated[str | None, Query(alias="actor", max_length=128)] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    ) -> dict[str, Any]:
        page, total = audit.entries(limit, offset, action, actor_name)
        return {"total": total, "entries": [entry.as_dict() for entry in page]}

    return api


def overview() -> dict[str, Any]:
    now = report()
    recent = RowFilter(since=store.utcnow() - timedelta(hours=1))
    counted = now.dead_letters.by_status if now.dead_letters else {}
    hour = metrics.activity(60)
    done = sum(minute["completed"] for minute in hour.by_minute)
    failed = sum(minute["failed"] for minute in hour.by_minute)
    return {
        **now.as_dict(),
        "last_hour": {
            "submitted": sum(minute["submitted"] for minute in hour.by_minute),
            "completed": done,
            "failed": failed,
            "failure_rate": round(failed / (done + failed), 4) if done + failed else None,
            "by_minute": hour.by_minute,
            "by_pipeline": hour.by_pipeline,
        },
        "dead_letters_by_status": {status: count for status, count in counted.items() if count},
        "new_patterns": [pattern_shown(pattern) for pattern in store.patterns(recent)[:10]],
    }


def edited_replay(row_id: int, edited: Any, who: actions.Actor, incident: str | None) -> Any:
    try:
        return actions.replay_edited(row_id, edited, who, incident)
    except actions.EditError as error:
        raise ConsoleError(404 if str(error).startswith("no dead letter") else 422, str(error)) from None


def find_jobs(
    pipeline: str | None, status: str | None, correlation: str | None, key: str | None, since: str, limit: int
) -> list[dict[str, Any]]:
    known = namespaces()
    if pipeline and pipeline not in known:
        raise ConsoleError(400, f"no pipeline {pipeline[:64]!r}; known: {', '.join(known)}")
    chosen = [pipeline] if pipeline else known
    if key:
        found = ledger.job_with_key(key, chosen)
        described = describe_job(found[1]) if found else None
        return [for_scripts(described)] if described else []
    try:
        window = filters.duration(since).total_seconds()
    except filters.FilterError as error:
        raise ConsoleError(400, f"since: {error}") from None
    jobs = ledger.recent_jobs(chosen, time.time() - window, status or None, correlation or None, limit)
    return [{**job, **{name: iso(float(job[name])) for name in ("submitted_at", "finished_at") if name in job}}
            for job in jobs]  # fmt: skip


def job_timeline(job_id: str) -> dict[str, Any]:
    found = ledger.job_for(job_id)
    described = describe_job(found[1]) if found else None
    if described is None:
        raise ConsoleError(404, f"no job {job_id[:80]!r} (its record expires VETRO_JOB_TTL after it ends)")
    return for_scripts(described)


def admin_action(action: Any, *args: Any) -> Any:
    try:
        return action(*args)
    except admin.AdminError as error:
        raise ConsoleError(404 if str(error).startswith("no breaker") else 400, str(error)) from None


def quarantine_entry(entry_id: str) -> quarantine.Entry:
    admin_action(admin.quarantine_ids, [entry_id])
    entry = quarantine.get(entry_id)
    if entry is None:
        raise ConsoleError(404, f"no quarantined message {entry_id}")
    return entry


def resolved(action: str, given: FilterIn) -> selection.Selection:
    return selection.resolve(action, given.rows(), everything=given.everything)


def found(row_id: int) -> DeadLetter:
    row = store.get_row(row_id)
    if row is None:
        raise ConsoleError(404, f"no dead letter with id {row_id}")
    return row


def listed(row: DeadLetter) -> dict[str, Any]:
    return {
        **selection.summary(row),
        "pipeline": row.pipeline,
        "failure_class": row.failure_class,
        "exception_type": row.exception_type,
        "fingerprint": row.fingerprint,
        "replay_count": row.replay_count,
        "claimed_by": row.claimed_by,
        "last_failed_at": row.last_failed_at.isoformat(),
    }


def detail(row: DeadLetter) -> dict[str, Any]:
    described = describe_job(row.job_id)
    return {**row.as_dict(), "timeline": for_scripts(described) if described else None}


def pattern_shown(pattern: store.Pattern) -> dict[str, Any]:
    return {
        **vars(pattern),
        "first_seen": pattern.first_seen.isoformat(),
        "last_seen": pattern.last_seen.isoformat(),
    }
