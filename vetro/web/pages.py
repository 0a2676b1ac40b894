"""The console's pages, rendered on the server (Jinja2): the same operations as the API and the CLI, with
forms that work without JavaScript. console.js only refreshes what changes (an operation's progress)."""

from __future__ import annotations

import difflib
import json
import pathlib
import time
from typing import Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Depends, Form, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from dlq import actions, audit, operations, selection, store
from dlq.filters import FAILURE_CLASSES
from dlq.models import Status
from dlq.store import RowFilter
from pipeline.adapter.app import app
from pipeline.dependencies import breakers, ratelimit
from pipeline.jobs import quarantine
from pipeline.jobs.pipelines import dependencies, namespaces
from pipeline.sealing import SealedValueError, open_document
from vetro import admin
from vetro.web.api import (
    DiscardIn,
    PathId,
    ReplayIn,
    StaleError,
    actor,
    admin_action,
    confirmed,
    detail,
    edited_replay,
    find_jobs,
    found,
    job_timeline,
    overview,
    pattern_shown,
    quarantine_entry,
    query_filter,
    validated,
)
from vetro.web.background import replay as replay_in_background
from vetro.web.security import ConsoleError, csrf_token, current_user, require, sign_in, sign_out
from vetro.web.shared import shared
from vetro.web.users import Role, User

templates = Jinja2Templates(directory=pathlib.Path(__file__).parent / "templates")
FILTER_FIELDS = ("stage", "status", "failure_class", "error", "fingerprint", "job", "key", "correlation", "search",
                 "since", "until")  # fmt: skip
PAGE_SIZE = 50


