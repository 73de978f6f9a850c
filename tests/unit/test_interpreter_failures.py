"""How the interpreter turns a failed activity, and a failed parallel step, into the flow's failure.

The helpers live in ``workflows.outcomes`` (``step_failure``, ``local_failure``,
``first_failure``); they are pure, so they are called here with temporalio exceptions built by hand.
"""

from __future__ import annotations

from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    CancelledError,
    RetryState,
    TimeoutError,
    TimeoutType,
)

from renkei.contracts.failures import Failure
from workflows.outcomes import first_failure as _first
from workflows.outcomes import local_failure as _local_failure
from workflows.outcomes import step_failure as _application_failure


def activity_error(
    cause: BaseException | None,
    *,
    activity_id: str = "tax",
    retry_state: RetryState | None = None,
    message: str = "activity error",
    activity_type: str = "query.local-tax",
) -> ActivityError:
    """An ActivityError as the SDK raises it in a workflow: the reason is its cause."""
    err = ActivityError(
        message,
        scheduled_event_id=5,
        started_event_id=6,
        identity="worker@test",
        activity_type=activity_type,
        activity_id=activity_id,
        retry_state=retry_state,
    )
    err.__cause__ = cause
    return err


def timeout(kind: TimeoutType | None = TimeoutType.START_TO_CLOSE) -> TimeoutError:
    return TimeoutError("activity timeout", type=kind, last_heartbeat_details=[])


def cancelled_lane() -> ActivityError:
    """A lane cancelled because another lane failed."""
    return activity_error(CancelledError("cancelled"), activity_id="pension")


# -- an activity that failed for good ----------------------------------------------------------


def test_an_application_failure_keeps_its_type_and_message_under_the_step() -> None:
    cause = Failure.PROVIDER_ERROR.error("register offline")
    out = _application_failure(activity_error(cause))
    assert out.type == "ProviderError"
    assert out.message == "step tax: register offline"


def test_an_application_failure_becomes_non_retryable() -> None:
    cause = ApplicationError("flaky", type="Custom", non_retryable=False)
    assert _application_failure(activity_error(cause)).non_retryable


def test_a_given_context_replaces_the_step() -> None:
    cause = Failure.UNKNOWN_BPF.error("no such flow")
    out = _application_failure(activity_error(cause), "the flow could not start")
    assert out.message == "the flow could not start: no such flow"


def test_an_activity_without_an_id_is_a_step() -> None:
    cause = Failure.PROVIDER_ERROR.error("boom")
    out = _application_failure(activity_error(cause, activity_id=""))
    assert out.message == "a step: boom"


def test_a_timeout_is_step_timed_out_naming_the_timeout_kind() -> None:
    out = _application_failure(activity_error(timeout(TimeoutType.START_TO_CLOSE)))
    assert Failure.STEP_TIMED_OUT.caused(out)
    assert out.message == "step tax: no answer in time (start-to-close timeout)"


def test_a_timeout_names_why_the_retries_ended() -> None:
    err = activity_error(
        timeout(TimeoutType.SCHEDULE_TO_CLOSE), retry_state=RetryState.MAXIMUM_ATTEMPTS_REACHED
    )
    out = _application_failure(err)
    assert out.message == (
        "step tax: no answer in time (schedule-to-close timeout); retries: maximum attempts reached"
    )


def test_a_direct_linkage_timed_out_on_its_last_attempt_says_its_attempts_were_spent() -> None:
    """The SDK ends a local activity whose last attempt timed out by cancelling it, and says
    "cancel requested": the step's attempts were spent, as through a provider's queue."""
    err = activity_error(
        timeout(TimeoutType.START_TO_CLOSE),
        retry_state=RetryState.CANCEL_REQUESTED,
        activity_type="renkei.direct-linkage",
    )
    assert _application_failure(err).message == (
        "step tax: no answer in time (start-to-close timeout); retries: maximum attempts reached"
    )
    # an activity on a queue says what the server says
    queued = activity_error(
        timeout(TimeoutType.START_TO_CLOSE), retry_state=RetryState.CANCEL_REQUESTED
    )
    assert _application_failure(queued).message.endswith("retries: cancel requested")


