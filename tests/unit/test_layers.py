"""The layering check (import-linter, run by `make test`) holds, and fails when a lower layer imports a higher one."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

ROOT = Path(__file__).parents[2]


def lint_imports() -> subprocess.CompletedProcess:
    command = [str(Path(sys.executable).with_name("lint-imports")), "--no-cache"]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_the_layers_hold():
    result = lint_imports()
    assert result.returncode == 0, result.stdout[-2000:]


def lint_with_probe(package: str, imported: str) -> tuple[subprocess.CompletedProcess, str]:
    """The check's result with a module in `package` that imports `imported`, and the probe's module name."""
    name = f"_probe_{uuid.uuid4().hex[:8]}"
    probe = ROOT.joinpath(*package.split("."), f"{name}.py")
    probe.write_text(f'"""A module reaching into another layer."""\n\nimport {imported}  # noqa: F401\n')
    try:
        return lint_imports(), f"{package}.{name}"
    finally:
        probe.unlink()


def test_the_core_importing_the_dead_letter_store_breaks_the_contract():
    result, probe = lint_with_probe("pipeline", "dlq.store")
    assert result.returncode != 0
    assert "BROKEN" in result.stdout and f"{probe} -> dlq.store" in result.stdout


def test_what_every_part_records_importing_a_jobs_life_breaks_the_contract():
    """Inside the core: telemetry sits below the job's life, so it may not import the ledger."""
    result, probe = lint_with_probe("pipeline.telemetry", "pipeline.jobs.ledger")
    assert result.returncode != 0
    assert "BROKEN" in result.stdout and f"{probe} -> pipeline.jobs.ledger" in result.stdout
