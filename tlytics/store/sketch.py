"""HyperLogLog sketches of distinct property values, as the stores keep them per 15-minute
bucket for the properties declared with `--unique-property`.

A sketch is 2^PRECISION registers of one byte each, stored zlib-compressed (a sketch of a
few hundred values is mostly zeros). The value hashed is the property's SQL value tagged by
kind, so two values are one exactly when SQLite's `count(DISTINCT json_extract(…))` (the
exact count) takes them as one: `1` and `1.0` and `true` are one value, `1` and `"1"` two;
null and a missing property are not counted.

No dependency fits: Apache DataSketches' Python bindings require numpy. The union of many
sketches is the hot path of a read, so registers are merged as one big integer (SWAR: eight
bits per register, a register's max computed for all lanes at once by integer arithmetic in
C) instead of byte by byte in Python. The estimate is Otmar Ertl's improved estimator
("New cardinality estimation algorithms for HyperLogLog sketches", 2017), unbiased over
the whole range without empirical correction tables.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import zlib
from collections.abc import Callable, Iterable, Sequence
from typing import Any

PRECISION = 12
REGISTERS = 1 << PRECISION
# The relative standard error of an estimate (1.04 / sqrt(m)): 1.6 %.
RELATIVE_ERROR = round(1.04 / math.sqrt(REGISTERS), 4)
# The most events in range whose distinct values of a --unique-property (also declared, so
# its values are stored) are counted exactly from those values; over a wider range its
# sketches answer (estimates, with RELATIVE_ERROR). count(DISTINCT value) grows with the
# events (2.6 µs an event on the busy 2-core bench machine), a merge of sketches with the
# 15-minute buckets only: on 3M events over 60 days, same run, 1 day exact 63 ms /
# sketched 30 ms, 7 days 1.2 s / 0.11 s, 30 days 4.1 s / 0.66 s (bench/README.md, issue 21).
EXACT_UNIQUE_MAX_EVENTS = 1_000_000
_RANK_BITS = 64 - PRECISION
_RANK_MASK = (1 << _RANK_BITS) - 1
# Registers hold at most _RANK_BITS + 1 = 53 < 128: the top bit of every byte lane is free
# for the comparison in `_lane_max`.
_HIGH_BITS = int.from_bytes(b"\x80" * REGISTERS, "big")
_ALPHA_INF = 1 / (2 * math.log(2))


def value_hash(value: Any) -> int | None:
    """The 64-bit hash of a property's SQL value (as json_extract gives it), None for a
    value not counted (null or missing)."""
    if value is None:
        return None
    if isinstance(value, str):
        text = "s" + value
    elif isinstance(value, float) and value.is_integer() and -(2**63) <= value < 2**63:
        text = f"n{int(value)}"  # SQLite's DISTINCT takes 1.0 and 1 as one value
    else:
        text = f"n{value!r}"
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "big")


def add_hashes(registers: bytearray, hashes: Iterable[int]) -> None:
    """Add hashed values to `registers` (REGISTERS bytes), in place."""
    for hashed in hashes:
        index = hashed >> _RANK_BITS
        rank = _RANK_BITS + 1 - (hashed & _RANK_MASK).bit_length()
        if rank > registers[index]:
            registers[index] = rank


def encode(registers: bytes | bytearray) -> bytes:
    return zlib.compress(registers, 1)


def decode(blob: bytes) -> bytes:
    registers = zlib.decompress(blob)
    if len(registers) != REGISTERS:
        raise ValueError(f"a sketch has {REGISTERS} registers, this one {len(registers)}")
    return registers


def _lane_max(a: int, b: int) -> int:
    """Byte-wise max of two packed register arrays (every byte < 128)."""
    a_not_less = ((a | _HIGH_BITS) - b) & _HIGH_BITS  # lane's top bit: a >= b there
    low_bits = a_not_less >> 7
    mask = (low_bits << 8) - low_bits  # 0xFF in the lanes where a >= b
    return b ^ ((a ^ b) & mask)


class Union:
    """The union of sketches and loose hashed values: what one sketch of all of them holds."""

    def __init__(self) -> None:
        self._packed = 0  # registers from sketches, big-endian, one byte each
        self._loose = bytearray(REGISTERS)  # registers from values added one by one

    def add_sketch(self, blob: bytes) -> None:
        self._packed = _lane_max(self._packed, int.from_bytes(decode(blob), "big"))

    def add_hashes(self, hashes: Iterable[int]) -> None:
        add_hashes(self._loose, hashes)

    def add_union(self, other: Union) -> None:
        self._packed = _lane_max(self._packed, _lane_max(other._packed, int.from_bytes(other._loose, "big")))

    def registers(self) -> bytes:
        return _lane_max(self._packed, int.from_bytes(self._loose, "big")).to_bytes(REGISTERS, "big")

    def estimate(self) -> int:
        return estimate(self.registers())


def _sigma(x: float) -> float:
    if x == 1:
        return math.inf
    y, z = 1.0, x
    while True:
        x *= x
        previous = z
        z += x * y
        y += y
        if z == previous:
            return z


def _tau(x: float) -> float:
    if x in (0, 1):
        return 0.0
    y, z = 1.0, 1 - x
    while True:
        x = math.sqrt(x)
        previous = z
        y *= 0.5
        z -= (1 - x) ** 2 * y
        if z == previous:
            return z / 3


def estimate(registers: bytes) -> int:
    """The number of distinct values a sketch saw, rounded (Ertl's improved estimator)."""
    histogram = [0] * (_RANK_BITS + 2)
    for rank in range(_RANK_BITS + 2):
        histogram[rank] = registers.count(rank)
    m = REGISTERS
    z = m * _tau(1 - histogram[_RANK_BITS + 1] / m)
    for rank in range(_RANK_BITS, 0, -1):
        z = 0.5 * (z + histogram[rank])
    z += m * _sigma(histogram[0] / m)
    if math.isinf(z):
        return 0
    return round(_ALPHA_INF * m * m / z)


def unique_counts_in_range(
    starts_us: Sequence[int],
    end_us: int,
    since_us: int | None,
    until_us: int | None,
    bucket_us: int,
    whole_buckets: Callable[[int, int], Iterable[bytes]],
    edge_values: Callable[[int, int], Iterable[Any]],
) -> tuple[list[int], int]:
    """Distinct values per interval (`starts_us`… up to `end_us`) and over all of them, as
    one HLL over exactly the events in [since, until): the stored sketches of the whole
    buckets inside each interval (`whole_buckets(first, last)`: the encoded sketches of
    buckets first ≤ b < last) merged with the values of its ragged edges
    (`edge_values(low, high)`: the property's value of each event with low ≤ ts < high),
    hashed as the writer hashes them. One algorithm for both stores; they supply the reads."""
    per_interval: list[int] = []
    total = Union()
    for start, end in itertools.pairwise([*starts_us, end_us]):
        low = start if since_us is None else max(start, since_us)
        high = end if until_us is None else min(end, until_us)
        union = Union()
        if low < high:
            first_whole = -(-low // bucket_us)  # ceil
            last_whole = high // bucket_us
            edges = [(low, high)]
            if first_whole < last_whole:
                for blob in whole_buckets(first_whole, last_whole):
                    union.add_sketch(blob)
                edges = [(low, first_whole * bucket_us), (last_whole * bucket_us, high)]
            for edge_low, edge_high in edges:
                if edge_low < edge_high:
                    hashes = (value_hash(value) for value in edge_values(edge_low, edge_high))
                    union.add_hashes(hashed for hashed in hashes if hashed is not None)
        per_interval.append(union.estimate())
        total.add_union(union)
    return per_interval, total.estimate()
