"""The diskcache spool: FIFO with non-destructive reads, bytes on disk, group commit."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from tlytics.errors import SpoolError, SpoolFull
from tlytics.spool import GroupCommitter, Spool
from tlytics.spool.entry import spool_entry_parts


def test_append_peek_remove_in_order(tmp_path: Path, open_spool: Callable[[Path], Spool]) -> None:
    spool = open_spool(tmp_path / "spool")
    keys = spool.append_many([b"one", b"two", b"three"])
    assert spool.count() == 3
    assert spool.peek(2) == [(keys[0], b"one"), (keys[1], b"two")]
    # Peeking consumes nothing.
    assert spool.count() == 3
    spool.remove([keys[0]])
    assert [value for _, value in spool.peek(10)] == [b"two", b"three"]
    spool.remove([keys[1], keys[2], keys[0]])  # an already-removed key is ignored
    assert spool.count() == 0
    assert spool.peek(10) == []


def test_entries_survive_reopen(tmp_path: Path, open_spool: Callable[[Path], Spool]) -> None:
    spool = Spool(tmp_path / "spool")
    spool.append(b"kept")
    spool.close()
    reopened = open_spool(tmp_path / "spool")
    assert [value for _, value in reopened.peek(5)] == [b"kept"]


def test_large_entries_stay_in_sqlite_not_side_files_and_are_not_pickled(
    tmp_path: Path, open_spool: Callable[[Path], Spool]
) -> None:
    spool = open_spool(tmp_path / "spool")
    big = b'{"events": "' + b"x" * 200_000 + b'"}'
    spool.append(big)
    side_files = [p for p in (tmp_path / "spool").rglob("*") if p.suffix == ".val"]
    assert side_files == []
    with sqlite3.connect(tmp_path / "spool" / "cache.db") as connection:
        ((value, filename, mode),) = connection.execute("SELECT value, filename, mode FROM Cache").fetchall()
    assert filename is None
    assert bytes(value) == big  # raw bytes, not a pickle
    assert mode == 1  # diskcache MODE_RAW
    assert [v for _, v in spool.peek(1)] == [big]


def test_eviction_is_off_and_sync_is_set(tmp_path: Path) -> None:
    Spool(tmp_path / "n", sync="normal").close()
    Spool(tmp_path / "f", sync="full").close()
    for name, level in (("n", 1), ("f", 2)):
        with sqlite3.connect(tmp_path / name / "cache.db") as connection:
            settings = dict(connection.execute("SELECT key, value FROM Settings").fetchall())
        assert settings["eviction_policy"] == "none"
        assert settings["sqlite_synchronous"] == level


def test_bad_sync_level_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        Spool(tmp_path / "s", sync="sometimes")  # type: ignore[arg-type]


def test_spool_full_refuses_append(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", max_bytes=1)
    try:
        with pytest.raises(SpoolFull):
            spool.append(b"no room")
        assert spool.count() == 0
    finally:
        spool.close()


class CountingSpool(Spool):
    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self.transactions: list[int] = []

    def append_many(self, values: list[bytes]) -> list[int]:  # type: ignore[override]
        self.transactions.append(len(values))
        return super().append_many(values)


async def test_group_commit_gathers_concurrent_appends(tmp_path: Path) -> None:
    spool = CountingSpool(tmp_path / "spool")
    try:
        committed: list[int] = []
        committer = GroupCommitter(spool, on_committed=committed.append)
        committer.start()
        requests = [f'"entry {i}"'.encode() for i in range(200)]  # JSON, as requests' entries are
        await asyncio.gather(*(committer.append(request, 2) for request in requests))
        await committer.close()
        # 200 concurrent appends, far fewer disk transactions: one spool entry each.
        assert len(spool.transactions) < 20, spool.transactions
        assert spool.transactions == [1] * len(spool.transactions)
        assert spool.count() == len(spool.transactions)
        assert sum(committed) == 400
        held = [part for _, value in spool.peek(500) for part in spool_entry_parts(value)]
        assert sorted(held) == sorted(requests)
    finally:
        spool.close()


class FailingSpool(Spool):
    def append_many(self, values: list[bytes]) -> list[int]:  # type: ignore[override]
        raise SpoolError("disk on fire")


async def test_group_commit_failure_reaches_every_waiter(tmp_path: Path) -> None:
    spool = FailingSpool(tmp_path / "spool")
    try:
        committer = GroupCommitter(spool)
        committer.start()
        results = await asyncio.gather(*(committer.append(b"x", 1) for _ in range(10)), return_exceptions=True)
        await committer.close()
    finally:
        spool.close()
    assert all(isinstance(result, SpoolError) for result in results)


async def test_group_commit_refuses_after_close(tmp_path: Path, open_spool: Callable[[Path], Spool]) -> None:
    committer = GroupCommitter(open_spool(tmp_path / "spool"))
    committer.start()
    await committer.close()
    with pytest.raises(SpoolError):
        await committer.append(b"late", 1)


def test_fast_append_matches_diskcache_push(tmp_path: Path, open_spool: Callable[[Path], Spool]) -> None:
    import diskcache

    spool = open_spool(tmp_path / "spool")
    keys = spool.append_many([b"a", b"b"])
    spool.remove([keys[0]])
    more = spool.append_many([b"c"])
    assert more[0] == keys[1] + 1
    # diskcache itself reads what we wrote, and its own push continues the same queue.
    with diskcache.Cache(str(tmp_path / "spool")) as cache:
        assert [cache[k] for k in (keys[1], more[0])] == [b"b", b"c"]
        assert cache.push(b"d") == more[0] + 1
        assert len(cache) == 3
        assert [v for _, v in spool.peek(10)] == [b"b", b"c", b"d"]
        spool.remove(list(cache.iterkeys()))
        assert len(cache) == 0 and spool.count() == 0


class BrokenCache:
    """Stands in for diskcache.Cache on a disk that fails every call."""

    def _fail(self, *args: object, **kwargs: object) -> object:
        raise sqlite3.OperationalError("disk I/O error (injected)")

    __len__ = _fail
    volume = transact = _sql = close = get = push = delete = peek = _fail
    _con = property(_fail)


@pytest.mark.parametrize(
    "call",
    [
        lambda spool: spool.append(b"x"),
        lambda spool: spool.peek(10),
        lambda spool: spool.remove([1]),
        lambda spool: spool.checkpoint(),
        lambda spool: spool.oldest_age_s(),
        lambda spool: spool.count(),
        lambda spool: spool.size_bytes(),
        lambda spool: spool.close(),
    ],
    ids=["append", "peek", "remove", "checkpoint", "oldest_age_s", "count", "size_bytes", "close"],
)
def test_every_backend_error_becomes_a_spool_error_with_its_cause(tmp_path: Path, call: object) -> None:
    spool = Spool(tmp_path / "spool")
    spool._queue._cache.close()
    spool._queue._cache = BrokenCache()
    with pytest.raises(SpoolError) as raised:
        call(spool)  # type: ignore[operator]
    assert isinstance(raised.value.__cause__, sqlite3.OperationalError)
    assert "disk I/O error (injected)" in str(raised.value)


def test_disk_free_bytes_on_a_vanished_directory_is_a_spool_error(
    tmp_path: Path, open_spool: Callable[[Path], Spool]
) -> None:
    spool = open_spool(tmp_path / "spool")
    spool.directory = tmp_path / "gone"
    with pytest.raises(SpoolError) as raised:
        spool.disk_free_bytes()
    assert isinstance(raised.value.__cause__, OSError)


def test_a_spool_that_cannot_open_says_where(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(SpoolError, match="file") as raised:
        Spool(tmp_path / "file")
    assert isinstance(raised.value.__cause__, (OSError, sqlite3.Error))


def test_a_spool_limit_holds_between_measures_and_lifts_as_soon_as_the_spool_is_drained(tmp_path: Path) -> None:
    # Appends reuse a measure of the spool's size for a moment (a measure per group commit
    # cost more than the commit), counting what they add on top: the limit must still stop a
    # fast writer near it, and a drained spool must take appends again at once.
    empty = Spool(tmp_path / "spool")
    limit = empty.size_bytes() + 512 * 1024
    empty.close()
    spool = Spool(tmp_path / "spool", max_bytes=limit)
    try:
        keys: list[int] = []
        for _ in range(2000):  # 2000 entries of 4 KiB: 16 times the room
            try:
                keys += spool.append_many([b"x" * 4096])
            except SpoolFull:
                break
        else:
            pytest.fail("the spool never refused an append")
        assert spool.size_bytes() < limit + 256 * 1024
        spool.remove(keys)
        assert spool.append_many([b"after the drain"])  # no wait for the next measure
    finally:
        spool.close()


def test_appends_can_leave_checkpoints_to_the_drainer(tmp_path: Path) -> None:
    # The server's spool (checkpoint_on_append=False) must not copy its WAL into the database
    # inside a group commit; the writer's checkpoint after a batch does, and the next append
    # starts the WAL over, so it stays small while the spool is drained.
    wal = tmp_path / "spool" / "cache.db-wal"
    server = Spool(tmp_path / "spool", checkpoint_on_append=False)
    writer = Spool(tmp_path / "spool")
    try:
        entry = b"e" * 16_384
        keys = [key for _ in range(48) for key in server.append_many([entry] * 8)]  # 6 MiB
        assert wal.stat().st_size > 6 * 1024 * 1024  # SQLite's default would have checkpointed at 4 MiB
        writer.remove(keys)
        writer.checkpoint()
        server.append_many([b"after the checkpoint"])
        assert wal.stat().st_size <= 4 * 1024 * 1024  # reset and cut to the spool's WAL size limit
        assert [value for _, value in writer.peek(10)] == [b"after the checkpoint"]
    finally:
        writer.close()
        server.close()
