"""Calls to other services: each goes through its shared rate limit, then its shared circuit breaker.

A stage calls `http_request`, or wraps any other client's call in `call(dependency, function, ...)`.
"""

from pipeline.dependencies.calls import call, http_request

__all__ = ["call", "http_request"]
