"""`vetro serve`: one ASGI application (FastAPI under uvicorn) for operators and their tools.

- `/metrics`: Prometheus's text format; `/health/live`, `/health/ready` (200 ready, perhaps degraded;
  503 with the reasons). VETRO_SERVE_AUTH (`user:password`, HTTP basic) guards these three, so a
  scraper needs no console user.
- `/api/...`: the console's JSON API (OpenAPI at /api/openapi.json); `/...`: the console's pages.
  Both need a signed-in user (vetro.web.security).
"""

from __future__ import annotations

import hmac
import logging
import secrets
import socket
from pathlib import Path
from typing import Annotated, Any

import uvicorn
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.security import HTTPBasic, HTTPBasicCredentials
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.sessions import SessionMiddleware

from settings import get_settings
from vetro.ops import exposition, report
from vetro.web import api, pages
from vetro.web.api import StaleError, one_line
from vetro.web.security import (
    SESSION_COOKIE,
    SESSION_SECONDS,
    Access,
    ConsoleError,
    NotSignedInError,
    check_csrf,
    is_loopback,
)
from vetro.web.users import UsersFileError, users

log = logging.getLogger("vetro.ops")
_basic = HTTPBasic(realm="vetro", auto_error=False)
# What a browser may load and where a page may be framed: only the console's own files, never inside another site.
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
}


def _ops_authorized(credentials: Annotated[HTTPBasicCredentials | None, Depends(_basic)]) -> None:
    secret = get_settings().serve_auth
    if secret is None:
        return
    given = f"{credentials.username}:{credentials.password}" if credentials else ""
    if not hmac.compare_digest(given.encode(), secret.get_secret_value().encode()):
        raise HTTPException(401, "not authorized", headers={"WWW-Authenticate": 'Basic realm="vetro"'})


def application(access: Access, secure_cookies: bool = True) -> FastAPI:
    app = FastAPI(
        title="vetro",
        summary="The operator console's API: dead letters, their patterns, replays, discards, the audit log.",
        openapi_url="/api/openapi.json",
        docs_url=None,
        redoc_url=None,
        dependencies=[Depends(check_csrf)],
    )
    app.state.access = access
    secret = get_settings().console_secret
    app.add_middleware(
        SessionMiddleware,
        secret_key=secret.get_secret_value() if secret else secrets.token_urlsafe(32),
        session_cookie=SESSION_COOKIE,
        max_age=SESSION_SECONDS,
        # Lax: a link from elsewhere (chat, a ticket) arrives signed in; a cross-site post comes without
        # the cookie, and every change needs the session's CSRF token besides.
        same_site="lax",
        https_only=secure_cookies,
    )

    @app.middleware("http")
    async def security_headers(request: Request, call_next: Any) -> Response:
        response = await call_next(request)
        response.headers.update(SECURITY_HEADERS)
        return response

    _operations(app)
    app.include_router(api.router())
    app.include_router(pages.router())
    app.mount("/static", StaticFiles(directory=Path(__file__).parent / "web" / "static"), name="static")
    _errors(app)
    return app


def _operations(app: FastAPI) -> None:
    guarded = [Depends(_ops_authorized)]

    @app.get("/metrics", dependencies=guarded, include_in_schema=False)
    def metrics() -> Response:
        return Response(exposition(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/health/live", dependencies=guarded, include_in_schema=False)
    def live() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/health/ready", dependencies=guarded, include_in_schema=False)
    def ready() -> JSONResponse:
        try:
            current = report()
        except Exception as error:  # a service that cannot tell whether it is ready is not
            log.exception("the readiness report failed")
            return JSONResponse({"ready": False, "error": f"{type(error).__name__}: {error}"[:300]}, 503)
        return JSONResponse(current.as_dict(), 200 if current.ready else 503)


def _wants_json(request: Request) -> bool:
    return request.url.path.startswith(("/api/", "/metrics", "/health/"))


def _refused(request: Request, status: int, message: str, **extra: Any) -> Response:
    """One line, as JSON for the API and the operations endpoints, as a page for people."""
    if _wants_json(request):
        return JSONResponse({"error": message, **extra}, status)
    return pages.render(request, "error.html", status=status, message=message)


def _errors(app: FastAPI) -> None:
    @app.exception_handler(ConsoleError)
    def console_error(request: Request, error: ConsoleError) -> Response:
        if isinstance(error, NotSignedInError) and not _wants_json(request):
            return RedirectResponse(f"/login?next={request.url.path}", status_code=303)
        extra = {"preview": error.preview} if isinstance(error, StaleError) else {}
        return _refused(request, error.status, error.message, **extra)

    @app.exception_handler(RequestValidationError)
    def invalid(request: Request, error: RequestValidationError) -> Response:
        return _refused(request, 422, one_line(error))

    @app.exception_handler(StarletteHTTPException)
    def http_error(request: Request, error: StarletteHTTPException) -> Response:
        if _wants_json(request):
            return JSONResponse({"error": str(error.detail)}, error.status_code, headers=error.headers)
        return _refused(request, error.status_code, str(error.detail))

    @app.exception_handler(Exception)
    def failed(request: Request, error: Exception) -> Response:  # a request never ends the server
        log.exception("serving %s failed", request.url.path[:100])
        return _refused(request, 500, f"{type(error).__name__}: {error}"[:300])


def listening(host: str | None = None, port: int | None = None) -> socket.socket:
    """A socket bound to the endpoint's address (raises OSError, for the command to say in one line)."""
    settings = get_settings()
    address = (host or settings.serve_host, port or settings.serve_port)
    family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


def access_for(sock: socket.socket) -> Access:
    """Who may use the console served on `sock` (ConsoleError, in one line, when nobody safely may)."""
    settings = get_settings()
    access = Access.for_address(
        sock.getsockname()[0],
        settings.console_users_file,
        settings.console_proxy_user_header,
        settings.console_trusted_proxies,
    )
    if access.users_file is not None:
        _check_users_file(access.users_file)
    return access


def _check_users_file(path: Path) -> None:
    """Read the users file once at start, so a broken one stops the server now rather than failing every
    request later (a missing one the settings already refuse)."""
    try:
        users(path)
    except UsersFileError as error:
        detail = str(error).removeprefix(f"{path}: ")
        raise ConsoleError(500, f"the console's users file {path} (VETRO_CONSOLE_USERS_FILE): {detail}") from None


def serve(sock: socket.socket, access: Access, **options: Any) -> None:
    """Serve until interrupted (uvicorn handles SIGINT and SIGTERM: a graceful stop). Cookies are Secure
    unless the console is on loopback, where a browser keeps them over plain HTTP too."""
    secure = not is_loopback(sock.getsockname()[0])
    # proxy_headers off: the client is the connection's peer, so a trusted proxy's user header is believed
    # only from the proxy itself (uvicorn would otherwise take the address from its X-Forwarded-For).
    config = uvicorn.Config(
        application(access, secure), log_level="warning", access_log=False, proxy_headers=False, **options
    )
    uvicorn.Server(config).run(sockets=[sock])
