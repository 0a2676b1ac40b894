"""Stages sent with Celery's own API: refused at publish, in one line, with nothing sent."""

from __future__ import annotations

import pytest
from celery import chain, chord, group

from pipeline.stages import UnsupportedCanvasError
from pipeline.store import redis_client
from tasks.orders import enrich, transform, validate
from tasks.orders.samples import sample_order

pytestmark = pytest.mark.integration


def sent() -> int:
    """Messages waiting in vetro's queue, and job records: what a publish would have left behind."""
    client = redis_client()
    return client.llen("vetro") + sum(1 for _ in client.scan_iter("vetro:*:job:*", count=1000))


@pytest.mark.parametrize(
    "publish",
    [
        lambda order: validate.delay(order),
        lambda order: validate.apply_async((order,), countdown=1),
        lambda order: validate.s(order).delay(),
        lambda order: chain(validate.s(order), enrich.s(), transform.s()).apply_async(),
        lambda order: (validate.s(order) | enrich.s()).delay(),
        lambda order: group(validate.s(order), validate.s(order)).apply_async(),
        lambda order: chord([validate.s(order), validate.s(order)], enrich.s()).apply_async(),
    ],
    ids=["delay", "apply_async", "signature", "chain", "pipe", "group", "chord"],
)
def test_a_stage_sent_with_celerys_api_is_refused_before_anything_is_sent(redis_server, publish):
    before = sent()
    with pytest.raises((UnsupportedCanvasError, NotImplementedError)) as refused:
        publish(sample_order(1, prefix="canvas"))
    if isinstance(refused.value, UnsupportedCanvasError):  # a chord is refused by Celery itself (no result backend)
        assert "\n" not in str(refused.value)
    assert sent() == before
