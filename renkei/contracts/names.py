"""Activity, workflow and task-queue names: the addresses on the Temporal wire.

The interpreter calls the hub's activities by method reference (their names are on the
``@activity.defn`` decorators in :mod:`activities.hub`); everything addressed by a computed name
is computed here, so the worker that serves a queue and the workflow that sends to it cannot
disagree.
"""

from __future__ import annotations

QUERY_PREFIX = "query."
LIFE_EVENT_SCAN = "renkei.life-event-scan"
# A life-event scan's one linkage: the executor's own register, asked who reaches the event.
COHORT_ITEM = "resident-cohort"
COHORT_STEP = "cohort"


def query_activity(info: str) -> str:
    """The activity type of a linkage for info item ``info``: operators read it in the UI."""
    return f"{QUERY_PREFIX}{info}"


def is_query_activity(activity_type: str) -> bool:
    return activity_type.startswith(QUERY_PREFIX)


def control_queue(prefix: str) -> str:
    """The task queue of the control worker (the interpreter and the hub's activities)."""
    return f"{prefix}.control"


def agency_queue(prefix: str, org: str) -> str:
    """The task queue on which ``org``'s own worker serves its info items."""
    return f"{prefix}.agency.{org}"


def workflow_id(bpf: str, executor: str, case_ref: str) -> str:
    """The idempotent workflow id of one case: ``<bpf>/<executor>/<case reference>``.

    It names no one by construction: the BPF id, the executing org and the caller's own case
    reference (checked to hold no personal data when a flow starts).
    """
    return f"{bpf}/{executor}/{case_ref}"
