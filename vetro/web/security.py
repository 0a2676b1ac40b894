"""Who is asking, and may they: sign-in, sessions, roles, CSRF and the sign-in rate limit, all checked on
the server for every request (a hidden button is never the check; Oban Web 2.12.5 learned that).

- Users and roles come from VETRO_CONSOLE_USERS_FILE. Without one, the console serves only on
  loopback, where everyone who reaches it is the admin "local" (the demo's console).
- A session is a signed cookie (HttpOnly, SameSite=Lax; Secure unless served on loopback) that
  holds the user's name and a CSRF token. The role is read from the users file on every request.
- Every changing request carries the session's CSRF token (a form field or X-CSRF-Token), and an
  Origin, when the browser sends one, must name the console's own host (behind a proxy that ends TLS,
  the browser's https origin and the server's http request share it): a cross-site post has neither.
"""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from fastapi import Request
from redis import RedisError

from pipeline.store import redis_client, transaction
from vetro.web.users import Role, User, authenticate, users

SESSION_COOKIE = "vetro_session"
SESSION_SECONDS = 8 * 3600
API_SIGN_IN = "/api/session"
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
FAILED_SIGN_INS = 10  # from one address within SIGN_IN_WINDOW, then refused until it passes
SIGN_IN_WINDOW = 900
FAILED_SIGN_INS_KEY = "vetro:console:failed-sign-ins:"  # + the client's address; lives SIGN_IN_WINDOW
LOCAL = User("local", Role.ADMIN)


class ConsoleError(Exception):
    """A refused request: its status and one line saying why (JSON under /api, a page elsewhere)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class NotSignedInError(ConsoleError):
    def __init__(self) -> None:
        super().__init__(401, "sign in first")


@dataclass(frozen=True)
class Access:
    """How this server knows its users: a users file (with, perhaps, a reverse proxy that signs them in), or
    (on loopback only) nobody but the local admin."""

    users_file: Path | None
    local: bool
    proxy_header: str | None = None
    proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()

    @classmethod
    def for_address(
        cls, host: str, users_file: Path | None, proxy_header: str | None = None, proxies: list[str] | None = None
    ) -> Access:
        networks = tuple(ipaddress.ip_network(proxy, strict=False) for proxy in proxies or [])
        if users_file is not None:
            return cls(users_file, local=False, proxy_header=proxy_header, proxies=networks)
        if proxy_header:
            raise ConsoleError(500, "VETRO_CONSOLE_PROXY_USER_HEADER needs VETRO_CONSOLE_USERS_FILE: it gives roles")
        if is_loopback(host):
            return cls(None, local=True)
        raise ConsoleError(
            500,
            f"the console listens on {host}, beyond loopback, and has no users: set VETRO_CONSOLE_USERS_FILE "
            "(make it with `vetro user add`) or listen on 127.0.0.1",
        )

    def proxied_user(self, request: Request) -> str | None:
        """The user a trusted proxy names in its header; None when there is none or the sender is not trusted."""
        if not self.proxy_header or request.client is None:
            return None
        try:
            sender = ipaddress.ip_address(request.client.host)
        except ValueError:
            return None
        if not any(sender in network for network in self.proxies):
            return None
        return request.headers.get(self.proxy_header) or None


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"


def access(request: Request) -> Access:
    return request.app.state.access


def csrf_token(request: Request) -> str:
    """The session's CSRF token (made on first use: a page before sign-in has one for its form)."""
    token = request.session.get("csrf")
    if not token:
        token = request.session["csrf"] = secrets.token_urlsafe(32)
    return token


def current_user(request: Request) -> User:
    """The signed-in user with the role the users file gives them now; NotSignedInError otherwise."""
    given = access(request)
    if given.local:
        return LOCAL
    proxied = given.proxied_user(request)
    if proxied is not None:
        user = users(given.users_file).get(proxied)
        if user is None:
            raise ConsoleError(403, f"{proxied[:64]} is not a console user (vetro user add {proxied[:64]} ...)")
        return user
    name = request.session.get("user")
    signed_at = request.session.get("at", 0)
    user = users(given.users_file).get(name) if isinstance(name, str) else None
    if user is None or time.time() - signed_at > SESSION_SECONDS:
        raise NotSignedInError()
    return user


def require(user: User, role: Role, doing: str) -> None:
    if user.role < role:
        article = "an" if str(user.role)[0] in "aeiou" else "a"
        raise ConsoleError(403, f"{user.name} is {article} {user.role}: {doing} needs the {role} role")


async def check_csrf(request: Request) -> None:
    """A changing request must come from the console's own pages (or an API client holding the token)."""
    if request.method not in UNSAFE_METHODS:
        return
    origin = request.headers.get("origin")
    if origin and urlsplit(origin).netloc != request.headers.get("host", request.url.netloc):
        raise ConsoleError(403, "refused: the request came from another site")
    if request.url.path == API_SIGN_IN:
        return  # no session yet to hold a token: the password is the proof, and a new session follows
    given = request.headers.get("x-csrf-token")
    if given is None and "form" in request.headers.get("content-type", ""):
        given = (await request.form()).get("csrf")
    expected = request.session.get("csrf")
    if not expected or not isinstance(given, str) or not hmac.compare_digest(given, expected):
        raise ConsoleError(403, "refused: the form is stale or came from elsewhere (no valid CSRF token); reload")


def _sign_in_key(request: Request) -> str:
    return f"{FAILED_SIGN_INS_KEY}{request.client.host if request.client else 'unknown'}"


def sign_in(request: Request, name: str, password: str) -> User:
    """Check the password and start a session; refused after too many failures from one address."""
    given = access(request)
    if given.local:
        return LOCAL
    key = _sign_in_key(request)
    try:
        failures = int(redis_client().get(key) or 0)
    except RedisError:
        failures = 0  # the limit needs Redis; a sign-in does not
    if failures >= FAILED_SIGN_INS:
        raise ConsoleError(429, "too many failed sign-ins from this address: wait 15 minutes")
    user = authenticate(given.users_file, name, password)
    if user is None:
        with contextlib.suppress(RedisError):  # the limit needs Redis; a sign-in does not
            transaction(key).incr(key).expire(key, SIGN_IN_WINDOW).execute()
        raise ConsoleError(401, "wrong name or password")
    request.session.clear()  # a new session on sign-in: a token planted before it is worthless
    request.session.update({"user": user.name, "at": int(time.time()), "csrf": secrets.token_urlsafe(32)})
    return user


def sign_out(request: Request) -> None:
    request.session.clear()
