"""Ends the sessions its parent started when the parent dies, however it dies.

Run as `python -m vetro.testing.reaper` by the first `spawn`; the parent keeps the write end of this
process's stdin and sends `+PID START` when it starts a session and `-PID` when it has ended it.
End of file on stdin means the parent is gone (exited, killed, timed out): every process still in
a registered session gets SIGKILL. A session is its leader's pid; it holds the process groups its
members start (vetro.supervise runs its worker in one of its own), which a group kill would miss.
START, the leader's start time in /proc, keeps a pid the kernel gave to someone else from being hit.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from pathlib import Path


def start_time(pid: int) -> str | None:
    """A process's start time (field 22 of /proc/PID/stat), or None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def session_members(session: int, started: str) -> list[int]:
    """The processes still in `session` that started no earlier than its leader did."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError):
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[3]) == session and int(fields[19]) >= int(started):
                members.append(int(entry.name))
    return members


def reap(sessions: dict[int, str]) -> None:
    for session, started in sessions.items():
        for pid in session_members(session, started):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C to the terminal's group is the parent's to handle
    sessions: dict[int, str] = {}
    for line in sys.stdin:
        command, *started = line.split()
        if command.startswith("+"):
            sessions[int(command[1:])] = started[0]
        else:
            sessions.pop(int(command[1:]), None)
    reap(sessions)


if __name__ == "__main__":
    main()
