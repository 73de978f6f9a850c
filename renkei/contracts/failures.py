"""Every failure type that crosses Temporal, named once.

A failure's ``type`` is part of the wire contract: the interpreter tells a denial from a
provider's error by it, retry policies list the non-retryable ones, the HTTP API maps them to
status codes and the conformance kit checks for them. Each is raised through :meth:`Failure.error`
so no raise site spells the string by hand.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from temporalio.exceptions import ApplicationError


class Failure(StrEnum):
    """The ``type`` of an :class:`~temporalio.exceptions.ApplicationError` renkei raises."""

    # Starting a flow (hub.resolve, the HTTP API's admission).
    MALFORMED_START = "MalformedStart"
    UNKNOWN_BPF = "UnknownBpf"
    NOT_AN_EXECUTOR = "NotAnExecutor"
    WRONG_TRIGGER = "WrongTrigger"
    INVALID_INPUTS = "InvalidInputs"
    PURPOSE_MISMATCH = "PurposeMismatch"  # a child flow of another task than its caller's
    HOLD_NOT_APPROVED = "HoldNotApproved"  # a disclosure hold no second party approved
    SUSPENDED = "Suspended"  # a BPF version a platform operator suspended (the emergency stop)
    # A version the review after a change of the law left non-conformant: it admits no new run
    # from the day it stops conforming (renkei.bpf.review); the reason names the source and day.
    VERSION_STOPPED = "VersionStopped"
    UNKNOWN_SUBJECT = "UnknownSubject"
    # The hub's endpoint out of reach (none configured, a gRPC status instead of a sealed reply,
    # the hub's own fault): asked again, as an activity on the hub's queue no worker took.
    HUB_UNREACHED = "HubUnreached"
    # Life-event scans.
    NOT_TRIGGERED = "NotTriggered"
    SCAN_FAILED = "ScanFailed"
    # One linkage: the hub's and the provider's decisions, the provider's answer.
    LINKAGE_DENIED = "LinkageDenied"
    WHITELIST_DENIED = "WhitelistDenied"
    LINKAGE_REFUSED = "LinkageRefused"  # no valid hub permit for this very attempt
    MALFORMED_LINKAGE = "MalformedLinkage"
    UNKNOWN_ACTIVITY = "UnknownActivity"
    NOT_IMPLEMENTED = "NotImplemented"
    NO_MATCH = "NoMatch"
    FORGED_ANSWER = "ForgedAnswer"  # an answer the provider did not sign for this permit
    INVALID_ANSWER = "InvalidAnswer"  # a signed answer that does not fit its item's schema
    PROVIDER_ERROR = "ProviderError"
    # Waits, expressions, child flows and steps.
    NOT_WAITING = "NotWaiting"
    NOT_A_KIT_RUN = "NotAKitRun"  # the kit's clock, sent to a run that keeps Temporal's time
    INVALID_RESPONSE = "InvalidResponse"
    EXPRESSION_FAILED = "ExpressionFailed"
    CALL_FAILED = "CallFailed"
    STEP_TIMED_OUT = "StepTimedOut"
    STEP_FAILED = "StepFailed"

    def error(self, message: str, *details: Any, non_retryable: bool = True) -> ApplicationError:
        """An :class:`ApplicationError` of this type (non-retryable unless said otherwise)."""
        return ApplicationError(message, *details, type=self.value, non_retryable=non_retryable)

    def caused(self, err: BaseException | None) -> bool:
        """Whether ``err`` is an application failure of this type."""
        return isinstance(err, ApplicationError) and err.type == self.value


# A detail of a ``ProviderError`` over the direct channel: the provider's endpoint was not reached
# (none configured, or a gRPC status instead of a sealed reply): nothing the provider said, so the
# attempt's outcome is ``no_answer``, as for a linkage no worker took from the provider's queue.
UNREACHED = "provider-unreached"
# With it, when the attempt ran out of its own time (no answer within the step's timeout): the
# step fails ``StepTimedOut`` once its attempts are spent, as an attempt timed out by Temporal.
TIMED_OUT = "attempt-timed-out"


# A provider's answers that no retry can change: the law said no, the request is malformed, or
# the provider holds nothing for the subject.
FINAL_LINKAGE_FAILURES: tuple[Failure, ...] = (
    Failure.WHITELIST_DENIED,
    Failure.LINKAGE_REFUSED,
    Failure.NO_MATCH,
    Failure.MALFORMED_LINKAGE,
    Failure.NOT_IMPLEMENTED,
    Failure.UNKNOWN_ACTIVITY,
)
