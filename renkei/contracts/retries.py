"""Timeouts and retry policies, by name.

The hub's activities are short local activities: retried with a capped backoff until their
start-to-close timeout, so a database blip does not fail a flow. A linkage's retries come from
its BPF step (``retry:``), but never retry what no retry can change (see
:data:`renkei.contracts.failures.FINAL_LINKAGE_FAILURES`).
"""

from __future__ import annotations

from datetime import timedelta

from temporalio.common import RetryPolicy

from renkei.bpf.models import RetrySpec
from renkei.contracts.failures import FINAL_LINKAGE_FAILURES

HUB_TIMEOUT = timedelta(seconds=30)
HUB_RETRY = RetryPolicy(maximum_interval=timedelta(seconds=10))
# A run asking the hub over its endpoint (a local activity, retried within the run's workflow
# task) tries this long and this often (a hub too slow: once), then asks on the hub's queue
# instead: an endpoint out of reach costs a run a few seconds and a few events in its history,
# not events every few seconds for as long as the outage lasts.
ENDPOINT_TIMEOUT = timedelta(seconds=10)
ENDPOINT_RETRY = RetryPolicy(maximum_interval=timedelta(seconds=4), maximum_attempts=3)
# A local activity that retries (this one, and a linkage over the direct channel) is given a
# schedule-to-close timeout only, and each attempt bounds its own time in the activity: Temporal's
# core SDK leaves an attempt's start-to-close timer running once the attempt has ended (sdk-rust
# issue 1454, open in the SDK this release uses), so it times out the next attempt however little
# of its own time that one has used, and each later one likewise (a linkage answered in time at
# its second attempt failed). This one's: every try and the pauses between them (1 s, 2 s), with
# a second to spare.
ENDPOINT_DEADLINE = ENDPOINT_TIMEOUT * 3 + timedelta(seconds=4)
# At most this many linkages in one call to the hub (hub.broker-group), so one call stays well
# within the hub's timeout however many lanes a parallel step has.
BROKER_GROUP_LIMIT = 50
# The longest a linkage's budget (its permit's lifetime) may be, in seconds: a day.
MAX_BUDGET_SECONDS = 86_400
# A life-event scan reads a whole cohort from the executor's own register.
SCAN_TIMEOUT = timedelta(minutes=5)


def linkage_retry(retry: RetrySpec) -> RetryPolicy:
    """The retry policy of one linkage, from its step's ``retry:``."""
    return RetryPolicy(
        maximum_attempts=retry.max_attempts,
        initial_interval=retry.initial_interval,
        maximum_interval=retry.maximum_interval,
        backoff_coefficient=retry.backoff,
        non_retryable_error_types=[f.value for f in FINAL_LINKAGE_FAILURES],
    )


def budget_seconds(timeout: timedelta, attempts: int, pause: timedelta) -> int:
    """How long a linkage may take with every retry: the permit must outlive it."""
    total = timeout * attempts + pause * max(attempts - 1, 0)
    return max(1, min(int(total.total_seconds()), MAX_BUDGET_SECONDS))
