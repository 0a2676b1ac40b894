"""Every call to an external dependency goes through here: its shared rate limit, then its breaker."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from pipeline import breakers, ratelimit

T = TypeVar("T")


def call(dependency: str, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call `function` once the dependency's rate limit allows it, through its circuit breaker.

    Raises DependencyWaitError (a transient wait, not a failure) when the call must wait.
    """
    ratelimit.acquire(dependency)
    return breakers.call(dependency, function, *args, **kwargs)
