"""Group dead letters by cause: the stage, the exception type and its message with ids and numbers masked."""

from __future__ import annotations

import hashlib
import re

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I)
_HEX = re.compile(r"\b[0-9a-f]{16,}\b", re.I)
_URL = re.compile(r"\w+://[^\s'\"]+")
_STATUS_CODE = re.compile(r"[1-5]\d\d")  # 503, 404: these tell causes apart
_TOKEN_WITH_DIGIT = re.compile(r"[\w-]*\d[\w-]*")  # order-17, 3f2a9c1d, 42


def _mask_digits(text: str) -> str:
    return _TOKEN_WITH_DIGIT.sub(lambda m: m.group() if _STATUS_CODE.fullmatch(m.group()) else "#", text)


def normalise(message: str) -> str:
    """'order order-17 failed (job 5534d355-…)' -> 'order # failed (job <uuid>)'."""
    message = _URL.sub("<url>", _HEX.sub("<hex>", _UUID.sub("<uuid>", message)))
    return _mask_digits(message)[:500]


def fingerprint(stage: str, exception_type: str, message: str) -> str:
    return hashlib.sha1(f"{stage}|{exception_type}|{normalise(message)}".encode()).hexdigest()[:12]
