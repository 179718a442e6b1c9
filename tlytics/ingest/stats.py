"""GET /stats and GET /keys: counts over time in a time zone, distinct values, breakdowns.

Buckets are laid out in the requested IANA zone (a day in Europe/Paris starts at local
midnight, whatever the DST), counted between `since` and `until` with empty buckets filled.
Counts of keys and times come from the writer's 15-minute rollups (ragged edges from the
events); property filters and distinct values are counted from the events. `compare=previous`
answers the same question for the period of equal length just before.
"""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from aiohttp import web

from tlytics.ingest.off_loop import run_read
from tlytics.ingest.query import DATA_PROPERTY, read_query
from tlytics.ingest.responses import ApiError, json_response
from tlytics.ingest.state import STORE
from tlytics.ingest.stats_scope import aggregates_only, check_group, check_public, check_where, shown_groups
from tlytics.store import EventFilter
from tlytics.store.base import UniqueCounts
from tlytics.timefmt import datetime_to_us, format_rfc3339_us, us_to_datetime

INTERVALS = ("minute", "hour", "day", "week", "month")
MAX_BUCKETS = 2_000
_PATH = re.compile(DATA_PROPERTY + r"\Z")
# The calendar every API timestamp lies in; datetime arithmetic past it raises.
_FIRST_US = datetime_to_us(datetime(1, 1, 1, tzinfo=UTC))
_CALENDAR = "0001-01-01 … 9999-12-31"


def _floor(moment: datetime, interval: str) -> datetime:
    if interval == "minute":
        return moment.replace(second=0, microsecond=0)
    if interval == "hour":
        return moment.replace(minute=0, second=0, microsecond=0)
    day = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    if interval == "day":
        return day
    if interval == "week":  # ISO weeks start on Monday
        return day - timedelta(days=day.weekday())
    return day.replace(day=1)


# Every UTC offset in use is a multiple of 15 minutes: a local hour starts on one of these.
_QUARTER = timedelta(minutes=15)


def _next(moment: datetime, interval: str, zone: ZoneInfo) -> datetime:
    if interval == "minute":
        return (moment.astimezone(UTC) + timedelta(minutes=1)).astimezone(zone)
    if interval == "hour":
        # The next instant at a local :00, in absolute time: an hour is an hour across a DST
        # change of one hour, and a change of 30 minutes (Australia/Lord_Howe) makes one
        # bucket longer or shorter instead of moving every later one to :30.
        following = moment.astimezone(UTC) + _QUARTER
        while (local := following.astimezone(zone)).minute != 0:
            following += _QUARTER
        return local
    if interval == "day":
        following = moment.replace(tzinfo=None) + timedelta(days=1)
    elif interval == "week":
        following = moment.replace(tzinfo=None) + timedelta(days=7)
    else:
        year, month = (moment.year + 1, 1) if moment.month == 12 else (moment.year, moment.month + 1)
        following = moment.replace(tzinfo=None, year=year, month=month)
    return following.replace(tzinfo=zone)  # local midnight, whatever the offset that day


def bucket_starts(since_us: int, until_us: int, interval: str, zone: ZoneInfo) -> tuple[list[datetime], datetime]:
    """The local starts of the buckets covering [since, until), and the end of the last one.

    Near either end of the calendar, a bucket (in that zone) may start before year 1 or end
    after year 9999, where datetime cannot go: a 400 naming the parameter whose bucket would.
    """
    try:
        start = _floor(us_to_datetime(since_us).astimezone(zone), interval)
    except (OverflowError, ValueError):
        raise ApiError(
            400,
            f"since is too close to an end of the calendar ({_CALENDAR}): its {interval} in {zone.key}"
            " would fall outside it; choose another since, a shorter interval or another tz",
            field="since",
        ) from None
    starts: list[datetime] = []
    moment = start
    try:
        while datetime_to_us(moment) < until_us:
            starts.append(moment)
            if len(starts) > MAX_BUCKETS:
                raise ApiError(
                    400,
                    f"more than {MAX_BUCKETS} buckets: choose a longer interval or a shorter range",
                    field="interval",
                )
            moment = _next(moment, interval, zone)
    except (OverflowError, ValueError):
        raise ApiError(
            400,
            f"until is too close to the end of the calendar ({_CALENDAR}): its {interval} in {zone.key}"
            " would end after it; choose an earlier until, a shorter interval or another tz",
            field="until",
        ) from None
    return starts, moment


def _format_local(moment: datetime) -> str:
    text = moment.isoformat(timespec="seconds")
    return text.replace("+00:00", "Z") if text.endswith("+00:00") else text


def _property(request: web.Request, name: str) -> str | None:
    text = request.query.get(name)
    if not text:
        return None
    match = _PATH.match(text)
    if match is None:
        raise ApiError(400, f"{name} must look like data.<property>, e.g. data.user_id", field=name)
    return match["path"]


