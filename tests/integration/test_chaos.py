"""The chaos run, short: ~300 orders under ~20 seeded faults, checked at the partner (`vetro chaos`)."""

from __future__ import annotations

import json

import pytest

from tests.helpers import vetro

pytestmark = [pytest.mark.integration, pytest.mark.long]


def test_a_short_chaos_run_loses_nothing_and_repeats_nothing(tmp_path):
    report_path = tmp_path / "chaos.json"
    result = vetro(
        "chaos",
        *("--jobs", "300", "--seed", "7", "--workers", "2", "--window", "30"),
        *("--pool-kills", "12", "--worker-kills", "4", "--sigterms", "1", "--redis-restarts", "1"),
        *("--outage", "8", "--error-rate", "0.2", "--drain-timeout", "150"),
        *("--output", str(report_path)),
        timeout=300,
    )
    report = json.loads(report_path.read_text())
    assert result.returncode == 0, json.dumps({k: report[k] for k in ("checks", "jobs", "lost_jobs", "workers")})
    assert report["checks"] == dict.fromkeys(report["checks"], True)
    assert report["jobs"]["lost"] == 0 and report["jobs"]["completed"] + report["jobs"]["dead_lettered"] == 300
    assert report["faults"]["pool-kill"] == 12 and report["faults"]["worker-kill"] == 4
    assert report["effects"]["duplicate_effects"] == 0 and report["effects"]["missing"] == 0
    halves = report["by_kind"]
    assert set(halves) == {"declared", "canvas"} and halves["canvas"]["submitted"] == 150
    for half in halves.values():  # the canvas half and the declared half, each on its own
        assert half["lost"] == 0 and half["missing_effects"] == 0
        assert half["completed"] + half["dead_lettered"] == half["submitted"]
    shown = ("seconds", "jobs", "by_kind", "effects", "workers")
    print(f"\nFIGURES chaos (short): {json.dumps({k: report[k] for k in shown})}")
