"""The console's users: names, roles and argon2 password hashes, in the file VETRO_CONSOLE_USERS_FILE names.

    {"users": {"ana": {"role": "operator", "password": "$argon2id$..."}}}

`vetro user add` writes it (readable by its owner only); the server reads it on each request, so a
user removed or demoted there is refused at their next one. A user a reverse proxy signs in
(VETRO_CONSOLE_PROXY_USER_HEADER) needs only a role: `vetro user add NAME --role viewer --no-password`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher()
# Checked against when the name is unknown, so a wrong name costs as long as a wrong password.
_UNKNOWN = _hasher.hash("no such user")
MAX_NAME = 64


class Role(IntEnum):
    """Each role may do what the ones below it may."""

    VIEWER = 1  # reads
    OPERATOR = 2  # also claims, replays and discards
    ADMIN = 3  # also forces breakers and drops quarantined messages

    @classmethod
    def named(cls, name: str) -> Role:
        try:
            return cls[name.upper()]
        except KeyError:
            raise UsersFileError(f"role {name!r}: expected viewer, operator or admin") from None

    def __str__(self) -> str:
        return self.name.lower()


class UsersFileError(ValueError):
    """The users file cannot be read, or a user in it is malformed: one line saying which."""


@dataclass(frozen=True)
class User:
    name: str
    role: Role


def _read(path: Path) -> dict[str, dict[str, str]]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UsersFileError(f"{path}: not a users file ({type(error).__name__}: {error})") from None
    users = document.get("users") if isinstance(document, dict) else None
    if not isinstance(users, dict):
        raise UsersFileError(f'{path}: expected {{"users": {{name: {{"role": ..., "password": ...}}}}}}')
    return users


def users(path: Path) -> dict[str, User]:
    """Every user in the file, checked: a bad role or a missing hash names the user."""
    found = {}
    for name, entry in _read(path).items():
        if not isinstance(entry, dict) or not isinstance(entry.get("password", ""), str):
            raise UsersFileError(f'{path}: user {name!r} is not {{"role": ..., "password": ...}}')
        found[name] = User(name, Role.named(str(entry.get("role", ""))))
    return found


def authenticate(path: Path, name: str, password: str) -> User | None:
    """The user, if the password is theirs; None otherwise (as slowly for an unknown name)."""
    entry = _read(path).get(name) if len(name) <= MAX_NAME else None
    stored = entry.get("password") if isinstance(entry, dict) else None
    try:
        _hasher.verify(stored if isinstance(stored, str) else _UNKNOWN, password)
    except (VerificationError, InvalidHashError):
        return None
    if not isinstance(stored, str):
        return None
    return User(name, Role.named(str(entry.get("role", ""))))


def add(path: Path, name: str, role: Role, password: str | None) -> None:
    """Add the user, or change their role and password (None: signed in only by a trusted proxy); the file
    stays readable by its owner only."""
    if (
        not name
        or len(name) > MAX_NAME
        or not name.replace("-", "").replace("_", "").replace(".", "").replace("@", "").isalnum()
    ):
        raise UsersFileError(f"user name {name[:80]!r}: letters, digits, '-', '_', '.' and '@', at most {MAX_NAME}")
    if password is not None and len(password) < 12:
        raise UsersFileError("a password needs at least 12 characters")
    everyone = _read(path)
    everyone[name] = {"role": str(role), **({"password": _hasher.hash(password)} if password is not None else {})}
    _write(path, everyone)


def remove(path: Path, name: str) -> bool:
    everyone = _read(path)
    if everyone.pop(name, None) is None:
        return False
    _write(path, everyone)
    return True


def _write(path: Path, everyone: dict[str, dict[str, str]]) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    descriptor = os.open(temporary, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        json.dump({"users": everyone}, file, indent=2)
    os.replace(temporary, path)  # readers never see half a file
