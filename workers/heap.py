"""A worker process's heap once its workers run: what start-up built, kept out of the collector's
way.

A process holds, from its start to its end, the whitelist and its index, the catalog, the
definitions, the modules and the workers themselves. Python's cyclic collector walks every one
of those objects again at each full collection: with the sample agencies loaded, about 100 ms
during which every party of the process stands still (a flow waiting on it, a provider's answer,
a record's commit), a few times a minute under load. :func:`settled` collects once what start-up
left behind and moves what is left out of the collections (``gc.freeze``) while the workers run;
the collector then walks only what the flows allocate. Reference counting still frees a frozen
object that nothing refers to any more; only a frozen cycle waits for the block's end, when
everything frozen is handed back to the collector (``gc.unfreeze``), so a process that starts
workers again and again (the tests) keeps nothing of a set it stopped.

Measured (``docs/benchmarks.md``): the collector's time in a busy control process went from 3.7 %
to 1.9 % of the wall time, its longest pause from about 100 to 30 ms.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

_settled = 0  # how many blocks of :func:`settled` run in this process now


@contextlib.contextmanager
def settled() -> Iterator[int]:
    """Start-up's garbage collected and the rest frozen while the block runs (yields how many
    objects are frozen); frozen objects handed back to the collector once the last of the
    blocks running at once ends (a process may run two sets of workers, started one after the
    other: the second freezes what it built too, and the first to stop hands back nothing the
    other still runs on)."""
    global _settled
    gc.collect()
    gc.freeze()
    _settled += 1
    try:
        yield gc.get_freeze_count()
    finally:
        _settled -= 1
        if _settled == 0:
            gc.unfreeze()
