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


ACT_PREFIX = "act."


def act_activity(action: str) -> str:
    """The activity type of an act step: a partner org carrying out ``action``."""
    return f"{ACT_PREFIX}{action}"


def is_act_activity(activity_type: str) -> bool:
    return activity_type.startswith(ACT_PREFIX)


HUB = "hub"  # the hub's party id (its records' keeper, its channel's name)
SCAN_ID_PREFIX = "scan/"


def control_queue(prefix: str, executor: str | None = None) -> str:
    """The task queue of ``executor``'s control worker: its flows' workflows run there, on
    the executor's own side, with the executor's keys.

    Without ``executor``: the queue of the control worker from before executor-side control
    (the interpreter with the hub's activities in one process), kept for runs in flight.
    """
    return f"{prefix}.control.{executor}" if executor else f"{prefix}.control"


def control_parts(task_queue: str) -> tuple[str, str | None]:
    """(prefix, executor) of a control queue; the executor is ``None`` for the shared queue of
    runs from before executor-side control."""
    if ".control." in task_queue:
        prefix, executor = task_queue.rsplit(".control.", 1)
        return prefix, executor
    return task_queue.removesuffix(".control"), None


def hub_queue(prefix: str) -> str:
    """The task queue of the hub's activities (resolve, broker, translate, ...)."""
    return f"{prefix}.hub"


# The local activity by which a flow asks a provider over the direct channel
# (``activities.direct``), in the executor's own control worker.
DIRECT_LINKAGE = "renkei.direct-linkage"
# The local activity by which a flow asks the hub to resolve it over the hub's endpoint.
DIRECT_RESOLVE = "renkei.direct-resolve"


def agency_queue(prefix: str, org: str) -> str:
    """The task queue on which ``org``'s own worker serves its info items."""
    return f"{prefix}.agency.{org}"


def workflow_id(bpf: str, executor: str, case_ref: str) -> str:
    """The idempotent workflow id of one case: ``<bpf>/<executor>/<case reference>``.

    It names no one by construction: the BPF id, the executing org and the caller's own case
    reference (checked to hold no personal data when a flow starts).
    """
    return f"{bpf}/{executor}/{case_ref}"


def scan_workflow_id(bpf: str, executor: str, rule: str) -> str:
    """The id of a life-event scan: ``scan/<bpf>/<executor>/<rule>`` (a schedule appends the
    time of each run to it)."""
    return f"{SCAN_ID_PREFIX}{bpf}/{executor}/{rule}"


def executor_of(workflow_id: str) -> str | None:
    """The executor a flow's or a scan's workflow id names (``None``: not a renkei id)."""
    parts = workflow_id.split("/")
    if workflow_id.startswith(SCAN_ID_PREFIX):
        return parts[2] if len(parts) == 4 and parts[2] else None
    return parts[1] if len(parts) == 3 and parts[1] else None


def identity_prefix(party: str) -> str:
    """How a Temporal client identity acting for ``party`` begins (``<party>/``): the SDK names
    a worker's sticky queue after its identity, so each of ``party``'s sticky queue names begins
    so too, and the gateway lets no other party claim such a name."""
    return f"{party}/"


def party_of_queue(task_queue: str) -> str | None:
    """The party whose worker serves ``task_queue``: the hub, an agency, or an executor."""
    if task_queue.endswith(f".{HUB}"):
        return HUB
    for kind in (".agency.", ".control."):
        if kind in task_queue:
            return task_queue.rsplit(kind, 1)[1] or None
    return None
