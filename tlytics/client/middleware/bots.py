"""`is_bot`: whether a User-Agent is a known crawler, by the crawler-user-agents list
(monperrus/crawler-user-agents, a maintained list of several hundred crawler patterns)."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable

from tlytics.client.middleware.bot_patterns import one_matcher

# Only when the list cannot be imported (a vendored install without it): the words nearly every
# crawler names itself with, so is_bot still means something.
_FALLBACK_PATTERN = re.compile(r"bot|crawl|spider|slurp|scrap", re.IGNORECASE)


@functools.cache
def _matcher() -> Callable[[str], bool]:
    # Imported on first use: the list is half a megabyte of JSON read at import time, which an
    # application that never records a request should not pay for.
    try:
        from crawleruseragents import CRAWLER_USER_AGENTS_DATA  # type: ignore[import-untyped]
    except ImportError:
        return lambda user_agent: _FALLBACK_PATTERN.search(user_agent) is not None
    # One compiled matcher instead of the list's own is_crawler, a loop over 60 regexes
    # of 25 patterns each: 120-280 us per user agent not seen before.
    matcher = one_matcher(entry["pattern"] for entry in CRAWLER_USER_AGENTS_DATA)
    return lambda user_agent: matcher.search(user_agent) is not None


# Longer user agents are matched every time: a client sending long random ones must not be
# able to grow the cache to megabytes.
CACHED_USER_AGENT_MAX_CHARS = 512
# Only the start of a user agent is matched: the list's hundreds of patterns cost about 1.5 us
# per character (12 ms of CPU, under the GIL, for an 8 KB header of random text), so a client
# sending long random user agents could make every request of the application cost that.
# Crawlers name themselves within their first few hundred characters.
MATCHED_USER_AGENT_MAX_CHARS = 512


def is_bot(user_agent: str | None) -> bool:
    """True when `user_agent` matches a known crawler; a request without one is not counted
    as a bot (the list names crawlers, and absence names nothing)."""
    if not user_agent:
        return False
    if len(user_agent) > CACHED_USER_AGENT_MAX_CHARS:
        return _matcher()(user_agent[:MATCHED_USER_AGENT_MAX_CHARS])
    return _cached_is_bot(user_agent)


# The same few user agents make most requests, and matching one runs hundreds of patterns.
@functools.lru_cache(maxsize=4096)
def _cached_is_bot(user_agent: str) -> bool:
    return _matcher()(user_agent)
