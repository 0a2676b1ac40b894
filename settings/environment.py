"""Which environment variables name a setting: a fleet's configuration that names nothing is refused.

pydantic-settings ignores a variable under a class's prefix that names no field (`extra="ignore"`,
needed because the prefix is shared with the process environment), so a typo or a renamed setting
would silently leave the default in place. Every settings class is checked here when it is first read:
each variable under its prefix, in the environment and in its `.env` file, must name a field (and,
through `__`, a field of a nested model or a key of a mapping); a renamed one names its new name.

Two families are recognised and ignored: the tests' and benchmarks' own variables (`VETRO_TEST_*`),
silently (they are set for whole test runs, so every CLI call would print the warning), and, with one
warning line, the service links Kubernetes injects for a Service whose name starts with the prefix
(`VETRO_PORT=tcp://10.0.0.7:9808`, `VETRO_SERVICE_HOST=10.0.0.7`: the trap flower#738 fell into),
recognised by their values as well as their names.
"""

from __future__ import annotations

import difflib
import ipaddress
import logging
import os
import re
import types
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

from dotenv import dotenv_values
from pydantic import BaseModel
from pydantic_settings import BaseSettings

log = logging.getLogger("vetro.settings")

TEST_FAMILY = "VETRO_TEST_"  # the tests' and benchmarks' own variables: never settings

# Variables of earlier releases -> what replaced them. A fleet upgrading is told, not given the default.
RENAMED = {
    "VETRO_PARTNER_URL": "ORDERS_PARTNER_URL",
    "VETRO_CUSTOMER_SERVICE_URL": "ORDERS_CUSTOMER_SERVICE_URL",
    "VETRO_ROUTES": "ORDERS_ROUTES",
    "VETRO_DESTINATION_URLS": "ORDERS_DESTINATION_URLS",
    "VETRO_DEMO_TRANSFORM_BUG": "ORDERS_TRANSFORM_BUG",
    "VETRO_IDEMPOTENCY_TTL": "VETRO_JOB_TTL",
    "VETRO_JOB_RECORD_TTL": "VETRO_JOB_TTL",
    "VETRO_RESULT_TTL": "VETRO_JOB_TTL",
}

_PROTOCOL = r"(TCP|UDP|SCTP)"
_ADDRESS = re.compile(r"^(tcp|udp|sctp)://\[?[0-9A-Fa-f:.]+\]?:\d{1,5}$")
# Kubernetes' service links for a Service S (docker-links style): S_SERVICE_HOST, S_SERVICE_PORT[_NAME],
# S_PORT, S_PORT_<port>_<PROTO>[_PROTO|_PORT|_ADDR]; each kind with the value it always has.
_SERVICE_LINKS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"^(\w+_)?SERVICE_HOST$"), "address"),
    (re.compile(r"^(\w+_)?SERVICE_PORT(_\w+)?$"), "port"),
    (re.compile(r"^(\w+_)?PORT$"), "url"),
    (re.compile(rf"^(\w+_)?PORT_\d{{1,5}}_{_PROTOCOL}$"), "url"),
    (re.compile(rf"^(\w+_)?PORT_\d{{1,5}}_{_PROTOCOL}_PROTO$"), "protocol"),
    (re.compile(rf"^(\w+_)?PORT_\d{{1,5}}_{_PROTOCOL}_PORT$"), "port"),
    (re.compile(rf"^(\w+_)?PORT_\d{{1,5}}_{_PROTOCOL}_ADDR$"), "address"),
]


def check_environment(cls: type[BaseSettings]) -> str | None:
    """The first variable under `cls`'s prefix that names no setting, as one line (None: all name one).
    Logs one warning line for the Kubernetes service links it ignores."""
    prefix = str(cls.model_config.get("env_prefix") or "").upper()
    if not prefix:
        return None
    delimiter = cls.model_config.get("env_nested_delimiter") or None
    ignored = []
    for name, value in sorted(_variables(cls).items()):
        upper = name.upper()
        if not upper.startswith(prefix):
            continue
        if upper.startswith(TEST_FAMILY):
            continue
        if _is_service_link(upper.removeprefix(prefix), value):
            ignored.append(name)
            continue
        problem = _unknown(cls, prefix, upper, delimiter)
        if problem:
            return problem
    if ignored:
        log.warning(
            "ignored %d Kubernetes service link variable(s) that name no setting (set enableServiceLinks: false): %s",
            len(ignored),
            ", ".join(ignored[:10]),
        )
    return None


def _variables(cls: type[BaseSettings]) -> dict[str, str | None]:
    """The process environment, and the class's `.env` file(s) where they exist (as pydantic-settings reads)."""
    found: dict[str, str | None] = {}
    files = cls.model_config.get("env_file")
    for file in files if isinstance(files, list | tuple) else [files] if files else []:
        if Path(file).is_file():
            found.update(dotenv_values(file))
    return found | dict(os.environ)


def _unknown(cls: type[BaseSettings], prefix: str, variable: str, delimiter: str | None) -> str | None:
    if variable in RENAMED:
        return f"{variable} was renamed {RENAMED[variable]}: set that instead (it is ignored)"
    parts = variable.removeprefix(prefix).split(delimiter) if delimiter else [variable.removeprefix(prefix)]
    model: Any = cls
    for depth, part in enumerate(parts):
        fields = _fields(model)
        if fields is None:  # a mapping: any key, then its values' type; anything else has nothing under it
            model = _mapping_values(model)
            if model is None or not part:
                return _names_nothing(variable, [])
            continue
        if part.lower() not in fields:
            above = prefix + "".join(name + delimiter for name in parts[:depth]) if delimiter else prefix
            return _names_nothing(variable, [above + name.upper() for name in fields])
        model = _unwrapped(fields[part.lower()])
    return None


def _names_nothing(variable: str, known: list[str]) -> str:
    close = difflib.get_close_matches(variable, known, n=1, cutoff=0.75)
    hint = f"; did you mean {close[0]}?" if close else ""
    return f"{variable} names no setting{hint} (a typo here would leave the default in place)"


def _fields(model: Any) -> dict[str, Any] | None:
    """A model's fields by the names its variables use (aliases too); None when it is no model."""
    if isinstance(model, type) and issubclass(model, BaseModel):
        fields = {}
        for name, info in model.model_fields.items():
            fields[name.lower()] = info.annotation
            if isinstance(info.alias, str):
                fields[info.alias.lower()] = info.annotation
        return fields
    return None


def _mapping_values(annotation: Any) -> Any:
    """A mapping's value type (a key of it may be any name); None when `annotation` is no mapping."""
    if get_origin(annotation) is dict:
        return _unwrapped(get_args(annotation)[1])
    return None


def _unwrapped(annotation: Any) -> Any:
    """`X | None` and `Annotated[X, ...]` as X; a leaf type stays what it is (nothing nests under it)."""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            kinds = [arg for arg in get_args(annotation) if arg is not type(None)]
            if len(kinds) != 1:
                return annotation
            annotation = kinds[0]
        else:
            return annotation


def _is_service_link(rest: str, value: str | None) -> bool:
    return any(pattern.match(rest) and _looks_like(kind, value or "") for pattern, kind in _SERVICE_LINKS)


def _looks_like(kind: str, value: str) -> bool:
    if kind == "port":
        return value.isdigit()
    if kind == "protocol":
        return value in ("tcp", "udp", "sctp")
    if kind == "url":
        return bool(_ADDRESS.match(value))
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True
