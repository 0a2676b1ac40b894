"""kombu's Redis transport, kept from ending a worker when its Redis restarts (kombu 5.7.0).

On a lost broker connection, Celery's consumer collects the connection and closes it. kombu
detaches the channels from their transport along the way (`transport.client = None`), but a
channel whose close was cut short by the lost connection is closed again afterwards, and its
`restore_unacked` (giving the worker's unacknowledged messages back) then builds a Redis
client from the detached transport: `AttributeError: 'NoneType' object has no attribute
'hostname'` (or 'client'). That is neither a connection nor a channel error, so it escapes
the consumer and the worker exits with "Unrecoverable error". The same fault is reported
upstream as celery/kombu#582 and #970.

This channel remembers the connection parameters it was created with and uses them once
detached: restoring the messages then works (Redis is back) or raises a redis
ConnectionError, which kombu and Celery handle as a lost connection, leaving the messages in
the unacked set for the visibility-timeout restore. Selected by `pipeline.app` for redis://
brokers; drop it once kombu keeps its parameters itself.
"""

from __future__ import annotations

from typing import Any

import redis
from kombu.transport import redis as kombu_redis


class Channel(kombu_redis.Channel):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._attached_params: dict[bool, dict[str, Any]] = {}  # filled while attached (the ping below)
        super().__init__(*args, **kwargs)
        self._connparams(asynchronous=False)

    def _connparams(self, asynchronous: bool = False) -> dict[str, Any]:
        transport = self.connection
        if transport is not None and transport.client is not None:
            params = super()._connparams(asynchronous=asynchronous)
            self._attached_params[bool(asynchronous)] = dict(params)
            return params
        try:
            return dict(self._attached_params[bool(asynchronous)])
        except KeyError:
            raise redis.exceptions.ConnectionError("the Redis channel was detached from its connection") from None


class Transport(kombu_redis.Transport):
    Channel = Channel
