"""The tutorial (docs/tutorial.md), run as written: its modules, a stock worker, `vetro submit`, a publisher."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from dlq import store
from pipeline.jobs.ledger import UNFINISHED
from tests.conftest import worker_env
from tests.helpers import vetro
from vetro.testing.processes import WorkerProcess, wait_until

pytestmark = pytest.mark.integration

TUTORIAL = Path(__file__).parents[2] / "docs" / "tutorial.md"


def walkthrough_module() -> str:
    """The tutorial's python block that begins with the module's docstring, `signups.py`."""
    blocks = re.findall(r"```python\n(.*?)```", TUTORIAL.read_text(), flags=re.S)
    [module] = [block for block in blocks if block.startswith('"""signups.py')]
    return module


def ended(job_id: str, env: dict[str, str]) -> dict | None:
    """`vetro job show`, once the job has ended (this process cannot load the tutorial's module)."""
    shown = vetro("job", "show", job_id, "--json", env=env)
    assert shown.returncode == 0, shown.stderr
    job = json.loads(shown.stdout)
    return job if job["status"] not in UNFINISHED else None


def test_the_tutorials_pipeline_runs_with_the_two_commands(tmp_path):
    (tmp_path / "signups.py").write_text(walkthrough_module())
    path = os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))
    env = worker_env(VETRO_PIPELINES=f"{os.environ['VETRO_PIPELINES']},signups", PYTHONPATH=path)
    run = uuid.uuid4().hex[:8]
    worker = WorkerProcess(env, concurrency=2, name=f"readme-{run}")
    try:
        worker.start()
        signup = {"id": f"s-{run}", "email": "Ada@Example.com", "plan": "team"}
        submitted = vetro("submit", "--pipeline", "signups", "--json", json.dumps(signup), env=env)
        bad_signup = {"id": f"s2-{run}", "email": "nope"}
        refused = vetro("submit", "--pipeline", "signups", "--json", json.dumps(bad_signup), env=env)
        assert submitted.returncode == 0 and refused.returncode == 0, submitted.stderr + refused.stderr
        job_id, bad_id = submitted.stdout.strip(), refused.stdout.strip()
        done = wait_until(lambda: ended(job_id, env), 90, "the signup to end")
        failed = wait_until(lambda: ended(bad_id, env), 90, "the bad signup to end")
    finally:
        worker.stop()
    assert done["status"] == "completed"
    welcomed = done["steps"]["welcome"]["result"]
    assert (welcomed["email"], str(welcomed["monthly"]), welcomed["welcomed"]) == ("ada@example.com", "49.00", True)
    assert (failed["status"], failed["failed_stage"], failed["failure_class"]) == ("failed", "check", "permanent")
    [row] = store.rows(store.RowFilter(job=bad_id))
    assert "'nope' is not an email address" in row.message


def tutorial_block(first_line: str) -> str:
    """The tutorial's python block that begins with `first_line` (a module's docstring)."""
    blocks = re.findall(r"```python\n(.*?)```", TUTORIAL.read_text(), flags=re.S)
    [block] = [block for block in blocks if block.startswith(first_line)]
    return block


def test_the_tutorials_canvas_runs_on_a_stock_worker_and_its_failure_raises_from_get(tmp_path):
    (tmp_path / "checkout.py").write_text(tutorial_block('"""checkout.py'))
    publisher = tutorial_block('"""publish.py')
    (tmp_path / "publish.py").write_text(publisher.replace('"id": "o-1"', f'"id": "o-{uuid.uuid4().hex[:8]}"'))
    failing = publisher.replace('"id": "o-1"', f'"id": "o-{uuid.uuid4().hex[:8]}"')  # its own key: its own job
    failing = failing.replace('"items": [{"sku": "a", "price": 30}, {"sku": "b", "price": 12}]', '"items": []')
    (tmp_path / "publish_bad.py").write_text(failing)
    path = os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))
    env = worker_env(VETRO_PIPELINES=f"{os.environ['VETRO_PIPELINES']},checkout", PYTHONPATH=path)
    worker = WorkerProcess(env, concurrency=2, name=f"readme-canvas-{uuid.uuid4().hex[:4]}")
    try:
        worker.start()
        published = subprocess.run(
            [sys.executable, "publish.py"], cwd=tmp_path, env={**os.environ, **env}, capture_output=True, text=True,
            timeout=120,
        )  # fmt: skip
        refused = subprocess.run(
            [sys.executable, "publish_bad.py"], cwd=tmp_path, env={**os.environ, **env}, capture_output=True,
            text=True, timeout=120,
        )  # fmt: skip
    finally:
        worker.stop()
    assert published.returncode == 0, published.stderr
    summary = ast.literal_eval(published.stdout.strip())
    assert summary["shipped"] == ["a", "b"] and summary["charged"] == 40 and summary["mailed"] == "ada@example.com"
    assert refused.returncode == 1 and "PermanentError" in refused.stderr and "has no items" in refused.stderr


README = Path(__file__).parents[2] / "README.md"


def readme_block(first_line: str) -> str:
    """The README's python block that begins with `first_line`."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    [block] = [block for block in blocks if block.startswith(first_line)]
    return block


def test_the_readmes_example_test_of_a_pipeline_passes_as_written(tmp_path):
    """README, "Testing your pipeline": its conftest.py and test_signups.py, on the tutorial's signups.py."""
    (tmp_path / "signups.py").write_text(walkthrough_module())
    (tmp_path / "conftest.py").write_text(readme_block("pytest_plugins"))
    (tmp_path / "test_signups.py").write_text(readme_block('"""test_signups.py'))
    env = {name: value for name, value in os.environ.items() if not name.startswith("VETRO_")}
    ran = subprocess.run(
        [sys.executable, "-m", "pytest", "--vetro-pipelines", "signups", "-q", "-p", "no:cacheprovider"],
        cwd=tmp_path,
        env=env | {"PYTHONPATH": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert ran.returncode == 0 and "3 passed" in ran.stdout, ran.stdout[-3000:] + ran.stderr[-2000:]
