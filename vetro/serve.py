"""The operations endpoint (`vetro serve`): FastAPI under uvicorn, serving what vetro.ops reports.

- `/metrics`: Prometheus's text format.
- `/health/live`: this server answers.
- `/health/ready`: 200 when ready (perhaps degraded, said in the body), 503 with the reasons otherwise.

HTTP basic auth guards every endpoint when VETRO_SERVE_AUTH is set (`user:password`).
"""

from __future__ import annotations

import hmac
import logging
import socket
from typing import Annotated, Any

import uvicorn
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPBasic, HTTPBasicCredentials
from prometheus_client import CONTENT_TYPE_LATEST

from settings import get_settings
from vetro.ops import exposition, report

log = logging.getLogger("vetro.ops")
_basic = HTTPBasic(realm="vetro", auto_error=False)


def _authorized(credentials: Annotated[HTTPBasicCredentials | None, Depends(_basic)]) -> None:
    secret = get_settings().serve_auth
    if secret is None:
        return
    given = f"{credentials.username}:{credentials.password}" if credentials else ""
    if not hmac.compare_digest(given.encode(), secret.get_secret_value().encode()):
        raise HTTPException(401, "not authorized", headers={"WWW-Authenticate": 'Basic realm="vetro"'})


def application() -> FastAPI:
    app = FastAPI(title="vetro", docs_url=None, redoc_url=None, openapi_url=None, dependencies=[Depends(_authorized)])

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(exposition(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/health/live")
    def live() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/health/ready")
    def ready() -> JSONResponse:
        try:
            current = report()
        except Exception as error:  # a service that cannot tell whether it is ready is not
            log.exception("the readiness report failed")
            return JSONResponse({"ready": False, "error": f"{type(error).__name__}: {error}"[:300]}, 503)
        return JSONResponse(current.as_dict(), 200 if current.ready else 503)

    @app.exception_handler(Exception)
    def failed(request: Request, error: Exception) -> JSONResponse:  # a request never ends the server
        log.exception("serving %s failed", request.url.path[:100])
        return JSONResponse({"error": f"{type(error).__name__}: {error}"[:300]}, 500)

    return app


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


def serve(sock: socket.socket, **options: Any) -> None:
    """Serve until interrupted (uvicorn handles SIGINT and SIGTERM: a graceful stop)."""
    config = uvicorn.Config(application(), log_level="warning", access_log=False, **options)
    uvicorn.Server(config).run(sockets=[sock])