def render(request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
    """A page; a CSRF token (and so a session cookie) only for a signed-in user's page or the sign-in form:
    an error page answering a request that came without the cookie must not replace the signed-in one."""
    user = context.pop("user", None)
    flash = request.session.pop("flash", None) if user else None
    csrf = csrf_token(request) if user or name == "login.html" else ""
    return templates.TemplateResponse(
        request, name, {"user": user, "csrf": csrf, "flash": flash, "Role": Role, **context}, status_code=status
    )


def shown_filter(request: Request) -> dict[str, str]:
    """The filter fields the address bar gives, as typed (to fill the form and the links again)."""
    return {name: request.query_params[name] for name in FILTER_FIELDS if request.query_params.get(name)}


def diff_lines(kept: dict[str, Any]) -> str:
    """An edited input's change as a unified diff (opened, when sealed, with the configured keys)."""
    try:
        opened = open_document(kept)
    except SealedValueError:
        return "(sealed: no configured key opens it)"
    change = opened.get("redacted", opened) if isinstance(opened, dict) else {}
    shown = [json.dumps(change.get(side), indent=2, sort_keys=True).splitlines() for side in ("before", "after")]
    return "\n".join(difflib.unified_diff(*shown, "before", "after", lineterm=""))


def ago(at: float | None) -> str:
    """'3 min ago', for a time people compare with now ('' when there is none)."""
    if not at:
        return ""
    seconds = max(0, int(time.time() - at))
    if seconds < 120:
        return f"{seconds} s ago"
    return f"{seconds // 60} min ago" if seconds < 7200 else f"{seconds // 3600} h ago"


def see_other(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def local_path(target: str | None) -> str:
    """Where to go after signing in: a path of this console, never another site (//evil, https://...)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


Signed = Annotated[User, Depends(current_user)]
FilterFromQuery = Annotated[RowFilter, Depends(query_filter)]


def router() -> APIRouter:
    pages = APIRouter(include_in_schema=False)

    @pages.get("/login", response_class=HTMLResponse)
    def login_page(request: Request, next: str = "/") -> Response:
        return render(request, "login.html", next=local_path(next))

    @pages.post("/login")
    def login(
        request: Request,
        name: Annotated[str, Form(max_length=64)],
        password: Annotated[str, Form(max_length=1024)],
        next: Annotated[str, Form(max_length=2000)] = "/",
    ) -> Response:
        try:
            sign_in(request, name, password)
        except ConsoleError as error:
            return render(request, "login.html", status=error.status, error=error.message, next=local_path(next))
        return see_other(local_path(next))

    @pages.post("/logout")
    def logout(request: Request) -> Response:
        sign_out(request)
        return see_other("/login")

    @pages.get("/", response_class=HTMLResponse)
    def home(request: Request, user: Signed) -> Response:
        return render(request, "overview.html", user=user, now=shared(request, "overview", overview))

    @pages.get("/breakers", response_class=HTMLResponse)
    def breakers_page(request: Request, user: Signed) -> Response:
        shown, limits = shared(
            request, "breakers", lambda: ([breakers.status(name) for name in dependencies()], ratelimit.statuses())
        )
        return render(request, "breakers.html", user=user, breakers=shown, limits=limits, ago=ago)

    @pages.post("/breakers/{name}/{state}")
    def force(request: Request, user: Signed, name: Annotated[str, Path(max_length=128)], state: str) -> Response:
        require(user, Role.ADMIN, "forcing a breaker")
        admin_action(admin.force_breaker, name, state, actor(user))
        request.session["flash"] = f"breaker {name} forced {state}"
        return see_other("/breakers")

    @pages.get("/quarantine", response_class=HTMLResponse)
    def quarantine_page(request: Request, user: Signed) -> Response:
        entries, total = shared(request, "quarantine", lambda: (quarantine.entries(200), quarantine.count()))
        return render(request, "quarantine.html", user=user, entries=entries, total=total)

    @pages.get("/quarantine/{entry_id}", response_class=HTMLResponse)
    def quarantined(request: Request, user: Signed, entry_id: Annotated[str, Path(max_length=41)]) -> Response:
        return render(request, "quarantined.html", user=user, entry=quarantine_entry(entry_id))

    @pages.post("/quarantine/drop")
    async def drop(request: Request, user: Signed) -> Response:
        require(user, Role.ADMIN, "dropping quarantined messages")
        chosen = [str(value) for value in (await request.form()).getlist("ids")]
        if not chosen:
            request.session["flash"] = "nothing selected: nothing dropped"
            return see_other("/quarantine")
        dropped, _ = admin_action(admin.drop_quarantined, chosen, actor(user))
        request.session["flash"] = f"dropped {dropped} message(s)"
        return see_other("/quarantine")

    @pages.get("/dead-letters", response_class=HTMLResponse)
    def dead_letters(request: Request, user: Signed, rows: FilterFromQuery, page: int = 1) -> Response:
        page = max(1, min(page, 1_000_000))
        given = shown_filter(request)
        total, listed = shared(
            request,
            ("dead-letters", tuple(sorted(given.items())), page),
            lambda: (store.count(rows), store.rows(rows, limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE)),
        )
        return render(
            request,
            "dead_letters.html",
            user=user,
            rows=listed,
            total=total,
            page=page,
            pages=max(1, -(-total // PAGE_SIZE)),
            given=given,
            query=urlencode(given),
            statuses=[status.value for status in Status],
            classes=FAILURE_CLASSES,
        )

    @pages.get("/dead-letters/preview", response_class=HTMLResponse)
    def preview(request: Request, user: Signed, rows: FilterFromQuery, action: str = "replay") -> Response:
        if action not in ("replay", "discard"):
            raise ConsoleError(400, f"action {action[:40]!r}: expected replay or discard")
        chosen = selection.resolve(action, rows)
        return render(request, "preview.html", user=user, preview=chosen.preview(), given=shown_filter(request))

    @pages.post("/dead-letters/act", response_class=HTMLResponse)
    async def act(request: Request, user: Signed) -> Response:
        form = await request.form()
        action = str(form.get("action", ""))
        if action not in ("replay", "discard"):
            raise ConsoleError(400, f"action {action[:40]!r}: expected replay or discard")
        require(user, Role.OPERATOR, f"{action.removesuffix('e')}ing")
        given = {name: str(form[name]) for name in FILTER_FIELDS if form.get(name)}
        ids = [int(value) for value in form.getlist("ids") if str(value).isdigit()]
        fields: dict[str, Any] = {"filter": {**given, "ids": ids}, "digest": form.get("digest", "")}
        if form.get("confirm_count"):
            fields["confirm_count"] = form.get("confirm_count")
        try:
            if action == "replay":
                body = validated(
                    ReplayIn, {**fields, "incident": form.get("incident") or None, "rate": form.get("rate") or None}
                )
                chosen = confirmed("replay", body)
                operation_id = replay_in_background(chosen, actor(user), body.incident, body.rate, body.force)
                return see_other(f"/operations/{operation_id}")
            body = validated(DiscardIn, {**fields, "reason": form.get("reason", "")})
            chosen = confirmed("discard", body)
            discarded = actions.discard(chosen, actor(user), body.reason)
        except StaleError as error:
            return render(
                request, "preview.html", 409, user=user, preview=error.preview, given=given, error=error.message
            )
        request.session["flash"] = f"discarded {discarded} dead letter(s)"
        return see_other(f"/dead-letters?{urlencode(given)}")

    @pages.get("/dead-letters/{row_id}", response_class=HTMLResponse)
    def dead_letter(request: Request, user: Signed, row_id: PathId) -> Response:
        shown = detail(found(row_id))
        one = selection.resolve("replay", RowFilter(ids=[row_id]))
        history, _ = audit.entries(limit=20, ids_digest=one.digest)  # what was done to this row alone
        model = getattr(app.tasks.get(f"{shown['pipeline']}.{shown['stage']}"), "input_model", None)
        return render(request, "dead_letter.html", user=user, row=shown, digest=one.digest, history=history,
                      input_model=model.__name__ if model else None)  # fmt: skip

    @pages.post("/dead-letters/{row_id}/claim")
    def claim(request: Request, user: Signed, row_id: PathId) -> Response:
        require(user, Role.OPERATOR, "claiming")
        row = found(row_id)
        claimed = actions.claim(row_id, actor(user))
        request.session["flash"] = "claimed: you are reviewing it" if claimed else f"not claimed: it is {row.status}"
        return see_other(f"/dead-letters/{row_id}")

    @pages.post("/dead-letters/{row_id}/edit")
    def replay_edited(
        request: Request,
        user: Signed,
        row_id: PathId,
        edited: Annotated[str, Form(max_length=1_000_000)],
        incident: Annotated[str, Form(max_length=128)] = "",
    ) -> Response:
        require(user, Role.OPERATOR, "replaying")
        try:
            parsed = json.loads(edited)
        except ValueError as error:
            raise ConsoleError(422, f"the input is not JSON: {error}") from None
        report = edited_replay(row_id, parsed, actor(user), incident or None)
        replayed = "replayed with the edited input" if report.replayed else f"not replayed: {report.refused}"
        request.session["flash"] = replayed
        return see_other(f"/dead-letters/{row_id}")

    @pages.get("/jobs", response_class=HTMLResponse)
    def jobs_page(
        request: Request,
        user: Signed,
        job: Annotated[str | None, Query(max_length=200)] = None,
        pipeline: Annotated[str | None, Query(max_length=64)] = None,
        status: Annotated[str | None, Query(max_length=32)] = None,
        correlation: Annotated[str | None, Query(max_length=256)] = None,
        key: Annotated[str | None, Query(max_length=256)] = None,
        since: Annotated[str, Query(max_length=16)] = "1h",
    ) -> Response:
        if job:
            return see_other(f"/jobs/{quote(job, safe='')}")
        found = find_jobs(pipeline or None, status or None, correlation or None, key or None, since, PAGE_SIZE)
        given = {"pipeline": pipeline or "", "status": status or "", "correlation": correlation or "",
                 "key": key or "", "since": since}  # fmt: skip
        return render(request, "jobs.html", user=user, jobs=found, given=given, pipelines=namespaces())

    @pages.get("/jobs/{job_id}", response_class=HTMLResponse)
    def job_page(request: Request, user: Signed, job_id: Annotated[str, Path(max_length=200)]) -> Response:
        return render(request, "job.html", user=user, job=job_timeline(job_id))

    @pages.get("/patterns", response_class=HTMLResponse)
    def patterns(request: Request, user: Signed, rows: FilterFromQuery) -> Response:
        found_patterns = shared(
            request,
            ("patterns", tuple(sorted(shown_filter(request).items()))),
            lambda: [pattern_shown(pattern) for pattern in store.patterns(rows)],
        )
        return render(request, "patterns.html", user=user, patterns=found_patterns, given=shown_filter(request))

    @pages.get("/operations", response_class=HTMLResponse)
    def operations_page(request: Request, user: Signed) -> Response:
        return render(request, "operations.html", user=user, operations=operations.recent(50))

    @pages.get("/operations/{operation_id}", response_class=HTMLResponse)
    def operation_page(request: Request, user: Signed, operation_id: PathId) -> Response:
        shown = operations.get(operation_id)
        if shown is None:
            raise ConsoleError(404, f"no operation {operation_id}")
        return render(request, "operation.html", user=user, operation=shown)

    @pages.post("/operations/{operation_id}/stop")
    def stop(request: Request, user: Signed, operation_id: PathId) -> Response:
        require(user, Role.OPERATOR, "stopping an operation")
        if actions.stop(operation_id, actor(user)):
            request.session["flash"] = "stopping: the replays already sent go on"
        return see_other(f"/operations/{operation_id}")

    @pages.get("/audit", response_class=HTMLResponse)
    def audit_page(request: Request, user: Signed, action: str | None = None, page: int = 1) -> Response:
        page = max(1, min(page, 1_000_000))
        entries, total = audit.entries(PAGE_SIZE, (page - 1) * PAGE_SIZE, action or None)
        diffs = {entry.id: diff_lines(entry.diff) for entry in entries if entry.diff}
        return render(request, "audit.html", user=user, entries=entries, total=total, page=page,
                      action=action or "", diffs=diffs)  # fmt: skip

    return pages
