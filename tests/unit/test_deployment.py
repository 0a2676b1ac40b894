"""The deployment files as written: what they must promise (no Docker engine here to run them)."""

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).parents[2]
LONG_RUNNING = ["redis", "postgres", "worker", "beat", "flower", "stub", "ops"]


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_redis_and_postgres_keep_their_data_in_volumes(compose):
    services = compose["services"]
    assert "redis-data:/data" in services["redis"]["volumes"]
    assert "postgres-data:/var/lib/postgresql/data" in services["postgres"]["volumes"]
    assert set(compose["volumes"]) == {"redis-data", "postgres-data"}
    assert "--appendonly" in services["redis"]["command"] and "yes" in services["redis"]["command"]


def test_services_wait_for_healthy_servers_and_restart(compose):
    services = compose["services"]
    assert services["redis"]["healthcheck"] and services["postgres"]["healthcheck"]
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["worker"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert all(services[name]["restart"] == "unless-stopped" for name in LONG_RUNNING)


def test_no_password_is_written_in_the_file_and_nothing_listens_beyond_loopback(compose):
    text = (ROOT / "docker-compose.yml").read_text()
    for password in ("REDIS_PASSWORD", "POSTGRES_PASSWORD", "FLOWER_PASSWORD"):
        assert f"${{{password}:?" in text  # required from the environment, never a default
    assert "--requirepass" in compose["services"]["redis"]["command"]
    assert not re.search(r"POSTGRES_PASSWORD:\s*\w", text.replace("${POSTGRES_PASSWORD", ""))
    ports = [port for service in compose["services"].values() for port in service.get("ports", [])]
    assert ports and all(port.startswith("127.0.0.1:") for port in ports)


def test_the_procfile_keeps_flower_and_the_stub_on_loopback_and_runs_no_one_shot_process():
    processes = dict(line.split(": ", 1) for line in (ROOT / "Procfile").read_text().splitlines() if line.strip())
    assert set(processes) == {"worker", "beat", "flower", "stub", "ops"}  # a process that exits stops honcho's stack
    assert "--address=${FLOWER_ADDRESS:-127.0.0.1}" in processes["flower"]
    assert "${FLOWER_PASSWORD:?" in processes["flower"]
    assert "--host 127.0.0.1" in processes["stub"]
    assert "--host" not in processes["ops"]  # VETRO_SERVE_HOST: 127.0.0.1 unless set
