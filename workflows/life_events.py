"""Life-event triggers: a scheduled scan asks the executor's resident register who reaches the
event, and starts one flow per person.

The scan is itself a whitelisted linkage (``query.resident-cohort`` through the register's own
whitelist interceptor, which decides and records it). Each person's flow gets a case reference
the hub derives from the period and the person's code with a key of its own, so the workflow id
names no one, and a second scan of the same period (a retry, a backfill, a manual run) finds the
flows already started instead of starting them twice.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import (
    RawValue,
    SearchAttributeKey,
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import ActivityError, WorkflowAlreadyStartedError

from workflows.hub_calls import calls_hub_remotely, hub_call

with workflow.unsafe.imports_passed_through():
    from activities.hub import HubActivities
    from renkei.contracts.failures import Failure
    from renkei.contracts.messages import (
        PATHS,
        AttestRequest,
        CaseRefRequest,
        CohortParams,
        LinkageRequest,
        ScanRequest,
        ScanResult,
        StartFlow,
    )
    from renkei.contracts.names import (
        COHORT_ITEM,
        COHORT_STEP,
        LIFE_EVENT_SCAN,
        agency_queue,
        query_activity,
        workflow_id,
    )
    from renkei.contracts.retries import SCAN_TIMEOUT
    from renkei.kernel import search_attributes as sa
    from renkei.kernel.attest import is_providers
    from whitelist.decide import JST
    from whitelist.payloads import ResidentCohort
    from workflows.outcomes import step_failure

SCHEDULED_START = SearchAttributeKey.for_datetime("TemporalScheduledStartTime")
# Starts carry the platform's attestation (scans recorded before replay without it).
PLATFORM_STARTS = "platform-starts-v1"
# The register's answer is signed (scans recorded before replay without checking it).
SIGNED_ANSWERS = "signed-answers-v1"


def _years_before(d: date, years: int) -> date:
    try:
        return d.replace(year=d.year - years)
    except ValueError:  # 29 February in a common year
        return date(d.year - years, 3, 1)


def cohort_for(age: int, on: str, day: date) -> CohortParams:
    """The period a scan on ``day`` covers, and the birth dates that reach ``age`` in it."""
    if on == "birthday":
        start, end = day, day + timedelta(days=1)
        born_from, born_to = _years_before(start, age), _years_before(end, age)
    elif on == "school-year-start":
        # Children who are ``age`` on 1 April enter school that April (a scan in the autumn
        # prepares the notices for the coming school year).
        year = day.year + 1 if day.month >= 4 else day.year
        start, end = date(year, 4, 1), date(year + 1, 4, 1)
        born_from, born_to = date(year - 1 - age, 4, 2), date(year - age, 4, 2)
    elif on == "fiscal-year-start":
        year = day.year if day.month >= 4 else day.year - 1
        start, end = date(year, 4, 1), date(year + 1, 4, 1)
        born_from, born_to = date(year - age, 4, 1), date(year + 1 - age, 4, 1)
    else:
        raise ValueError(f"unknown life-event rule {on!r}")
    return CohortParams(
        age=age, on=on, period_start=start, period_end=end, born_from=born_from, born_to=born_to
    )


@workflow.defn(name=LIFE_EVENT_SCAN)
class LifeEventScan:
    # The request comes raw, so that the scan sees the channel it was written on (whether it calls
    # the hub remotely: ``workflows.hub_calls``).
    @workflow.run
    async def run(self, raw: RawValue) -> ScanResult:
        try:
            req = workflow.payload_converter().from_payload(raw.payload, ScanRequest)
        except Exception:  # written in clear, for another party, or not a scan request
            raise Failure.MALFORMED_START.error("a scan request this worker cannot read") from None
        remote = calls_hub_remotely(raw.payload)
        day = req.day
        if day is None:
            scheduled = workflow.info().typed_search_attributes.get(SCHEDULED_START)
            moment = scheduled or workflow.now()
            day = moment.astimezone(JST).date()
        cohort = cohort_for(req.age, req.on, day)
        try:
            target = await hub_call(
                HubActivities.scan_target, req, remote=remote, retry_policy=None
            )
        except ActivityError as err:
            raise step_failure(err, "the scan could not start") from None
        try:
            found: dict[str, Any] = await workflow.execute_activity(
                query_activity(COHORT_ITEM),
                LinkageRequest(
                    trigger="life-event",
                    params=cohort.model_dump(mode="json"),
                    requester=req.executor,
                    provider=req.executor,
                    task=target.task,
                    info=COHORT_ITEM,
                    subject="cohort",
                    bpf=req.bpf,
                    bpf_version=target.version,
                    content_hash=target.content_hash,
                    step=f"scan-{cohort.period_start.isoformat()}",
                    permit=target.permit,
                ),
                result_type=dict,
                task_queue=agency_queue(target.task_queue_prefix, req.executor),
                activity_id=COHORT_STEP,
                start_to_close_timeout=SCAN_TIMEOUT,
            )
        except ActivityError as err:
            cause = err.cause
            raise Failure.SCAN_FAILED.error(
                f"the resident register could not be asked: {getattr(cause, 'message', err)}"
            ) from None
        if target.permit is not None and workflow.patched(SIGNED_ANSWERS):
            # The register's answer counts only if the register signed it for this permit.
            opened = (
                is_providers(target.provider_key, found, target.permit.signature)
                if target.provider_key
                else None
            )
            if opened is None:
                raise Failure.FORGED_ANSWER.error(
                    f"the answer of {req.executor}'s register is not signed with its key"
                )
            found = opened
        codes = ResidentCohort.model_validate(found).codes
        refs = await hub_call(
            HubActivities.case_refs,
            CaseRefRequest(
                executor=req.executor,
                bpf=req.bpf,
                key=f"le{cohort.period_start:%Y%m%d}",
                codes=codes,
            ),
            remote=remote,
            retry_policy=None,
        )
        words: list[str | None] = [None] * len(codes)
        if workflow.patched(PLATFORM_STARTS):  # each start carries the platform's word
            words = list(
                await hub_call(
                    HubActivities.attest_starts,
                    AttestRequest(
                        bpf=req.bpf,
                        executor=req.executor,
                        starts=[
                            (workflow_id(req.bpf, req.executor, ref), code)
                            for code, ref in zip(codes, refs, strict=True)
                        ],
                    ),
                    remote=remote,
                    retry_policy=None,
                )
            )
        started = already = 0
        for code, ref, word in zip(codes, refs, words, strict=True):
            try:
                await workflow.start_child_workflow(
                    req.bpf,
                    StartFlow(
                        bpf=req.bpf,
                        version=target.version,
                        executor=req.executor,
                        subject=code,
                        trigger="life-event",
                        case_ref=ref,
                        attestation=word,
                        paths=PATHS,
                    ),
                    id=workflow_id(req.bpf, req.executor, ref),
                    task_queue=workflow.info().task_queue,
                    parent_close_policy=workflow.ParentClosePolicy.ABANDON,
                    id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                    search_attributes=TypedSearchAttributes(
                        [
                            SearchAttributePair(sa.BPF, req.bpf),
                            SearchAttributePair(sa.EXECUTOR, req.executor),
                            SearchAttributePair(sa.TRIGGER, "life-event"),
                            SearchAttributePair(sa.STATUS, "starting"),
                        ]
                    ),
                )
                started += 1
            except WorkflowAlreadyStartedError:
                already += 1
        return ScanResult(
            bpf=req.bpf,
            executor=req.executor,
            period_start=cohort.period_start,
            period_end=cohort.period_end,
            found=len(codes),
            started=started,
            already=already,
        )
