"""Funnels: how many distinct actors (the values of a `by` property) went through a sequence of
steps (event keys) in order, each step strictly later than the one before, every step within
`within` of the first one. The stores read the rows; the counting is here, once for both.

An actor reaches step k when some event of step 1 starts a chain that reaches k in time. For a
given start, taking at each step the earliest event after the previous one reaches as deep as
any other choice (an earlier event never closes a door a later one opens), so each start is
walked once, greedily; the actor's depth is the deepest over its starts.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence


def indexes_of(steps: Sequence[str]) -> dict[str, list[int]]:
    """Each step's key with the indexes it holds in `steps` (a key may be several steps)."""
    indexes: dict[str, list[int]] = {}
    for index, key in enumerate(steps):
        indexes.setdefault(key, []).append(index)
    return indexes


def count_funnel(rows: Iterable[tuple[Hashable, int, int]], step_count: int, within_us: int) -> list[int]:
    """Per step, how many actors reached it, from (actor, step index, timestamp µs) rows in
    timestamp order (one event may be several steps: one row per step it is)."""
    timelines: dict[Hashable, list[tuple[int, int]]] = {}
    for actor, step, ts in rows:
        timeline = timelines.get(actor)
        if timeline is None:
            if step != 0:
                continue  # an actor's events before its first step 1 never count
            timelines[actor] = timeline = []
        timeline.append((ts, step))
    reached = [0] * step_count
    for timeline in timelines.values():
        depth = _deepest(timeline, step_count, within_us)
        for step in range(depth):
            reached[step] += 1
    return reached


def _deepest(timeline: Sequence[tuple[int, int]], step_count: int, within_us: int) -> int:
    """How many steps one actor's timeline (in time order, starting with a step 1) reaches."""
    deepest = 0
    latest_start = None
    for index, (start_ts, step) in enumerate(timeline):
        if step != 0 or start_ts == latest_start:
            continue  # a start at the same moment as the last one reaches no further
        latest_start = start_ts
        depth, last_ts, deadline = 1, start_ts, start_ts + within_us
        out_of_time = False
        for ts, later_step in timeline[index + 1 :]:
            if depth == step_count:
                break
            if ts > deadline:
                out_of_time = True
                break
            if later_step == depth and ts > last_ts:
                depth, last_ts = depth + 1, ts
        deepest = max(deepest, depth)
        if deepest == step_count or not out_of_time:
            break  # a later start would only see fewer of the same events
    return deepest
