"""`tlytics-replay`: resend events left in a spool directory (a client's, or a server's) or an
NDJSON file (or stdin) to a server, in batches, with a progress bar and a summary.

Re-running it is harmless: events keep their ids, and a line without an id gets one derived
from its content, so the server's unique id dedupes a second run. Before each batch it asks
the server which ids it already stores (`POST /lookup`, which needs a read key when the
server has read keys), sends only the others, and counts those as "already stored". When it
cannot ask, it says so once, sends everything (the ids still dedupe) and reports "already
stored unknown" rather than a count it does not have. The source is only read, never changed.

The source is read as a stream (`replay_read`) and sent a batch at a time (`replay_send`), in
requests cut to the limits the server's 413 answers name.
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Iterator
from pathlib import Path

import click

from tlytics.client.transport import Transport
from tlytics.replay_read import (
    Found,
    Progress,
    Summary,
    count_spool_entries,
    first_of_each_id,
    read_ndjson,
    read_spools,
    spool_directories,
)
from tlytics.replay_send import Replayer


def _first_key(value: str | None) -> str | None:
    """One key from a value that may be the server's comma-separated list (TLYTICS_WRITE_KEYS):
    the server accepts any of them."""
    if value is None:
        return None
    keys = [key.strip() for key in value.split(",") if key.strip()]
    return keys[0] if keys else None


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--server",
    metavar="URL",
    envvar="TLYTICS_SERVER",
    help="Server base URL, e.g. http://127.0.0.1:8081 [TLYTICS_SERVER]",
)
@click.option(
    "--spool",
    "spool_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="A client spool_dir (or a server's spool directory).",
)
@click.option(
    "--file",
    "file_name",
    metavar="PATH",
    help="An NDJSON file, one event per line (a server's /export?format=ndjson too); - for stdin.",
)
@click.argument("stdin_marker", required=False, metavar="[-]")
@click.option(
    "--batch-size", default=1000, show_default=True, type=click.IntRange(1, 10_000), help="Events per request."
)
@click.option("--dry-run", is_flag=True, help="Only read and validate; send nothing.")
@click.option(
    "--write-key",
    envvar=["TLYTICS_WRITE_KEYS", "TLYTICS_CLIENT_WRITE_KEY", "TLYTICS_WRITE_KEY"],
    help="Key for sending (POST /batch), as the server's --write-key"
    " [TLYTICS_WRITE_KEYS, the server's comma-separated list: its first key; or TLYTICS_CLIENT_WRITE_KEY (TLYTICS_WRITE_KEY)].",
)
@click.option(
    "--read-key",
    envvar=["TLYTICS_READ_KEYS", "TLYTICS_READ_KEY"],
    help="Key for asking which events are already stored (POST /lookup), as the server's --read-key;"
    " needed when the server has read keys [TLYTICS_READ_KEYS: its first key; or TLYTICS_READ_KEY].",
)
@click.option("--timeout", default=30.0, show_default=True, help="Seconds per request.")
def main(
    server: str | None,
    spool_dir: Path | None,
    file_name: str | None,
    stdin_marker: str | None,
    batch_size: int,
    dry_run: bool,
    write_key: str | None,
    read_key: str | None,
    timeout: float,
) -> None:
    """Resend events from a spool, an NDJSON file or stdin (-) to a Tlytics server."""
    if stdin_marker not in (None, "-"):
        raise click.UsageError(f"unexpected argument {stdin_marker!r}; use - for stdin")
    sources = [s for s in (spool_dir, file_name, stdin_marker) if s is not None]
    if len(sources) != 1:
        raise click.UsageError("give exactly one source: --spool DIR, --file PATH, or - for stdin")
    if not dry_run and not server:
        raise click.UsageError("--server is required (or --dry-run)")

    summary = Summary()
    progress = Progress()
    found_events = _read_source(spool_dir, file_name, summary, progress)
    replayer = None
    if not dry_run:
        assert server is not None
        replayer = _replayer(server, _first_key(write_key), _first_key(read_key), timeout, summary)
    batches = _batches(first_of_each_id(found_events, summary), batch_size)
    for batch in _shown(batches, progress, "replaying" if replayer else "checking"):
        if replayer is not None:
            replayer.send(batch)

    if summary.warning is not None:
        click.echo(summary.warning, err=True)
    if replayer is not None and (replayer.limits.max_events or replayer.limits.max_body_bytes):
        click.echo(f"note: the server takes at most {replayer.limits.description()} per request", err=True)
    for problem in summary.problems:
        click.echo(problem, err=True)
    if dry_run:
        repeated = f", repeated {summary.repeated}" if summary.repeated else ""
        click.echo(f"dry run: read {summary.read}, valid {summary.valid}, invalid {summary.invalid}{repeated}")
    else:
        click.echo(summary.line())
    sys.exit(0 if summary.ok else 1)


def _batches(found_events: Iterator[Found], batch_size: int) -> Iterator[list[Found]]:
    while batch := list(itertools.islice(found_events, batch_size)):
        yield batch


def _shown(batches: Iterator[list[Found]], progress: Progress, label: str) -> Iterator[list[Found]]:
    """The batches, with a progress bar on stderr (shown on a terminal) by the source's unit."""
    if progress.total is None:  # stdin: its size is unknown, so batches are counted instead
        with click.progressbar(batches, label=f"{label} (batches)", file=sys.stderr) as counted:
            yield from counted
        return
    with click.progressbar(length=progress.total, label=label, file=sys.stderr) as bar:
        for batch in batches:
            yield batch
            bar.update(progress.done - bar.pos)


def _read_source(
    spool_dir: Path | None, file_name: str | None, summary: Summary, progress: Progress
) -> Iterator[Found]:
    if spool_dir is not None:
        directories = spool_directories(spool_dir)
        if not directories:
            raise click.UsageError(f"{spool_dir} holds no Tlytics spool (no cache.db)")
        progress.total = count_spool_entries(directories)
        return read_spools(directories, summary, progress)
    if file_name not in (None, "-"):
        path = Path(str(file_name))
        if not path.is_file():
            raise click.UsageError(f"no such file: {path}")
        progress.total = path.stat().st_size
        return _read_file(path, summary, progress)
    return read_ndjson(sys.stdin.buffer, "stdin", summary, progress)


def _read_file(path: Path, summary: Summary, progress: Progress) -> Iterator[Found]:
    with path.open("rb") as stream:
        yield from read_ndjson(stream, str(path), summary, progress)


def _replayer(server: str, write_key: str | None, read_key: str | None, timeout_s: float, summary: Summary) -> Replayer:
    writes = Transport(server, timeout_s=timeout_s, write_key=write_key, gzip_min_bytes=4096)
    # Transport sends one bearer key; the read key gets a connection of its own. Without one,
    # /lookup gets the write key, which a server without read keys does not even look at.
    reads = Transport(server, timeout_s=timeout_s, write_key=read_key, gzip_min_bytes=4096) if read_key else writes
    return Replayer(writes, reads, summary)
