"""A read's time budget: how long one read may take, set by whoever starts it (the server sets
`--read-timeout` as the read is queued) and enforced inside the store while it runs.

The budget travels in a context variable, so it reaches the thread a read runs on through the
context that thread runs it in (`contextvars.copy_context().run`) without a parameter on every
store method. Each backend stops a read over budget in its own way (SQLite: a progress handler
on the read connections; PostgreSQL: `statement_timeout` on the reader's connections) and says
so as `ReadTimedOut`, so the read's thread is free again and the answer is a 503 naming it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from tlytics.errors import ReadTimedOut


@dataclass(frozen=True, slots=True)
class ReadBudget:
    """How long the read may take (`seconds`) and when it must be done (`deadline`, monotonic)."""

    seconds: float
    deadline: float

    @classmethod
    def starting_now(cls, seconds: float) -> ReadBudget:
        return cls(seconds=seconds, deadline=time.monotonic() + seconds)

    @property
    def spent(self) -> bool:
        return time.monotonic() >= self.deadline

    def timed_out(self) -> ReadTimedOut:
        """The error a read over this budget raises."""
        return ReadTimedOut(over_budget_message(self.seconds), budget_s=self.seconds)


_CURRENT: ContextVar[ReadBudget | None] = ContextVar("tlytics_read_budget", default=None)


def over_budget_message(seconds: float | None) -> str:
    if seconds is None:
        return "the read was stopped by the store's time limit; narrow it or retry later"
    return (
        f"the read took longer than its budget of {seconds:g} s (--read-timeout) and was stopped;"
        " narrow it (a shorter time range, fewer steps or filters) or retry later"
    )


def current_budget() -> ReadBudget | None:
    """The budget of the read running in this context, if it has one."""
    return _CURRENT.get()


def start_budget(seconds: float) -> None:
    """Give the reads of this context `seconds` from now (call it inside the context the read
    will run in, e.g. through `Context.run`)."""
    _CURRENT.set(ReadBudget.starting_now(seconds))


@contextmanager
def read_budget(seconds: float) -> Iterator[ReadBudget]:
    """The reads inside have `seconds` from now, together."""
    budget = ReadBudget.starting_now(seconds)
    token = _CURRENT.set(budget)
    try:
        yield budget
    finally:
        _CURRENT.reset(token)


def refuse_if_spent() -> None:
    """ReadTimedOut when this context's budget is already spent (say, waiting for a thread),
    so a read that could only run over never starts."""
    budget = _CURRENT.get()
    if budget is not None and budget.spent:
        raise budget.timed_out()


def over_budget() -> bool:
    """Whether this context's read has a budget and has spent it (cheap: a progress handler
    asks it every few thousand SQLite instructions)."""
    budget = _CURRENT.get()
    return budget is not None and time.monotonic() >= budget.deadline
