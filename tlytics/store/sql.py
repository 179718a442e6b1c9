"""What the SQL backends share: a WHERE clause as conditions plus their parameters, in order
(each backend writes its own placeholders: `?` for SQLite, `%s` for psycopg), and the readers'
pool of one connection per thread."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from tlytics.errors import StoreError

C = TypeVar("C")


@dataclass(frozen=True, slots=True)
class SqlWhere:
    """Conditions that must all hold, and their parameters in order."""

    conditions: tuple[str, ...] = ()
    params: tuple[Any, ...] = ()

    @property
    def sql(self) -> str:
        """` WHERE a AND b`, or nothing when every event matches."""
        return f" WHERE {' AND '.join(self.conditions)}" if self.conditions else ""

    def and_also(self, condition: str, *params: Any) -> SqlWhere:
        """This filter narrowed by one more condition, whose parameters follow the filter's."""
        return SqlWhere((*self.conditions, condition), (*self.params, *params))


def grouped_number(value: int | float) -> int | float:
    """A number as breakdowns name its group, the same on every backend: an integral double
    within 64 bits as that integer (SQLite groups 100 and 100.0, and 0 and -0.0, as one
    value, named by whichever row came first)."""
    if isinstance(value, float) and value.is_integer() and -(2**63) <= value < 2**63:
        return int(value)
    return value


class ThreadConnections(Generic[C]):
    """One connection per reading thread, opened on the thread's first read, all closed at once.

    Both SQL readers keep their connections this way: a slow read on one thread never holds
    up another, and `close()` reaches the connections of every thread.
    """

    def __init__(self, describe: str, close_one: Callable[[C], None]) -> None:
        self._describe = describe  # "store <where>", for the error of a closed reader
        self._close_one = close_one  # closes one connection, ignoring the driver's errors
        self._local = threading.local()
        self._opened: list[C] = []
        self._lock = threading.Lock()
        self._closed = False

    def get(self, open_new: Callable[[], C], usable: Callable[[C], bool] | None = None) -> C:
        """This thread's connection; `open_new()` when it has none (or it is not `usable`)."""
        if self._closed:
            raise StoreError(f"{self._describe} is closed")
        connection: C | None = getattr(self._local, "connection", None)
        if connection is not None and usable is not None and not usable(connection):
            self.forget(connection)
            connection = None
        if connection is None:
            connection = open_new()
            with self._lock:
                if self._closed:  # closed meanwhile: nobody would close this one
                    self._close_one(connection)
                    raise StoreError(f"{self._describe} is closed")
                self._opened.append(connection)
            self._local.connection = connection
        return connection

    def forget(self, connection: C) -> None:
        """Drop and close this thread's connection (it broke); the next read opens another."""
        with self._lock:
            if connection in self._opened:
                self._opened.remove(connection)
        self._local.connection = None
        self._close_one(connection)

    def close(self) -> None:
        """Close every thread's connection; call once no read is running."""
        with self._lock:
            self._closed = True
            opened, self._opened = self._opened, []
        for connection in opened:
            self._close_one(connection)
