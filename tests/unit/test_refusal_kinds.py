"""Every kind of refused start is a failure type that crosses Temporal and has an HTTP status."""

from __future__ import annotations

from typing import get_args

from renkei.app.web.api import REFUSAL_STATUS
from renkei.bpf.admission import RefusalKind
from renkei.contracts.failures import Failure


def test_each_refusal_kind_is_a_failure_type_the_hub_can_raise() -> None:
    # hub.resolve raises Failure(refused.kind): a kind that is not one would fail as a bug.
    for kind in get_args(RefusalKind):
        assert Failure(kind).error("x").type == kind


def test_a_stopped_version_has_its_own_type_and_is_a_conflict() -> None:
    assert Failure.VERSION_STOPPED.value == "VersionStopped" != Failure.UNKNOWN_BPF.value
    assert REFUSAL_STATUS[Failure.VERSION_STOPPED] == 409
    assert Failure.UNKNOWN_BPF not in REFUSAL_STATUS  # an unknown BPF stays a 422
