"""What vetro relies on in how Celery's canvas publishes (pipeline.jobs.canvas and pipeline.adapter).

Not public API: a Celery release that changes any of these breaks canvas capture, and this test says which.
- a group (and a chord's header) sends its parts inside one `app.producer_or_acquire()`;
- a chain sends only its first task, with the rest in the `chain` option, last first;
- the last task of a chain that is a group member carries `group_id`, `group_index` (and `chord`);
- a chord's parts carry its body in the `chord` option; the chord asks the backend's `apply_chord` first;
- `AMQP.send_task_message` is a cached property holding the sender Celery built.
"""

from __future__ import annotations

from contextlib import contextmanager
from functools import cached_property

from celery import Celery, Task, chain, chord, group
from celery.app.amqp import AMQP
from celery.backends.base import BaseBackend

sent: list[dict] = []
brackets: list[int] = []


class Probe(Task):
    def apply_async(self, args=None, kwargs=None, task_id=None, producer=None, **options):
        sent.append({"task": self.name, "args": args, "producer": producer, "bracket": len(brackets), **options})
        return self.AsyncResult(task_id or "id")


class ProbeBackend(BaseBackend):
    chords: list = []

    def apply_chord(self, header_result_args, body, **kwargs):
        self.chords.append(body)

    def _get_task_meta_for(self, task_id):
        return {"status": "PENDING", "result": None}


class ProbeApp(Celery):
    @contextmanager
    def producer_or_acquire(self, producer=None):
        brackets.append(1)
        yield producer or "producer"


def probe_app() -> Celery:
    sent.clear()
    brackets.clear()
    app = ProbeApp("probe", broker="memory://", backend=f"{__name__}:ProbeBackend", set_as_current=False)
    for name in "abcd":
        app.task(name=name, base=Probe, shared=False)(_body)
    return app


def _body(*args, **kwargs):
    return None


def test_a_group_sends_its_parts_inside_one_producer_or_acquire():
    app = probe_app()
    group(app.tasks["a"].s(1), app.tasks["b"].s(2)).apply_async()
    assert [item["task"] for item in sent] == ["a", "b"]
    assert all(item["producer"] == "producer" and item["bracket"] == 1 for item in sent)
    assert [item["group_index"] for item in sent] == [0, 1] and sent[0]["group_id"] == sent[1]["group_id"]


def test_a_chain_sends_its_first_task_with_the_rest_last_first():
    app = probe_app()
    result = chain(app.tasks["a"].s(1), app.tasks["b"].s(), app.tasks["c"].s()).apply_async()
    (first,) = sent
    assert first["task"] == "a" and [sig["task"] for sig in first["chain"]] == ["c", "b"]
    assert first["chain"][0]["options"]["task_id"] == result.id


def test_a_chains_last_task_carries_its_group_and_chord():
    app = probe_app()
    chord([chain(app.tasks["a"].s(1), app.tasks["b"].s()), app.tasks["c"].s(2)], app.tasks["d"].s()).apply_async()
    first, second = sent
    last = first["chain"][0]["options"]
    assert last["group_index"] == 0 and last["chord"]["task"] == "d" and last["group_id"] == second["group_id"]
    assert second["chord"]["task"] == "d" and second["group_index"] == 1
    assert ProbeBackend.chords and ProbeBackend.chords[-1]["task"] == "d"


def test_amqps_sender_is_a_cached_property():
    assert isinstance(AMQP.__dict__["send_task_message"], cached_property)
