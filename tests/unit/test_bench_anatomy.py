"""The anatomy bench's variants and its table."""

from __future__ import annotations

import functools
import operator

from bench.anatomy import VARIANTS, report


def test_the_last_variant_has_every_part_the_others_add_one_at_a_time() -> None:
    *single, (last, every) = VARIANTS.items()
    base, *parts = (features for _, features in single)
    assert base == 0
    assert all(p and not p & (p - 1) for p in parts), "each adds exactly one part"
    assert len(set(parts)) == len(parts)
    assert every == functools.reduce(operator.or_, parts)
    assert last.startswith("all of these")


def test_the_table_compares_each_row_with_plain() -> None:
    lines = report(
        {"plain: 1 activity": (16.0, 70.0), "+ two upserts": (17.5, 63.0), "renkei": (22.0, 46.2)},
        flows=150,
        rounds=9,
    )
    assert lines[0].startswith("| 150 flows at once, median of 9 rounds |")
    assert lines[2] == "| plain: 1 activity | 16.0 ms | +0.0 ms | 70.0 | 1.00 |"
    assert lines[3] == "| + two upserts | 17.5 ms | +1.5 ms | 63.0 | 0.90 |"
    assert lines[4] == "| renkei | 22.0 ms | +6.0 ms | 46.2 | 0.66 |"
