"""Group dead letters by cause: the stage, the exception type and its message with ids and numbers masked."""

from __future__ import annotations

import hashlib
import re

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I)
_HEX = re.compile(r"\b[0-9a-f]{16,}\b", re.I)
_URL = re.compile(r"\w+://[^\s'\"]+")
_STATUS_CODE = re.compile(r"(?<![\w.])[1-5]\d\d(?![\w.])")  # 503, 404: these tell causes apart
_DIGITS = re.compile(r"\d+")


def _mask_digits(text: str) -> str:
    kept = {match.start() for match in _STATUS_CODE.finditer(text)}
    return _DIGITS.sub(lambda match: match.group() if match.start() in kept else "#", text)


def normalise(message: str) -> str:
    """'order order-17 failed (job 5534d355-…)' -> 'order order-# failed (job <uuid>)'."""
    message = _URL.sub("<url>", _HEX.sub("<hex>", _UUID.sub("<uuid>", message)))
    return _mask_digits(message)[:500]


def fingerprint(stage: str, exception_type: str, message: str) -> str:
    return hashlib.sha1(f"{stage}|{exception_type}|{normalise(message)}".encode()).hexdigest()[:12]
