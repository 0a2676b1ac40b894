"""The shipped dashboard and alert rules: they load, their rules pass their own tests, and they only read real metrics.

A rule or a panel on a misspelled or renamed metric raises no error anywhere: it just stays
silent, or empty, on the day it is needed. So every metric name they use is checked against
what `vetro serve` exposes, and the alerts are run through promtool's own checker and tests.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from pipeline.telemetry import metrics

MONITORING = Path(__file__).parents[2] / "monitoring"
DASHBOARD = MONITORING / "grafana-dashboard.json"
ALERTS = MONITORING / "alerts.yml"
METRIC_NAME = re.compile(r"\b(?:celery|vetro)_[a-z_]+")

# Gauges vetro serve computes at each scrape (vetro.ops.ServiceCollector), beside the counters and histograms.
SCRAPE_TIME_GAUGES = frozenset(
    {
        "vetro_ready",
        "vetro_degraded",
        "vetro_check_up",
        "celery_queue_length",
        "celery_active_worker_count",
        "celery_active_worker_sum",
        "celery_worker_up",
        "celery_worker_tasks_active",
        "vetro_workers_up",
        "vetro_queue_oldest_message_age_seconds",
        "vetro_queue_last_consumed_age_seconds",
        "vetro_queue_stalled",
        "vetro_breaker_state",
        "vetro_jobs_in_flight",
        "vetro_quarantined_messages",
        "vetro_dead_letter_rows",
        "vetro_dead_letter_open_rows",
        "vetro_dead_letters_recent",
    }
)


def exposed_names() -> set[str]:
    counters = {f"{metric.name}_total" for metric in metrics.COUNTERS}
    histograms = {f"{metric.name}{suffix}" for metric in metrics.HISTOGRAMS for suffix in ("_bucket", "_sum", "_count")}
    return counters | histograms | SCRAPE_TIME_GAUGES


def promtool() -> str:
    """promtool's path; skipped without it, except in CI (which installs Debian's `prometheus`)."""
    found = shutil.which("promtool")
    if found:
        return found
    if os.environ.get("CI"):
        pytest.fail("promtool is not installed (CI installs it with Debian's `prometheus` package)")
    pytest.skip("promtool is not installed (Debian's `prometheus` package has it)")


def run_promtool(*args: str, cwd: Path) -> None:
    result = subprocess.run([promtool(), *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"promtool {' '.join(args)}:\n{result.stdout}\n{result.stderr}"


def panels(dashboard: dict) -> Iterator[dict]:
    """Every panel, rows' nested panels included."""
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def unknown_metrics(exprs: list[str]) -> dict[str, set[str]]:
    allowed = exposed_names()
    found = {expr: set(METRIC_NAME.findall(expr)) - allowed for expr in exprs}
    return {expr: names for expr, names in found.items() if names}


def test_the_alert_rules_are_valid():
    run_promtool("check", "rules", ALERTS.name, cwd=MONITORING)


def test_the_alert_rules_pass_their_unit_tests():
    run_promtool("test", "rules", "alerts-test.yml", cwd=MONITORING)


@pytest.fixture(scope="module")
def dashboard() -> dict:
    try:
        return json.loads(DASHBOARD.read_text())
    except json.JSONDecodeError as error:
        pytest.fail(f"{DASHBOARD.name} is not valid JSON: {error}")


def test_the_dashboard_imports_with_a_chosen_prometheus(dashboard):
    assert (dashboard["uid"], dashboard["title"], dashboard["schemaVersion"]) == ("vetro-overview", "vetro", 39)
    assert [entry["name"] for entry in dashboard["__inputs"]] == ["DS_PROMETHEUS"]
    variables = {variable["name"]: variable for variable in dashboard["templating"]["list"]}
    assert (variables["datasource"]["type"], variables["datasource"]["query"]) == ("datasource", "prometheus")
    assert {"pipeline", "queue"} <= variables.keys()


def test_every_dashboard_panel_has_its_own_id(dashboard):
    ids = [panel["id"] for panel in panels(dashboard)]
    assert len(ids) == len(set(ids)), f"duplicate panel ids: {sorted(i for i in set(ids) if ids.count(i) > 1)}"


def test_the_dashboard_reads_only_metrics_vetro_exposes(dashboard):
    exprs = [target["expr"] for panel in panels(dashboard) for target in panel.get("targets", [])]
    exprs += [variable["definition"] for variable in dashboard["templating"]["list"] if variable["type"] == "query"]
    assert exprs, "no expression found in the dashboard"
    assert not unknown_metrics(exprs), f"metrics vetro does not expose: {unknown_metrics(exprs)}"


def test_the_alerts_read_only_metrics_vetro_exposes():
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    exprs = [rule["expr"] for group in groups for rule in group["rules"]]
    assert exprs, "no rule found in alerts.yml"
    assert not unknown_metrics(exprs), f"metrics vetro does not expose: {unknown_metrics(exprs)}"
