"""How a flow's steps end, decided without Temporal's help: pure functions of what the SDK
raised, unit-tested on their own (tests/unit/test_interpreter_failures.py).

- :func:`step_failure`: the flow's failure for an activity that failed for good — where (the
  step) and why, as one of renkei's failure types;
- :func:`local_failure`: the same for a local activity (the direct channel's linkage), which
  the SDK raises as its cause itself;
- :func:`first_failure`: of a parallel step's lanes, the failure that caused the others'
  cancellation.
"""

from __future__ import annotations

from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    CancelledError,
    RetryState,
    TimeoutType,
)
from temporalio.exceptions import TimeoutError as StepTimeout

from renkei.contracts.failures import TIMED_OUT, Failure
from renkei.contracts.names import DIRECT_LINKAGE


def first_failure(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The lane failure that caused the others' cancellation (not a cancellation itself)."""
    flat: list[BaseException] = []

    def collect(g: BaseExceptionGroup[BaseException]) -> None:
        for e in g.exceptions:
            collect(e) if isinstance(e, BaseExceptionGroup) else flat.append(e)

    collect(group)
    for e in flat:
        # A lane cancelled because another failed ends in an ActivityError without a failure
        # cause (or with a cancellation): that is the consequence, not the reason.
        if not isinstance(e, ActivityError) or not (
            e.cause is None or isinstance(e.cause, CancelledError)
        ):
            return e
    return flat[0]


def step_failure(err: ActivityError, context: str | None = None) -> ApplicationError:
    """The flow's failure for an activity that failed for good: where (by default the step the
    activity ran for), and why."""
    if context is None:
        context = f"step {err.activity_id}" if err.activity_id else "a step"
    cause = err.cause
    if isinstance(cause, ApplicationError):
        return ApplicationError(f"{context}: {cause.message}", type=cause.type, non_retryable=True)
    if isinstance(cause, StepTimeout):
        kind = cause.type.name.lower().replace("_", "-") if cause.type else "activity"
        state = err.retry_state
        if (
            err.activity_type == DIRECT_LINKAGE
            and state == RetryState.CANCEL_REQUESTED
            and cause.type == TimeoutType.START_TO_CLOSE
        ):
            # The SDK ends a local activity (the direct channel's linkage) whose last attempt
            # timed out by cancelling that attempt, and gives that as the retry state: its
            # retries ended with its attempts (a budget spent is a schedule-to-close timeout,
            # a cancellation of the flow's its cause).
            state = RetryState.MAXIMUM_ATTEMPTS_REACHED
        retries = state.name.lower().replace("_", " ") if state else None
        return Failure.STEP_TIMED_OUT.error(
            f"{context}: no answer in time ({kind} timeout)"
            + (f"; retries: {retries}" if retries else "")
        )
    return Failure.STEP_FAILED.error(f"{context}: {err.message}")


def local_failure(
    err: ApplicationError | StepTimeout | CancelledError, context: str
) -> ApplicationError:
    """The flow's failure for a local activity that failed for good, as :func:`step_failure`
    gives it for an activity: the SDK raises a local activity's cause itself."""
    if (
        isinstance(err, ApplicationError)
        and Failure.PROVIDER_ERROR.caused(err)
        and TIMED_OUT in err.details
    ):
        # A direct linkage's last attempt ran out of its own time (it bounds it itself, the SDK's
        # timer left out: renkei.contracts.retries): as an attempt Temporal timed out, its
        # retries spent (the step's budget spent is a schedule-to-close timeout, below).
        return Failure.STEP_TIMED_OUT.error(
            f"{context}: no answer in time (start-to-close timeout); retries: maximum attempts"
            " reached"
        )
    if isinstance(err, ApplicationError):
        return ApplicationError(f"{context}: {err.message}", type=err.type, non_retryable=True)
    if isinstance(err, StepTimeout):
        kind = err.type.name.lower().replace("_", "-") if err.type else "activity"
        return Failure.STEP_TIMED_OUT.error(f"{context}: no answer in time ({kind} timeout)")
    return Failure.STEP_FAILED.error(f"{context}: cancelled")
