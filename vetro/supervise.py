"""Run a worker and start it again whenever it exits with an error; stop when asked to.

    python -m vetro.supervise celery -A pipeline worker --loglevel INFO

Some worker exits no setting prevents: Celery ends a worker whose pool process dies in its
first second ("Could not start worker processes", celery/worker/loops.py), and any bug or
library fault that reaches the worker's main loop ends it with "Unrecoverable error". The
Procfile runs workers under this loop; under docker compose, `restart: unless-stopped` does
the same. SIGTERM and SIGINT are passed on once (Celery takes a second SIGINT as a cold
shutdown) and end the loop.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from types import FrameType

FIRST_DELAY = 1.0  # seconds before the first restart; doubles on each quick failure
MAX_DELAY = 30.0
STABLE_AFTER = 60.0  # a run this long resets the delay


def _exit_code(code: int) -> int:
    return code if code >= 0 else 128 - code  # killed by signal N: 128 + N, as a shell says


def supervise(argv: list[str], first_delay: float = FIRST_DELAY) -> int:
    """Run `argv` until it exits 0 or this process is told to stop; return its last exit code."""
    stop = threading.Event()
    child: subprocess.Popen | None = None

    def forward(signum: int, _frame: FrameType | None) -> None:
        stop.set()
        if child is not None and child.poll() is None:
            child.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    delay = first_delay
    try:
        while True:
            started = time.monotonic()
            # Its own process group: a terminal's Ctrl+C reaches only this loop, which passes it on once.
            child = subprocess.Popen(argv, process_group=0)
            if stop.is_set():  # told to stop before `child` was set
                child.send_signal(signal.SIGTERM)
            code = child.wait()
            if stop.is_set() or code == 0:
                return _exit_code(code)
            if time.monotonic() - started >= STABLE_AFTER:
                delay = first_delay
            print(f"supervise: {argv[0]} exited with {code}; starting it again in {delay:.0f}s", file=sys.stderr)
            if stop.wait(delay):
                return _exit_code(code)
            delay = min(delay * 2, MAX_DELAY)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        raise SystemExit("usage: python -m vetro.supervise COMMAND [ARGS...]")
    sys.exit(supervise(sys.argv[1:]))
