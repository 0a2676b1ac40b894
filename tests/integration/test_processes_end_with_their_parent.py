"""Processes the tests, the demo and the benchmarks start end with the process that started them,
however it ends: a pytest killed by a time limit must not leave workers and servers behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from vetro.testing.processes import wait_until

pytestmark = pytest.mark.integration

STARTER = """
import sys, time
from vetro.testing.processes import RedisServer
server = RedisServer().start()
print(server.process.pid, flush=True)
time.sleep(600)
"""

# A worker under vetro.supervise runs in a process group of its own, inside the supervisor's session.
SUPERVISING_STARTER = """
import sys, time
from vetro.testing.processes import spawn
supervisor = spawn([sys.executable, "-m", "vetro.supervise", "sleep", "600"])
print(supervisor.pid, flush=True)
time.sleep(600)
"""


def alive(pid: int) -> bool:
    """Running, not a zombie waiting for its parent."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("ending", [signal.SIGKILL, signal.SIGTERM], ids=["killed", "terminated"])
def test_a_server_started_by_a_process_that_dies_is_ended(ending):
    starter = subprocess.Popen([sys.executable, "-c", STARTER], stdout=subprocess.PIPE, text=True)
    try:
        server_pid = int(starter.stdout.readline())
        assert alive(server_pid)
        os.kill(starter.pid, ending)
        starter.wait(30)
        wait_until(lambda: not alive(server_pid), 30, f"redis-server {server_pid} to end with its parent")
    finally:
        if starter.poll() is None:
            starter.kill()
            starter.wait()


def children(pid: int) -> list[int]:
    try:
        return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def test_a_supervised_process_in_a_group_of_its_own_is_ended_with_its_supervisor():
    starter = subprocess.Popen([sys.executable, "-c", SUPERVISING_STARTER], stdout=subprocess.PIPE, text=True)
    try:
        supervisor_pid = int(starter.stdout.readline())
        wait_until(lambda: children(supervisor_pid), 30, "the supervisor to start its child")
        (supervised_pid,) = children(supervisor_pid)
        os.kill(starter.pid, signal.SIGKILL)
        starter.wait(30)
        wait_until(lambda: not alive(supervisor_pid), 30, f"the supervisor {supervisor_pid} to end with its parent")
        wait_until(lambda: not alive(supervised_pid), 30, f"its child {supervised_pid} to end with it")
    finally:
        if starter.poll() is None:
            starter.kill()
            starter.wait()
