"""deploy/kubernetes holds together: every resource kustomize lists parses and is of a known kind, every
setting its ConfigMap names is one vetro reads, every queue the settings route to has a worker Deployment
that takes it, KEDA and the disruption budgets point at Deployments that exist, and the probes are vetro's
own (never `celery inspect ping`). No cluster here: kubeconform is not packaged for Debian."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from settings import get_settings, reset_settings

MANIFESTS = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"
KINDS = {
    "ConfigMap": "v1",
    "Service": "v1",
    "Deployment": "apps/v1",
    "Job": "batch/v1",
    "PodDisruptionBudget": "policy/v1",
    "ScaledObject": "keda.sh/v1alpha1",
}


def resources() -> list[dict[str, Any]]:
    listed = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())["resources"]
    assert sorted(listed) == sorted(path.name for path in MANIFESTS.glob("*.yaml") if path.name != "kustomization.yaml")
    return [doc for name in listed for doc in yaml.safe_load_all((MANIFESTS / name).read_text()) if doc]


def of_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in resources() if doc["kind"] == kind}


def pod_specs() -> dict[str, dict[str, Any]]:
    found = {name: doc["spec"]["template"]["spec"] for name, doc in of_kind("Deployment").items()}
    return found | {name: doc["spec"]["template"]["spec"] for name, doc in of_kind("Job").items()}


def worker_queues() -> dict[str, set[str]]:
    """Each worker Deployment's queues, from its `celery worker -Q` command line."""
    found = {}
    for name, spec in pod_specs().items():
        command = spec["containers"][0]["command"]
        if "worker" in command and "celery" in command:
            found[name] = set(command[command.index("-Q") + 1].split(","))
    return found


@pytest.fixture
def fleet_settings(monkeypatch):
    """vetro's settings as the ConfigMap's variables (and a broker URL, which the Secret holds) make them."""
    for name, value in of_kind("ConfigMap")["vetro-config"]["data"].items():
        monkeypatch.setenv(name, value)
    reset_settings()
    yield get_settings()
    reset_settings()


def test_every_resource_is_a_known_kind_with_its_api_version_and_a_name():
    for doc in resources():
        assert KINDS.get(doc["kind"]) == doc["apiVersion"], doc["kind"]
        assert doc["metadata"]["name"].startswith("vetro")


def test_the_configmap_names_only_settings_and_routes_to_stages_that_exist(fleet_settings):
    from pipeline.jobs.pipelines import load_pipelines

    load_pipelines()  # a variable naming no setting, or a queue for no stage, raises ConfigError here
    assert fleet_settings.queue_for("orders", "operate") == "orders-operate"


def test_every_queue_the_settings_name_has_a_worker_that_takes_it(fleet_settings):
    taken = set().union(*worker_queues().values())
    assert {*fleet_settings.stage_queues, fleet_settings.control_queue} <= taken


def test_every_pod_keeps_service_links_out_and_reads_the_same_settings():
    for name, spec in pod_specs().items():
        assert spec["enableServiceLinks"] is False, f"{name}: Service links would add VETRO_* variables"
        sources = spec["containers"][0]["envFrom"]
        assert {"configMapRef": {"name": "vetro-config"}} in sources and {
            "secretRef": {"name": "vetro-secrets"}
        } in sources
        assert spec["containers"][0]["resources"]["requests"], name


def test_probes_are_vetros_own_and_workers_outlast_their_stages_time_limit():
    specs = pod_specs()
    for name, spec in specs.items():
        container = spec["containers"][0]
        probes = [
            container.get(kind, {}).get("exec", {}).get("command", []) for kind in ("livenessProbe", "readinessProbe")
        ]
        assert all("inspect" not in probe for probe in probes), name
    for name in worker_queues():
        probe = specs[name]["containers"][0]["livenessProbe"]["exec"]["command"]
        assert probe == ["vetro", "health", "--this-host"]
        assert specs[name]["terminationGracePeriodSeconds"] > 30  # a running stage's default hard time limit
    assert specs["vetro-serve"]["containers"][0]["readinessProbe"]["exec"]["command"] == ["vetro", "health"]


def test_one_beat_never_two():
    beat = of_kind("Deployment")["vetro-beat"]
    assert beat["spec"]["replicas"] == 1 and beat["spec"]["strategy"]["type"] == "Recreate"


def test_the_migration_job_upgrades_the_dead_letter_store():
    (job,) = of_kind("Job").values()
    assert job["spec"]["template"]["spec"]["containers"][0]["command"] == ["vetro", "db", "upgrade"]


def test_autoscalers_and_disruption_budgets_point_at_workers_and_read_their_queues_backlog():
    deployments = of_kind("Deployment")
    queues = worker_queues()
    for name, scaled in of_kind("ScaledObject").items():
        target = scaled["spec"]["scaleTargetRef"]["name"]
        assert target in queues, f"{name} scales {target}, which is no worker Deployment"
        (trigger,) = scaled["spec"]["triggers"]
        query = trigger["metadata"]["query"]
        assert "celery_queue_length" in query  # a metric vetro serve exports (vetro.ops)
        named = set(query.split('queue=~"')[1].split('"')[0].split("|"))
        assert named == queues[target], f"{name} reads {named}, its workers take {queues[target]}"
    for name, budget in of_kind("PodDisruptionBudget").items():
        labels = budget["spec"]["selector"]["matchLabels"]
        assert any(
            deployment["spec"]["template"]["metadata"]["labels"].items() >= labels.items()
            for deployment in deployments.values()
        ), name


def test_worker_commands_are_celerys_own_under_vetros_supervisor():
    for name, spec in pod_specs().items():
        command = spec["containers"][0]["command"]
        if name in worker_queues():
            assert command[:5] == ["python", "-m", "vetro.supervise", "celery", "-A"], shlex.join(command)
