"""`dlq.actions.stop`, which the console's API and its page share: a stop is audited as every action is."""

from __future__ import annotations

import pytest

from dlq import actions, audit, operations
from dlq.db import upgrade
from settings import reset_settings


@pytest.fixture
def sqlite_store(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path}/dlq.db"
    upgrade(url)
    monkeypatch.setenv("VETRO_DATABASE_URL", url)
    reset_settings()
    yield
    reset_settings()


def test_a_stop_is_asked_once_and_audited_with_the_actor_as_other_actions_are(sqlite_store):
    running = operations.begin("replay", "otto", total=10, incident=None, rate=1.0, audit_id=1)
    actor = actions.Actor("otto", "console", os_user="root")

    assert actions.stop(running, actor)
    assert operations.get(running)["state"] == operations.STOPPING
    assert not actions.stop(running, actor)  # no longer running: nothing asked, nothing audited
    assert not actions.stop(running + 1, actor)

    (entry,), total = audit.entries(action="stop")
    assert total == 1
    assert (entry.actor, entry.via, entry.outcome) == ("root as otto", "console", {"operation": running})
