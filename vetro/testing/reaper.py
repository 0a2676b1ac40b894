"""Ends the process groups its parent started when the parent dies, however it dies.

Run as `python -m vetro.testing.reaper` by the first `spawn`; the parent keeps the write end of this
process's stdin and sends `+PID START` when it starts a group and `-PID` when it has ended it.
End of file on stdin means the parent is gone (exited, killed, timed out): every group still
registered gets SIGKILL. A group is its leader's pid (each was started in a session of its own);
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


def group_members(group: int, started: str) -> list[int]:
    """The processes still in `group` that started no earlier than its leader did."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError):
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == group and int(fields[19]) >= int(started):
                members.append(int(entry.name))
    return members


def reap(groups: dict[int, str]) -> None:
    for group, started in groups.items():
        for pid in group_members(group, started):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C to the terminal's group is the parent's to handle
    groups: dict[int, str] = {}
    for line in sys.stdin:
        command, *started = line.split()
        if command.startswith("+"):
            groups[int(command[1:])] = started[0]
        else:
            groups.pop(int(command[1:]), None)
    reap(groups)


if __name__ == "__main__":
    main()