def test_a_timeout_of_unknown_kind_is_an_activity_timeout() -> None:
    out = _application_failure(activity_error(timeout(None)))
    assert out.message == "step tax: no answer in time (activity timeout)"


def test_a_timed_out_step_is_not_retried_by_the_flow() -> None:
    assert _application_failure(activity_error(timeout())).non_retryable


def test_any_other_cause_is_step_failed_with_the_activitys_message() -> None:
    err = activity_error(CancelledError("cancelled"), message="activity cancelled")
    out = _application_failure(err)
    assert Failure.STEP_FAILED.caused(out)
    assert out.message == "step tax: activity cancelled"
    assert out.non_retryable


def test_an_activity_error_without_a_cause_is_step_failed() -> None:
    out = _application_failure(activity_error(None, message="activity failed"))
    assert Failure.STEP_FAILED.caused(out) and out.message == "step tax: activity failed"


# -- a local activity (the direct channel's linkage) that failed for good ---------------------
# The SDK raises a local activity's cause itself, not an ActivityError around it.


def test_a_local_application_failure_keeps_its_type_and_message_under_the_context() -> None:
    cause = ApplicationError("register offline", type="ProviderError", non_retryable=False)
    out = _local_failure(cause, "step tax")
    assert out.type == "ProviderError"
    assert out.message == "step tax: register offline"
    assert out.non_retryable


def test_a_local_timeout_is_step_timed_out_naming_the_timeout_kind() -> None:
    out = _local_failure(timeout(TimeoutType.SCHEDULE_TO_CLOSE), "step tax")
    assert Failure.STEP_TIMED_OUT.caused(out)
    assert out.message == "step tax: no answer in time (schedule-to-close timeout)"
    assert out.non_retryable


def test_a_local_timeout_of_unknown_kind_is_an_activity_timeout() -> None:
    out = _local_failure(timeout(None), "step tax")
    assert out.message == "step tax: no answer in time (activity timeout)"


def test_a_local_cancellation_is_step_failed() -> None:
    out = _local_failure(CancelledError("cancelled"), "step tax")
    assert Failure.STEP_FAILED.caused(out)
    assert out.message == "step tax: cancelled"
    assert out.non_retryable


# -- a parallel step: which lane's failure is the step's ---------------------------------------


def test_the_failed_lane_wins_over_a_lane_cancelled_before_it() -> None:
    failed = activity_error(Failure.PROVIDER_ERROR.error("down"))
    group = BaseExceptionGroup("lanes", [cancelled_lane(), failed])
    assert _first(group) is failed


def test_a_lane_ended_without_a_cause_is_taken_for_cancelled() -> None:
    failed = Failure.LINKAGE_DENIED.error("step tax: linkage denied by the whitelist")
    group = BaseExceptionGroup("lanes", [activity_error(None), failed])
    assert _first(group) is failed


def test_a_failure_raised_by_the_flow_itself_counts_as_the_lanes_failure() -> None:
    denied = Failure.LINKAGE_DENIED.error("step pension: linkage denied by the whitelist")
    group = BaseExceptionGroup("lanes", [cancelled_lane(), denied])
    assert _first(group) is denied


def test_of_two_failed_lanes_the_first_listed_is_reported() -> None:
    one = activity_error(Failure.PROVIDER_ERROR.error("one"), activity_id="tax")
    two = activity_error(Failure.PROVIDER_ERROR.error("two"), activity_id="pension")
    assert _first(BaseExceptionGroup("lanes", [one, two])) is one


def test_a_failure_in_a_nested_parallel_step_is_found() -> None:
    failed = activity_error(timeout())
    inner = BaseExceptionGroup("inner lanes", [cancelled_lane(), failed])
    group = BaseExceptionGroup("lanes", [cancelled_lane(), inner])
    assert _first(group) is failed


def test_when_every_lane_was_cancelled_the_first_is_reported() -> None:
    lanes = [cancelled_lane(), activity_error(None)]
    assert _first(BaseExceptionGroup("lanes", lanes)) is lanes[0]
