"""The README's "Writing a pipeline" walkthrough, run as written: its module, a stock worker, `vetro submit`."""

from __future__ import annotations

import json
import os
import re
import uuid
from pathlib import Path

import pytest

from dlq import store
from pipeline.ledger import UNFINISHED
from pipeline.local import WorkerProcess, wait_until
from tests.conftest import worker_env
from tests.helpers import vetro

pytestmark = pytest.mark.integration

README = Path(__file__).parents[2] / "README.md"


def walkthrough_module() -> str:
    """The README's python block that begins with the module's docstring, `signups.py`."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    [module] = [block for block in blocks if block.startswith('"""signups.py')]
    return module


def ended(job_id: str, env: dict[str, str]) -> dict | None:
    """`vetro job show`, once the job has ended (this process cannot load the README's module)."""
    shown = vetro("job", "show", job_id, "--json", env=env)
    assert shown.returncode == 0, shown.stderr
    job = json.loads(shown.stdout)
    return job if job["status"] not in UNFINISHED else None


def test_the_readmes_pipeline_runs_with_the_two_commands(tmp_path):
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