async def _period(
    request: web.Request, window: EventFilter, interval: str, zone: ZoneInfo, unique_path: str | None
) -> dict[str, object]:
    """The total and buckets of `window` (its since and until set), with the distinct values of
    data.`unique_path` per bucket and over the whole window when asked."""
    assert window.since_us is not None and window.until_us is not None
    starts, end = bucket_starts(window.since_us, window.until_us, interval, zone)
    store = request.app[STORE]
    # Whole buckets, clipped to [since, until) by the filter: the store can then answer the
    # whole 15-minute parts from its rollup.
    edges_us = [datetime_to_us(start) for start in starts]
    end_us = datetime_to_us(end)
    uniques: UniqueCounts | None = None
    if unique_path is not None and window.where:
        # A property condition reads the events whatever: counts and distinct values at once
        # (no sketch answers for a subset of events anyway).
        counts = await run_read(request, store.run, store.queries.bucket_counts, edges_us, end_us, window, unique_path)
        total = await run_read(request, store.run, store.queries.unique_count, window, unique_path)
        uniques = UniqueCounts(per_bucket=[unique or 0 for _, unique in counts], total=total)
    else:
        counts = await run_read(request, store.run, store.queries.bucket_counts, edges_us, end_us, window, None)
        if unique_path is not None:
            # Per-bucket distinct counts do not add up: the store counts the whole window too.
            uniques = await run_read(
                request, store.run, store.queries.unique_counts, edges_us, end_us, window, unique_path
            )
    buckets: list[dict[str, object]] = [
        {"start": _format_local(start), "count": count} for start, (count, _) in zip(starts, counts, strict=True)
    ]
    period: dict[str, object] = {"total": sum(count for count, _ in counts), "buckets": buckets}
    if uniques is not None:
        for bucket, unique in zip(buckets, uniques.per_bucket, strict=True):
            bucket["unique"] = unique
        period["unique_total"] = uniques.total
        period["unique_method"] = uniques.method
        if uniques.relative_error is not None:
            period["unique_error"] = uniques.relative_error
    return period


async def stats(request: web.Request) -> web.Response:
    """GET /stats?interval=day&tz=Europe/Paris&since=...&until=...[&unique=data.x][&breakdown=data.y&limit=10]
    [&compare=previous]"""
    interval = request.query.get("interval", "day")
    if interval not in INTERVALS:
        raise ApiError(400, f"interval must be one of {', '.join(INTERVALS)}", field="interval")
    tz_name = request.query.get("tz", "UTC")
    try:
        zone = ZoneInfo(tz_name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ApiError(
            400, f"unknown time zone {tz_name!r} (use an IANA name such as Europe/Paris)", field="tz"
        ) from None
    query = read_query(request)
    unique_path = _property(request, "unique")
    breakdown_path = _property(request, "breakdown")
    restricted = aggregates_only(request)
    if restricted:
        check_where(request, query.where)
        if breakdown_path is not None:
            check_public(request, "breakdown", breakdown_path)
    try:
        limit = int(request.query.get("limit", "10"))
    except ValueError:
        raise ApiError(400, "limit must be a whole number", field="limit") from None
    if not 1 <= limit <= 1000:
        raise ApiError(400, "limit must be between 1 and 1000", field="limit")
    now_us = datetime_to_us(datetime.now(UTC))
    until_us = query.where.until_us if query.where.until_us is not None else now_us
    since_us = query.where.since_us
    if since_us is None:
        default_range_s = {
            "minute": 3_600,
            "hour": 86_400,
            "day": 30 * 86_400,
            "week": 182 * 86_400,
            "month": 365 * 86_400,
        }[interval]
        since_us = max(until_us - default_range_s * 1_000_000, _FIRST_US)
    if since_us >= until_us:
        raise ApiError(400, "since must be before until", field="since")
    compare = request.query.get("compare")
    if compare not in (None, "", "previous"):
        raise ApiError(400, "compare must be previous (the period of equal length just before)", field="compare")
    length = until_us - since_us
    if compare and since_us - length < _FIRST_US:
        raise ApiError(400, f"the previous period would start before {_CALENDAR}", field="compare")
    store = request.app[STORE]
    window = EventFilter(keys=query.where.keys, since_us=since_us, until_us=until_us, where=query.where.where)
    body: dict[str, object] = {
        "interval": interval,
        "tz": tz_name,
        "since": format_rfc3339_us(since_us),
        "until": format_rfc3339_us(until_us),
        **await _period(request, window, interval, zone, unique_path),
    }
    periods = [body]
    if compare == "previous":
        before = replace(window, since_us=since_us - length, until_us=since_us)
        body["previous"] = previous = {
            "since": format_rfc3339_us(since_us - length),
            "until": format_rfc3339_us(since_us),
            **await _period(request, before, interval, zone, unique_path),
        }
        periods.append(previous)
    if restricted:
        check_group(request, window, (cast(int, period["total"]) for period in periods))
    if breakdown_path is not None:
        found = await run_read(request, store.run, store.queries.breakdown, window, breakdown_path, limit)
        shown = shown_groups(request, found)
        breakdown: list[dict[str, object]] = [{"value": value, "count": n} for value, n in shown]
        rest = found.total - found.missing - sum(n for _, n in shown)
        if rest > 0:
            breakdown.append({"value": None, "other": True, "count": rest})
        body["breakdown"] = breakdown
        # Events without the property: apart, so they never crowd out real values.
        body["missing"] = found.missing
    return json_response(body)


async def keys(request: web.Request) -> web.Response:
    """GET /keys: every key with its count and first and last timestamps."""
    store = request.app[STORE]
    rows = await run_read(request, store.run, store.queries.keys_summary)
    return json_response(
        {
            "keys": [
                {
                    "key": key,
                    "count": count,
                    "first_seen": format_rfc3339_us(first),
                    "last_seen": format_rfc3339_us(last),
                }
                for key, count, first, last in rows
            ]
        }
    )
