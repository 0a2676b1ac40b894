"""`vetro user` (the console's users) and `vetro audit` (who did what to dead letters)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer
from rich.table import Table

from settings import get_settings
from vetro.console import fail, tables
from vetro.console import messages as err

user_cli = typer.Typer(help="The console's users: add, remove, list.", no_args_is_help=True)
audit_cli = typer.Typer(help="The audit log: who did what to which dead letters.", no_args_is_help=True)

FILE_OPTION = typer.Option(None, "--file", help="Users file (default: VETRO_CONSOLE_USERS_FILE, else ./users.json).")


def _users_file(given: Path | None) -> Path:
    return given or get_settings().console_users_file or Path("users.json")


def _password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    return typer.prompt("password", hide_input=True, confirmation_prompt=True, err=True)


@user_cli.command("add")
def add_user(
    name: str = typer.Argument(..., help="The user's name."),
    role: str = typer.Option(..., help="viewer (reads), operator (reviews, replays, discards) or admin."),
    file: Path = FILE_OPTION,
    password_stdin: bool = typer.Option(False, help="Read the password from standard input's first line."),
    no_password: bool = typer.Option(False, help="Signed in only by a trusted reverse proxy: a role, no password."),
) -> None:
    """Add a user (or change one's role and password); the password is stored as an argon2 hash."""
    from vetro.web.users import Role, UsersFileError, add

    path = _users_file(file)
    try:
        add(path, name, Role.named(role), None if no_password else _password(password_stdin))
    except UsersFileError as error:
        raise fail(str(error)) from None
    err.print(f"{name} ({role}) in {path}; the console reads it as VETRO_CONSOLE_USERS_FILE={path}", highlight=False)


@user_cli.command("remove")
def remove_user(name: str = typer.Argument(...), file: Path = FILE_OPTION) -> None:
    """Remove a user: refused at their next request."""
    from vetro.web.users import UsersFileError, remove

    try:
        removed = remove(_users_file(file), name)
    except UsersFileError as error:
        raise fail(str(error)) from None
    if not removed:
        raise fail(f"no user {name!r} in {_users_file(file)}")
    err.print(f"removed {name}", highlight=False)


@user_cli.command("list")
def list_users(file: Path = FILE_OPTION) -> None:
    """The users and their roles (never their hashes)."""
    from vetro.web.users import UsersFileError, users

    try:
        found = users(_users_file(file))
    except UsersFileError as error:
        raise fail(str(error)) from None
    for user in found.values():
        print(f"{user.name}\t{user.role}")


@audit_cli.command("list")
def list_audit(
    action: str = typer.Option(None, help="Only this action (replay, discard, claim, ...)."),
    actor: str = typer.Option(None, help="Only what this user did."),
    limit: int = typer.Option(50, min=1, max=10_000),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """The newest entries first: who, when, through which face, on how many rows, and what came of it."""
    from dlq import audit
    from vetro.dead_letters_cli import database_ready

    database_ready()
    found, total = audit.entries(limit=limit, action=action, actor=actor)
    if as_json:
        print(json.dumps([entry.as_dict() for entry in found], indent=2, default=str))
        return
    table = Table()
    for column in ("id", "at (UTC)", "who", "via", "action", "rows", "incident / reason", "outcome"):
        table.add_column(column, overflow="fold")
    for entry in found:
        table.add_row(
            str(entry.id),
            f"{entry.at:%Y-%m-%d %H:%M:%S}",
            entry.actor,
            entry.via,
            entry.action,
            str(entry.count),
            entry.incident or entry.reason or "",
            json.dumps(entry.outcome, default=str)[:120],
        )
    tables().print(table)
    err.print(f"{len(found)} of {total} entries", highlight=False)
