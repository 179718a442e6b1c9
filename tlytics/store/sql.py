"""What the SQL backends share: a WHERE clause as conditions plus their parameters, in order
(each backend writes its own placeholders: `?` for SQLite, `%s` for psycopg)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


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
