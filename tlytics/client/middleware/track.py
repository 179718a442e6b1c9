"""`track_event`: a decorator that emits one event each time a function or handler is called."""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, cast

from tlytics.client.client import Client

log = logging.getLogger("tlytics.client.middleware")

F = TypeVar("F", bound=Callable[..., Any])


def track_event(client: Client, key: str, data: Mapping[str, Any] | None = None) -> Callable[[F], F]:
    """Decorator emitting `key` (with `data`) each time the function or aiohttp handler is
    called, before it runs, so a call that fails is counted too."""

    def emit() -> None:
        try:
            client.emit(key, data)
        except Exception:
            log.exception("tlytics_track_event_failed key=%s", key)

    def decorate(function: F) -> F:
        if inspect.iscoroutinefunction(function):

            @functools.wraps(function)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                emit()
                return await function(*args, **kwargs)

            return cast(F, async_wrapper)

        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            emit()
            return function(*args, **kwargs)

        return cast(F, wrapper)

    return decorate
