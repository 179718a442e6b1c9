"""CPU time and peak memory of a process tree, read from /proc (Linux).

The server is a tree: the ingest process (threads included in its own figures), the writer
process it spawns, and whatever else it starts (multiprocessing's resource tracker, and with
`--workers N` several ingest processes). A benchmark that reads one pid misses the writer; one
that reads only live processes misses a child that exited during the run, so the root's
`cutime`/`cstime` (children it has reaped) are counted too.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str]:
    # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def descendants(pid: int) -> list[int]:
    """Every live process below `pid` (children, their children, ...)."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        parents.setdefault(parent, []).append(int(stat.parent.name))
    found: list[int] = []
    frontier = [pid]
    while frontier:
        children = parents.get(frontier.pop(), [])
        found += children
        frontier += children
    return found


def is_helper_process(pid: int) -> bool:
    """A process multiprocessing started (the writer, the resource tracker), as opposed to an
    ingest process: its command line names multiprocessing."""
    try:
        return b"multiprocessing" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


@dataclass(frozen=True)
class TreeCpu:
    """CPU seconds (user + system) so far: of the ingest processes, and of the helper
    processes (the writer) below them."""

    ingest_s: float
    writer_s: float

    @property
    def total_s(self) -> float:
        return self.ingest_s + self.writer_s

    def __sub__(self, before: TreeCpu) -> TreeCpu:
        return TreeCpu(self.ingest_s - before.ingest_s, self.writer_s - before.writer_s)


def process_cpu_s(pid: int, *, with_reaped_children: bool = False) -> float:
    fields = _stat_fields(pid)
    ticks = int(fields[11]) + int(fields[12])
    if with_reaped_children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / _CLOCK_TICKS


def tree_cpu(pid: int) -> TreeCpu:
    """CPU of the tree below and including `pid`. Reaped children's CPU (in the root's
    cutime) counts as the writer's: the writer is the child the server restarts."""
    fields = _stat_fields(pid)
    ingest = (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS
    writer = (int(fields[13]) + int(fields[14])) / _CLOCK_TICKS
    for child in descendants(pid):
        try:
            seconds = process_cpu_s(child)
        except OSError:  # exited meanwhile: counted in its parent's cutime once reaped
            continue
        if is_helper_process(child):
            writer += seconds
        else:
            ingest += seconds
    return TreeCpu(ingest, writer)


def peak_rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"VmHWM:\s+(\d+) kB", status)
    return int(match.group(1)) / 1024 if match else float("nan")


def peak_rss_tree_mb(pid: int) -> tuple[float, float]:
    """Peak RSS of the root process and the sum of its live descendants'."""
    children = 0.0
    for child in descendants(pid):
        try:
            children += peak_rss_mb(child)
        except OSError:
            pass
    return peak_rss_mb(pid), children
