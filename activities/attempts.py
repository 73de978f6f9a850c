"""The access record of one linkage attempt, as each party keeps it.

The hub keeps two records of every attempt (the requester's, under the requester's code, and
its own, under the subject id the citizen's view reads) and the provider's gate keeps a third,
under the provider's code. All three describe the same attempt — the same key, the same
decision, the same pinned definition — and differ only in whose chain they join and whose code
names the subject. This is the one place that says so.
"""

from __future__ import annotations

import datetime as dt

from renkei.contracts.messages import DisclosureHold, LinkageRequest, ParentFlow
from renkei.kernel.records import AccessRecord
from whitelist.decide import Decision


def attempt_key(workflow_id: str, run_id: str, step: str) -> str:
    """The idempotency key of an attempt: every party's record of it carries the same key."""
    return f"{workflow_id}/{run_id}/{step}"


# A record's reason, at most: the text of a refusal can carry what a request claimed, and a
# record's text columns hold at most 8,192 bytes (migration 0071). 2,000 characters are at most
# 8,000 bytes in UTF-8, so a record the platform makes is never refused for its size.
REASON_LIMIT = 2000


def clipped_reason(reason: str) -> str:
    """``reason``, cut to :data:`REASON_LIMIT` characters (the cut marked with an ellipsis)."""
    return reason if len(reason) <= REASON_LIMIT else reason[: REASON_LIMIT - 1] + "…"


def attempt_record(
    *,
    keeper: str,
    subject_code: str,
    req: LinkageRequest,
    decision: Decision,
    decided_at: dt.datetime,
    workflow_id: str,
    run_id: str,
    key: str,
    hold: DisclosureHold | None = None,
    parent: ParentFlow | None = None,
) -> AccessRecord:
    """``keeper``'s record of the attempt ``req``, decided as ``decision``."""
    return AccessRecord(
        keeper=keeper,
        attempt_key=key,
        decided_at=decided_at,
        requester=req.requester,
        provider=req.provider,
        task=req.task,
        info=req.info,
        legal_reference=decision.legal_reference,
        whitelist_row=decision.row.id if decision.row else None,
        subject_code=subject_code,
        bpf=req.bpf,
        bpf_version=req.bpf_version,
        content_hash=req.content_hash,
        workflow_id=workflow_id,
        run_id=run_id,
        step=req.step,
        outcome=decision.outcome,
        reason=clipped_reason(decision.reason),
        hold_until=hold.until if hold else None,
        hold_reason=hold.reason if hold else None,
        trigger=req.trigger,
        parent_workflow_id=parent.workflow_id if parent else None,
        parent_bpf=parent.bpf if parent else None,
        purpose_task=parent.task if parent else None,
        sub_task=decision.sub_task,
    )
