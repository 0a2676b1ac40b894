"""What the shield lets through to Celery: only well-formed vetro tasks inside a job."""

import json
import uuid

import pytest

from pipeline import app
from pipeline.jobs.pipelines import load_pipelines
from pipeline.worker.shield import inspect


@pytest.fixture(scope="module")
def tasks():
    import pipeline.jobs.reconciler  # noqa: F401 - a task of vetro's own, as workers load it

    load_pipelines()
    return app.tasks


def message(stage: str = "validate", args: list | None = None, **changes: object) -> tuple[dict, str]:
    job_id = str(uuid.uuid4())
    scope = f"{stage}.{args[-1]}" if stage == "operate" and args else stage
    headers = {
        "task": f"orders.{stage}",
        "id": f"{job_id}.{scope}",
        "vetro_job_id": job_id,
        "vetro_idempotency_key": "key-1",
        "vetro_correlation_id": "corr-1",
        "vetro_pipeline": "orders",
        "vetro_replay": 0,
        "timelimit": [None, None],
        "retries": 0,
    }
    return headers | changes, json.dumps([args if args is not None else [{"order_id": "o"}], {}, {}])


def check(headers: dict, body: str, tasks) -> str | None:
    return inspect(headers, lambda: json.loads(body), tasks)


def test_a_well_formed_stage_message_passes(tasks):
    assert check(*message(), tasks) is None
    assert check(*message("operate", [{"order_id": "o"}, "billing"]), tasks) is None
    assert check({"task": "vetro.reconcile", "id": "r-1"}, "[[], {}, {}]", tasks) is None  # not a stage: no job


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"vetro_replay": True}, "vetro_replay header"),
        ({"vetro_replay": -1}, "vetro_replay header"),
        ({"vetro_pipeline": "refunds"}, "is not 'orders'"),
        ({"vetro_sent_at": "now"}, "vetro_sent_at header"),
        ({"id": "someone-else.validate"}, "is not"),
        ({"eta": "tomorrow"}, "eta header"),
        ({"retries": "1"}, "retries header"),
        ({"timelimit": [1, 2, 3]}, "timelimit header"),
        ({"argsrepr": ["x"]}, "argsrepr header"),
        ({"vetro_job_id": "../x"}, "a stage message without a job"),
    ],
)
def test_a_header_of_the_wrong_type_or_value_is_refused(tasks, changes, reason):
    assert reason in check(*message(**changes), tasks)


def test_a_stage_takes_its_own_arguments_only(tasks):
    headers, _ = message()
    assert "takes no keyword arguments" in check(headers, json.dumps([[{}], {"x": 1}, {}]), tasks)
    assert "takes one argument" in check(headers, json.dumps([[{}, {}], {}, {}]), tasks)
    assert "(input, branch)" in check(*message("operate", [{"order_id": "o"}, "a/b"]), tasks)
    assert "cannot be decoded" in inspect(headers, lambda: json.loads("[" * 100_000), tasks)
