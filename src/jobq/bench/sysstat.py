"""CPU time of processes, read from /proc (Linux), so a figure cannot hide skipped work."""

from __future__ import annotations

import os
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name may hold spaces; fields start after its closing parenthesis.
    return raw[raw.rindex(")") + 2 :].split()


def cpu_seconds(pid: int, *, with_children: bool = False) -> float:
    """utime + stime of a process (plus its reaped children's, if asked), in seconds."""
    fields = _stat_fields(pid)
    if fields is None:
        return 0.0
    # After the name: state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14)
    ticks = int(fields[11]) + int(fields[12])
    if with_children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / CLOCK_TICKS


def machine_busy_seconds() -> float:
    """CPU seconds all cores of this machine spent busy (not idle nor waiting on I/O) since
    boot: from /proc/stat's first line, so it counts every process, ours or not."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


def parent_of(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return int(fields[1]) if fields else None


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields and int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


class ServerCpu:
    """CPU used by a local PostgreSQL server: the postmaster, its live children, and the
    children that exited (counted into the postmaster's cutime/cstime when reaped)."""

    def __init__(self, postmaster_pid: int | None) -> None:
        self.postmaster = postmaster_pid

    def total(self) -> float | None:
        if self.postmaster is None or _stat_fields(self.postmaster) is None:
            return None
        live = sum(cpu_seconds(child) for child in children_of(self.postmaster))
        return cpu_seconds(self.postmaster, with_children=True) + live
