"""GET /funnel: how many distinct actors (values of a `by` property) went through a sequence
of event keys in order, within a window from the first step (see `tlytics.store.funnel`)."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime

from aiohttp import web

from tlytics.ingest.off_loop import run_read
from tlytics.ingest.query import DATA_PROPERTY, read_query
from tlytics.ingest.responses import ApiError, json_response
from tlytics.ingest.state import STORE
from tlytics.ingest.stats_scope import aggregates_only, check_group, check_where
from tlytics.timefmt import MIN_US, datetime_to_us, format_rfc3339_us

STEPS_MAX = 20
DEFAULT_RANGE_US = 30 * 86_400_000_000
_BY = re.compile(DATA_PROPERTY + r"\Z")
_WITHIN = re.compile(r"(?P<amount>[0-9]{1,7})(?P<unit>[smhdw])\Z")
_UNIT_US = {"s": 1_000_000, "m": 60_000_000, "h": 3_600_000_000, "d": 86_400_000_000, "w": 604_800_000_000}


def _single(request: web.Request, name: str) -> str | None:
    """The one value of parameter `name`; a 400 when it is given twice (a second `steps` or
    `by` was ignored: a one-step funnel, or the wrong actor, answered as if asked)."""
    values = request.query.getall(name, [])
    if len(values) > 1:
        raise ApiError(400, f"{name} is given {len(values)} times: give it once", field=name)
    return values[0] if values else None


def _steps(request: web.Request) -> list[str]:
    text = _single(request, "steps") or ""
    steps = text.split(",")
    if not text or any(not step for step in steps):
        raise ApiError(400, "steps must list event keys separated by commas, e.g. signup,activate", field="steps")
    if len(steps) > STEPS_MAX:
        raise ApiError(400, f"at most {STEPS_MAX} steps", field="steps")
    return steps


def _within_us(request: web.Request) -> int | None:
    text = _single(request, "within")
    if not text:
        return None
    match = _WITHIN.match(text)
    if match is None or int(match["amount"]) == 0:
        raise ApiError(400, "within must be a positive number and a unit (s, m, h, d or w), e.g. 7d", field="within")
    return int(match["amount"]) * _UNIT_US[match["unit"]]


async def funnel(request: web.Request) -> web.Response:
    """GET /funnel?steps=signup,activate,purchase&by=data.user_id&within=7d&since=…&until=…"""
    steps = _steps(request)
    by = _BY.match(_single(request, "by") or "")
    if by is None:
        raise ApiError(400, "by must name who goes through the steps: data.<property>, e.g. data.user_id", field="by")
    within_us = _within_us(request)
    query = read_query(request)
    restricted = aggregates_only(request)
    if restricted:
        check_where(request, query.where)
    if query.where.keys:
        raise ApiError(400, "the steps are the keys a funnel reads: key is not taken here", field="key")
    until_us = query.where.until_us
    if until_us is None:
        until_us = datetime_to_us(datetime.now(UTC))
    since_us = query.where.since_us
    if since_us is None:
        since_us = max(until_us - DEFAULT_RANGE_US, MIN_US)  # never before year 1
    if since_us >= until_us:
        raise ApiError(400, "since must be before until", field="since")
    window = replace(query.where, since_us=since_us, until_us=until_us)
    # Without `within`, any later step inside [since, until) counts.
    limit_us = within_us if within_us is not None else until_us - since_us
    store = request.app[STORE]
    counts = await run_read(request, store.run, store.queries.funnel, window, steps, by["path"], limit_us)
    if restricted:
        check_group(request, window, counts[:1])
    answer: list[dict[str, object]] = []
    for index, (key, count) in enumerate(zip(steps, counts, strict=True)):
        step: dict[str, object] = {"key": key, "count": count}
        if index:
            before = counts[index - 1]
            # The share of the previous step's actors that reached this one; null after nobody.
            step["conversion"] = round(count / before, 4) if before else None
        answer.append(step)
    return json_response(
        {
            "steps": answer,
            "by": f"data.{by['path']}",
            "within": request.query.get("within") or None,
            "since": format_rfc3339_us(since_us),
            "until": format_rfc3339_us(until_us),
        }
    )
