"""The anatomy bench's variants and its tables."""

from __future__ import annotations

from bench.anatomy import (
    ALL_OF_THESE,
    HUB_LOCAL,
    HUB_OVER_DIRECT,
    PATCH,
    PLAIN_WAIT,
    RENKEI_1Q,
    RENKEI_WAIT,
    RESOLVE,
    VARIANTS,
    WAIT_VARIANTS,
    report,
    report_waiting,
)


def test_each_part_is_added_alone_then_all_of_them_then_the_resolve_made_local() -> None:
    singles = [f for name, f in VARIANTS.items() if name.startswith("+ ")]
    assert VARIANTS["plain: 1 activity"] == 0
    assert all(p and not p & (p - 1) for p in singles), "each adds exactly one part"
    assert len(set(singles)) == len(singles)
    # renkei's history now is every part but the patch marker (runs from before record one)
    assert VARIANTS[ALL_OF_THESE] == RENKEI_1Q == sum(singles) - PATCH
    assert VARIANTS[HUB_OVER_DIRECT] == RENKEI_1Q | HUB_LOCAL


def test_the_waiting_variants_end_with_renkeis_waiting_history_and_its_resolve_made_local() -> None:
    assert WAIT_VARIANTS[PLAIN_WAIT] == 0
    parts = [f for name, f in WAIT_VARIANTS.items() if name.startswith("+ ")]
    assert all(p & RENKEI_WAIT == p for p in parts), "each part is one of renkei's"
    assert RENKEI_WAIT & RESOLVE and not RENKEI_WAIT & HUB_LOCAL
    assert WAIT_VARIANTS[HUB_OVER_DIRECT] == RENKEI_WAIT | HUB_LOCAL
    assert list(WAIT_VARIANTS)[-2:] == [
        "all of these, the activity's answer 2.8 KB (renkei's history, without renkei)",
        HUB_OVER_DIRECT,
    ]


def test_the_table_compares_each_row_with_plain() -> None:
    lines = report(
        {"plain: 1 activity": (16.0, 70.0), "+ an upsert": (17.5, 63.0), "renkei": (22.0, 46.2)},
        flows=150,
        rounds=9,
    )
    assert lines[0].startswith("| 150 flows at once, median of 9 rounds |")
    assert lines[2] == "| plain: 1 activity | 16.0 ms | +0.0 ms | 70.0 | 1.00 |"
    assert lines[3] == "| + an upsert | 17.5 ms | +1.5 ms | 63.0 | 0.90 |"
    assert lines[4] == "| renkei | 22.0 ms | +6.0 ms | 46.2 | 0.66 |"


def test_the_waiting_table_compares_start_and_resume_with_plain() -> None:
    lines = report_waiting(
        {PLAIN_WAIT: (10.0, 6.0), "renkei, waiting": (20.5, 7.5)}, flows=60, rounds=5
    )
    assert lines[0].startswith("| 60 flows waiting at once, median of 5 rounds |")
    assert lines[2] == f"| {PLAIN_WAIT} | 10.0 ms | 1.00 | 6.0 ms | 1.00 |"
    assert lines[3] == "| renkei, waiting | 20.5 ms | 2.05 | 7.5 ms | 1.25 |"
