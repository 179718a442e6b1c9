"""Which spools the writer drains: the server's spool directory itself (a single process's
spool) and one subdirectory per ingest worker (`worker-<i>`, see tlytics.ingest.supervisor).

Every spool found there is drained, whatever `--workers` says now: a restart with fewer
workers (or with one) leaves the spools of the workers that are gone, holding acknowledged
events; the writer keeps draining them, so they are stored, never lost. An empty spool costs
one quick query per batch.
"""

from __future__ import annotations

from pathlib import Path

WORKER_SPOOL_PREFIX = "worker-"


def worker_spool_dir(spool_dir: Path, index: int) -> Path:
    """The spool of ingest worker `index` (from 0) of a server whose spool is `spool_dir`."""
    return spool_dir / f"{WORKER_SPOOL_PREFIX}{index}"


def spool_dirs(spool_dir: Path, workers: int) -> list[Path]:
    """The spools a writer drains: `spool_dir`, the spool of each of `workers` workers (when
    more than one) and every worker spool left behind by an earlier run with more."""
    found = {
        path
        for path in (spool_dir.glob(f"{WORKER_SPOOL_PREFIX}*") if spool_dir.is_dir() else ())
        if path.is_dir() and path.name.removeprefix(WORKER_SPOOL_PREFIX).isdigit()
    }
    if workers > 1:
        found.update(worker_spool_dir(spool_dir, index) for index in range(workers))
    by_index = sorted(found, key=lambda path: int(path.name.removeprefix(WORKER_SPOOL_PREFIX)))
    return [spool_dir, *by_index]
