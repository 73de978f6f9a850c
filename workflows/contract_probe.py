"""The contract probe run (``renkei contract ORG``): each probe through the org's own worker.

For each step it asks the hub's side (the ``renkei contract`` process, on the probe run's own
queue) for a probe permit, then sends the request to the org's task queue, where its whitelist
gate checks the permit and its worker answers, as in a linkage. One attempt each, within the
run's timeout: a worker that is down or does not answer makes the probe fail, it is not retried.
What came back (the signed answer, or the failure) is the run's result; the caller checks the
signatures and the schemas.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.exceptions import TimeoutError as StepTimeout

with workflow.unsafe.imports_passed_through():
    from renkei.contracts.failures import Failure
    from renkei.contracts.messages import LinkageRequest
    from renkei.contracts.names import act_activity, agency_queue, query_activity
    from renkei.contracts.probe import (
        PROBE_PERMIT_ACTIVITY,
        PROBE_WORKFLOW,
        PermitAsk,
        ProbeAnswer,
        ProbeRun,
    )

ONCE = RetryPolicy(maximum_attempts=1)


@workflow.defn(name=PROBE_WORKFLOW)
class ContractProbe:
    @workflow.run
    async def run(self, run: ProbeRun) -> list[ProbeAnswer]:
        out: list[ProbeAnswer] = []
        limit = timedelta(seconds=run.timeout_seconds)
        queue = agency_queue(run.task_queue_prefix, run.org)
        for step in run.steps:
            req = await workflow.execute_activity(
                PROBE_PERMIT_ACTIVITY,
                PermitAsk(org=run.org, step=step),
                result_type=LinkageRequest,
                task_queue=run.probe_queue,
                start_to_close_timeout=timedelta(seconds=30),
            )
            signature = req.permit.signature if req.permit is not None else ""
            kind = act_activity(step.info) if step.act else query_activity(step.info)
            try:
                answer: dict[str, Any] = await workflow.execute_activity(
                    kind,
                    req,
                    result_type=dict,
                    task_queue=queue,
                    activity_id=step.step,
                    schedule_to_close_timeout=limit,
                    retry_policy=ONCE,
                )
            except ActivityError as err:
                failed = _failed(step.step, step.info, signature, err, queue, limit)
                out.append(failed)
                if failed.failure_kind == "timeout":  # no worker: the rest is not asked
                    out += [
                        ProbeAnswer(
                            step=rest.step,
                            info=rest.info,
                            failure_kind="timeout",
                            failure=f"not asked: no answer on {queue} to an earlier probe",
                        )
                        for rest in run.steps[len(out) :]
                    ]
                    break
                continue
            out.append(
                ProbeAnswer(
                    step=step.step, info=step.info, permit_signature=signature, answer=answer
                )
            )
        return out


def _failed(
    step: str, info: str, signature: str, err: ActivityError, queue: str, limit: timedelta
) -> ProbeAnswer:
    cause = err.cause
    if isinstance(cause, StepTimeout):
        return ProbeAnswer(
            step=step,
            info=info,
            permit_signature=signature,
            failure_kind="timeout",
            failure=f"no answer on {queue} within {limit.total_seconds():g}s:"
            " is the org's worker running?",
        )
    if Failure.NO_MATCH.caused(cause) and isinstance(cause, ApplicationError):
        return ProbeAnswer(
            step=step,
            info=info,
            permit_signature=signature,
            failure_kind="no-match" if cause.non_retryable else "failed",
            failure=f"NoMatch (non-retryable={cause.non_retryable})",
        )
    refused = Failure.LINKAGE_REFUSED.caused(cause) or Failure.WHITELIST_DENIED.caused(cause)
    message = cause.message if isinstance(cause, ApplicationError) else str(cause)
    kind = cause.type if isinstance(cause, ApplicationError) else type(cause).__name__
    return ProbeAnswer(
        step=step,
        info=info,
        permit_signature=signature,
        failure_kind="refused" if refused else "failed",
        failure=f"{kind}: {message[:200]}",
    )
