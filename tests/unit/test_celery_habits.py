"""Celery's habits on a stage, as plain logic: its retry options in vetro's knobs and classes, and its body
run in process (a call, `.apply()`, an eager canvas) with no Redis at all."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pipeline import stage
from pipeline.failures import (
    AutoretryClassifier,
    DependencyWaitError,
    FailureClass,
    PermanentError,
    default_classifier,
)
from pipeline.jobs.retry import knobs_of_celery_options


class Flaky(Exception):  # noqa: N818
    pass


@pytest.mark.parametrize(
    ("celery", "knobs"),
    [
        ({"retry_backoff": True}, {"backoff_base": 1, "backoff_max": 600}),
        (
            {"retry_backoff": 5, "retry_backoff_max": 60, "retry_jitter": False},
            {"backoff_base": 5, "backoff_max": 60, "jitter": False},
        ),
        ({"retry_backoff": 0.5}, {"backoff_base": 1, "backoff_max": 600}),  # Celery's factor is at least 1
        ({"retry_backoff": False, "default_retry_delay": 7}, {"backoff_base": 7, "backoff_max": 7, "jitter": False}),
        ({"autoretry_for": (Flaky,)}, {"backoff_base": 180, "backoff_max": 180, "jitter": False}),
        (
            {"autoretry_for": (Flaky,), "default_retry_delay": 2.5},
            {"backoff_base": 3, "backoff_max": 3, "jitter": False},
        ),
        ({"retry_backoff_max": 9}, {"backoff_max": 9}),  # vetro's backoff stays on; only its cap moves
        ({"default_retry_delay": 4}, {}),  # for `self.retry()` without a countdown only
    ],
)
def test_celerys_retry_options_become_vetros_knobs(celery, knobs):
    assert knobs_of_celery_options("p.s", celery, {}) == knobs


def test_a_vetro_knob_given_beside_its_celery_option_wins_and_one_line_says_so(caplog):
    with caplog.at_level(logging.WARNING, logger="vetro.stage"):
        knobs = knobs_of_celery_options("p.s", {"retry_backoff": 2}, {"backoff_base": 5})
    assert knobs["backoff_base"] == 5
    (line,) = [record.getMessage() for record in caplog.records]
    assert line == "stage p.s: retry_backoff and backoff_base both given: backoff_base (vetro's) wins"


def test_dont_autoretry_for_is_permanent_and_autoretry_for_transient_over_vetros_own_classes():
    classifier = AutoretryClassifier(default_classifier, (Exception,), (KeyError,))
    assert classifier.classify(KeyError("x")).failure_class is FailureClass.PERMANENT
    assert classifier.classify(Flaky()).failure_class is FailureClass.TRANSIENT
    assert classifier.classify(PermanentError("no")).failure_class is FailureClass.PERMANENT
    waiting = classifier.classify(DependencyWaitError("breaker open", retry_after=3))
    assert waiting.waiting and waiting.retry_after == 3  # a wait still spends no retry


def test_autoretry_for_that_names_no_exception_is_refused_in_one_line():
    with pytest.raises(TypeError, match=r"^stage habit\.bad: autoretry_for takes exception classes, not 'Flaky'$"):
        stage("bad", "habit", autoretry_for=("Flaky",))(lambda self, payload: payload)


def test_a_stage_runs_in_process_with_no_redis_anywhere():
    """Called directly, with `.apply()`, eagerly (`task_always_eager`) and as an applied canvas."""
    code = textwrap.dedent(
        """
        from celery import chain
        from pipeline import app
        from tests.pipelines import add

        assert add(2, 3) == 5
        assert add.apply((2, 3)).get() == 5
        assert chain(add.s(1, 2), add.s(10)).apply().get() == 13
        app.conf.task_always_eager = True
        assert add.delay(4, 5).get() == 9
        assert chain(add.s(1, 2), add.s(10)).delay().get() == 13
        print("ran in process")
        """
    )
    nowhere = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    env = {"VETRO_BROKER_URL": nowhere, "VETRO_RESULT_STORE_URL": nowhere, "VETRO_PIPELINES": "tests.pipelines"}
    ran = subprocess.run(
        [sys.executable, "-c", code],
        cwd=Path(__file__).parents[2],
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ran.returncode == 0 and "ran in process" in ran.stdout, ran.stderr[-2000:]
