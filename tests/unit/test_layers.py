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


def test_the_core_importing_the_dead_letter_store_breaks_the_contract():
    probe = ROOT / "pipeline" / f"_probe_{uuid.uuid4().hex[:8]}.py"
    probe.write_text('"""A core module that reaches up into a higher layer."""\n\nimport dlq.store  # noqa: F401\n')
    try:
        result = lint_imports()
    finally:
        probe.unlink()
    assert result.returncode != 0
    assert "BROKEN" in result.stdout and f"pipeline.{probe.stem} -> dlq.store" in result.stdout


def test_what_every_part_records_importing_a_jobs_life_breaks_the_contract():
    """Inside the core: telemetry sits below the job's life, so it may not import the ledger."""
    probe = ROOT / "pipeline" / "telemetry" / f"_probe_{uuid.uuid4().hex[:8]}.py"
    probe.write_text('"""A telemetry module reaching up."""\n\nimport pipeline.jobs.ledger  # noqa: F401\n')
    try:
        result = lint_imports()
    finally:
        probe.unlink()
    assert result.returncode != 0
    assert "BROKEN" in result.stdout and f"pipeline.telemetry.{probe.stem} -> pipeline.jobs.ledger" in result.stdout
