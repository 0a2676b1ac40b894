"""What the benchmarks read off the machine: process CPU and memory from /proc, Redis's own counters."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import redis

TICK = os.sysconf("SC_CLK_TCK")


def tree(pid: int) -> list[int]:
    """`pid` and every process below it."""
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        found.append(current)
        children = Path(f"/proc/{current}/task/{current}/children")
        if children.exists():
            pending += [int(child) for child in children.read_text().split()]
    return found


def cpu_seconds(pids: list[int]) -> float:
    """User and system CPU the processes used so far (utime + stime, children already reaped included)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += sum(int(value) for value in fields[11:15])  # utime, stime, cutime, cstime
    return total / TICK


def machine_busy_seconds() -> float:
    """CPU time every process on the machine used so far (all cores)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(value) for value in fields[:8])
    return (user + nice + system + irq + softirq + steal) / TICK


def memory_kib(pids: list[int]) -> tuple[int, int]:
    """(peak RSS, PSS) summed over the processes, in KiB."""
    peak = pss = 0
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except (FileNotFoundError, PermissionError):
            continue
        peak += _kib(status, "VmHWM:")
        pss += _kib(rollup, "Pss:")
    return peak, pss


def _kib(text: str, label: str) -> int:
    for line in text.splitlines():
        if line.startswith(label):
            return int(line.split()[1])
    return 0


@dataclass(frozen=True)
class RedisReading:
    commands: int
    cpu: float
    by_command: dict[str, int]

    @classmethod
    def of(cls, client: redis.Redis) -> RedisReading:
        stats = client.info("stats")
        cpu = client.info("cpu")
        by_command = {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in client.info("commandstats").items()}
        return cls(int(stats["total_commands_processed"]), cpu["used_cpu_user"] + cpu["used_cpu_sys"], by_command)

    @classmethod
    def total(cls, clients: list[redis.Redis]) -> RedisReading:
        """The sum over several servers (a broker and the masters of a Redis Cluster store)."""
        readings = [cls.of(client) for client in clients]
        by_command: dict[str, int] = {}
        for reading in readings:
            for name, calls in reading.by_command.items():
                by_command[name] = by_command.get(name, 0) + calls
        return cls(sum(r.commands for r in readings), sum(r.cpu for r in readings), by_command)
