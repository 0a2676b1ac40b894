"""The worker supervisor: restarts what failed, passes a stop on once, and never restarts after it."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from vetro.testing.processes import wait_until

# A stand-in worker: counts its runs, exits with the code listed for its run (the last repeats),
# or with WAIT set, says it is up and waits for SIGTERM/SIGINT, writing each signal it gets.
FAKE_WORKER = textwrap.dedent(
    """
    import os, signal, sys, time
    runs = os.environ["RUNS"]
    codes = [int(code) for code in os.environ["CODES"].split(",")]
    run = len(open(runs).read()) if os.path.exists(runs) else 0
    open(runs, "a").write("x")
    if os.environ.get("WAIT"):
        got = []
        def on(sig, _):
            got.append(sig)
            open(os.environ["SIGNALS"], "a").write(f"{sig} ")
        signal.signal(signal.SIGTERM, on)
        signal.signal(signal.SIGINT, on)
        open(os.environ["UP"], "w").write("1")
        while not got:
            time.sleep(0.05)
    sys.exit(codes[min(run, len(codes) - 1)])
    """
)


def supervised(tmp_path: Path, codes: str, wait: bool = False, first_delay: float = 0.1) -> subprocess.Popen:
    (tmp_path / "worker.py").write_text(FAKE_WORKER)
    env = {
        "RUNS": str(tmp_path / "runs"),
        "CODES": codes,
        "SIGNALS": str(tmp_path / "signals"),
        "UP": str(tmp_path / "up"),
        "WAIT": "1" if wait else "",
    }
    code = (
        "import sys; from vetro.supervise import supervise; "
        f"sys.exit(supervise([sys.executable, {str(tmp_path / 'worker.py')!r}], first_delay={first_delay}))"
    )
    return subprocess.Popen(
        [sys.executable, "-c", code], env=env, stderr=subprocess.PIPE, text=True, cwd=Path(__file__).parents[2]
    )


def runs(tmp_path: Path) -> int:
    path = tmp_path / "runs"
    return len(path.read_text()) if path.exists() else 0


def test_a_worker_that_fails_is_started_again_until_it_exits_cleanly(tmp_path):
    process = supervised(tmp_path, "3,1,0")
    assert process.wait(30) == 0
    assert runs(tmp_path) == 3
    assert process.stderr.read().count("starting it again") == 2


def test_a_stop_is_passed_on_once_and_ends_the_loop_even_if_the_worker_then_fails(tmp_path):
    process = supervised(tmp_path, "1", wait=True)
    wait_until(lambda: (tmp_path / "up").exists(), 30, "the worker to start")
    process.send_signal(signal.SIGTERM)
    assert process.wait(30) == 1
    assert (tmp_path / "signals").read_text().split() == [str(int(signal.SIGTERM))]
    assert runs(tmp_path) == 1


def test_a_stop_while_waiting_to_restart_ends_the_loop_at_once(tmp_path):
    process = supervised(tmp_path, "2", first_delay=60)
    wait_until(lambda: "starting it again" in (process.stderr.readline() or ""), 30, "the first failure")
    process.send_signal(signal.SIGTERM)
    assert process.wait(45) == 2  # well before the 60 s delay ends (10 s was once too short on a loaded machine)
    assert runs(tmp_path) == 1
