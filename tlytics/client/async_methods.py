"""The Client's methods for asyncio applications: flush() and close() run in a worker thread,
so the event loop keeps serving while they wait (an aiohttp cleanup context, a FastAPI
lifespan, `async with Client() as client`). Apart from client.py because nothing here is
about events; asyncio is imported only when one is called, so a synchronous application
never loads it."""

from __future__ import annotations

from types import TracebackType
from typing import Self


class AsyncMethods:
    """aflush(), aclose() and `async with`, over the subclass's flush() and close()."""

    def flush(self, timeout: float = 10.0) -> bool:
        raise NotImplementedError

    def close(self, timeout: float = 10.0) -> bool:
        raise NotImplementedError

    async def aflush(self, timeout: float = 10.0) -> bool:
        """flush() for asyncio applications: it runs in a worker thread, so the event loop
        keeps serving while it waits. Same return value as flush()."""
        import asyncio  # here: importing the client must not load asyncio for a sync application

        return await asyncio.to_thread(self.flush, timeout)

    async def aclose(self, timeout: float = 10.0) -> bool:
        """close() for asyncio applications (an aiohttp cleanup context, a FastAPI lifespan):
        it runs in a worker thread, so shutdown never blocks the loop. Same return value."""
        import asyncio

        return await asyncio.to_thread(self.close, timeout)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
