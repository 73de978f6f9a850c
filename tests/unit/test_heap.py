"""A worker process keeps what start-up built out of the collector's way while its workers run,
and hands it back after (workers.heap)."""

from __future__ import annotations

import gc

from workers import heap


class _Cycle:
    def __init__(self) -> None:
        self.me = self


def test_start_up_is_frozen_while_the_block_runs_and_handed_back_after() -> None:
    kept = [_Cycle() for _ in range(10)]
    assert gc.get_freeze_count() == 0
    with heap.settled() as frozen:
        assert frozen > 0 and gc.get_freeze_count() > 0
        young = _Cycle()  # what the flows allocate stays collectable
        assert gc.is_tracked(young)
        del young
    assert gc.get_freeze_count() == 0  # a set stopped leaves nothing frozen
    assert all(k.me is k for k in kept)


def test_a_cycle_dropped_while_frozen_is_collected_after_the_block() -> None:
    import weakref

    cycle = _Cycle()
    gone = weakref.ref(cycle)
    with heap.settled():
        del cycle
        gc.collect()
        assert gone() is not None  # frozen: not collected while the workers run
    gc.collect()
    assert gone() is None  # handed back: collected


def test_two_sets_running_at_once_keep_their_heap_frozen_until_the_last_stops() -> None:
    with heap.settled():
        with heap.settled():
            assert gc.get_freeze_count() > 0
        assert gc.get_freeze_count() > 0  # the first set to stop hands back nothing
    assert gc.get_freeze_count() == 0
