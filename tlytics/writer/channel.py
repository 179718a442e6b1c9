"""The one writer, shared by the ingest workers of a `--workers N` server: each worker hands its
writer functions (drain, erasure, retention) over a socket pair to the supervisor, which runs
them on its `ProcessExecutor`, one at a time, like any other caller.

So every worker keeps its own `WriteScheduler` (its flush period, its backlog wake-ups, its
erasures that drain first), while the store's write connection stays in one process. A drain
run for any worker drains every spool (see spools.py), so an erasure asked of one worker waits
for what the others acknowledged too.

Frames are a length and a pickle: both ends are processes of one server, started by it, on a
socket pair no one else holds.
"""

from __future__ import annotations

import asyncio
import itertools
import pickle
import socket
import struct
from collections.abc import Callable
from contextlib import suppress
from typing import Any, TypeVar, TypeVarTuple, cast

import structlog

from tlytics.errors import StoreError
from tlytics.writer.executor import WriteExecutor, round_trips
from tlytics.writer.resources import WriterResources

log = structlog.get_logger("tlytics.writer")

T = TypeVar("T")
Args = TypeVarTuple("Args")

_LENGTH = struct.Struct("!I")


class WriterUnreachable(StoreError):
    """The supervisor that runs the writer is gone (the worker is about to stop)."""


async def _send(stream: asyncio.StreamWriter, message: tuple[Any, ...]) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_LENGTH.pack(len(data)) + data)
    await stream.drain()


async def _receive(stream: asyncio.StreamReader) -> tuple[Any, ...]:
    """The next message; IncompleteReadError once the other end closed."""
    (length,) = _LENGTH.unpack(await stream.readexactly(_LENGTH.size))
    return cast(tuple[Any, ...], pickle.loads(await stream.readexactly(length)))


class ChannelExecutor:
    """In an ingest worker: writer functions run by the supervisor's writer (a WriteExecutor)."""

    def __init__(self, channel: socket.socket) -> None:
        self._channel = channel
        self._calls = itertools.count()
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        self._stream: asyncio.StreamWriter | None = None
        self._reading: asyncio.Task[None] | None = None
        # Set when the supervisor is gone: the worker stops then (it could not store anything).
        self.closed = asyncio.Event()

    async def connect(self) -> None:
        reader, self._stream = await asyncio.open_connection(sock=self._channel)
        self._reading = asyncio.create_task(self._read_answers(reader), name="writer-channel")

    async def _read_answers(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                call, ok, value = await _receive(reader)
                future = self._waiting.pop(call, None)
                if future is None or future.done():
                    continue
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(value)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.closed.set()
            for future in self._waiting.values():
                if not future.done():
                    future.set_exception(WriterUnreachable("the server's writer is gone"))
            self._waiting.clear()

    async def tell_listening(self, port: int) -> None:
        """Tell the supervisor this worker serves `port` now."""
        assert self._stream is not None, "connect first"
        await _send(self._stream, ("listening", port))

    async def execute(self, fn: Callable[[WriterResources, *Args], T], *args: *Args) -> T:
        if self._stream is None or self.closed.is_set():
            raise WriterUnreachable("the server's writer is gone")
        call = next(self._calls)
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._waiting[call] = future
        try:
            await _send(self._stream, ("call", call, fn, args))
        except (ConnectionError, RuntimeError) as exc:
            self._waiting.pop(call, None)
            raise WriterUnreachable(f"the server's writer is gone: {exc}") from exc
        return await future

    async def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
            with suppress(ConnectionError):
                await self._stream.wait_closed()
        if self._reading is not None:
            self._reading.cancel()
            with suppress(asyncio.CancelledError):
                await self._reading


async def serve_worker(channel: socket.socket, executor: WriteExecutor, *, on_listening: Callable[[int], None]) -> None:
    """In the supervisor: run one worker's writer calls on `executor` until the worker's end
    closes (it stopped or died). A call the worker no longer waits for still runs to its end:
    a drain half done would only be retried, but there is no need to."""
    reader, stream = await asyncio.open_connection(sock=channel)
    calls: set[asyncio.Task[None]] = set()
    try:
        while True:
            try:
                message = await _receive(reader)
            except (asyncio.IncompleteReadError, ConnectionError):
                break
            if message[0] == "listening":
                on_listening(message[1])
                continue
            _, call, fn, args = message
            task = asyncio.create_task(_answer(stream, executor, call, fn, args))
            calls.add(task)
            task.add_done_callback(calls.discard)
    finally:
        if calls:
            await asyncio.gather(*calls, return_exceptions=True)
        stream.close()


async def _answer(
    stream: asyncio.StreamWriter, executor: WriteExecutor, call: int, fn: Callable[..., Any], args: tuple[Any, ...]
) -> None:
    try:
        answer: tuple[Any, ...] = (call, True, await executor.execute(fn, *args))
    except Exception as exc:
        answer = (call, False, exc if round_trips(exc) else StoreError(str(exc)))
    try:
        await _send(stream, answer)
    except (ConnectionError, RuntimeError):
        pass  # the worker is gone; what the call did stands (the spool and the store agree)
