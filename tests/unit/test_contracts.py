"""The public surface and the wire contract, without servers."""

from __future__ import annotations

import subprocess
import sys
import typing

import renkei
from renkei.bpf.admission import RefusalKind
from renkei.bpf.models import RetrySpec
from renkei.contracts.failures import FINAL_LINKAGE_FAILURES, Failure
from renkei.contracts.names import agency_queue, control_queue, query_activity, workflow_id
from renkei.contracts.retries import linkage_retry


def test_every_public_name_resolves_from_the_package() -> None:
    for name in renkei.__all__:
        value = getattr(renkei, name)
        if isinstance(value, type):  # (Provider is a type alias)
            assert value.__name__ == name


def test_importing_the_kernel_does_not_import_the_application() -> None:
    code = (
        "import sys, renkei.kernel.settings, renkei.kernel.records;"
        "print(sorted(m for m in sys.modules if m.startswith(('renkei.app', 'workers', 'workflows'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_every_refused_start_is_a_failure_type_on_the_wire() -> None:
    for kind in typing.get_args(RefusalKind):
        assert Failure(kind).value == kind


def test_a_failure_builds_the_error_it_is_recognised_by() -> None:
    err = Failure.NO_MATCH.error("city-minato holds no local-tax for this subject")
    assert err.type == "NoMatch" and err.non_retryable
    assert Failure.NO_MATCH.caused(err) and not Failure.WHITELIST_DENIED.caused(err)
    assert not Failure.NO_MATCH.caused(ValueError("NoMatch"))


def test_a_linkage_never_retries_a_final_answer() -> None:
    policy = linkage_retry(RetrySpec())
    assert set(policy.non_retryable_error_types or []) == {f.value for f in FINAL_LINKAGE_FAILURES}
    assert {"WhitelistDenied", "NoMatch", "MalformedLinkage"} <= set(
        policy.non_retryable_error_types or []
    )


def test_names_on_the_wire() -> None:
    assert query_activity("local-tax") == "query.local-tax"
    assert agency_queue("renkei", "city-minato") == "renkei.agency.city-minato"
    assert control_queue("renkei") == "renkei.control"
    assert workflow_id("child-allowance-check", "city-minato", "2026-1") == (
        "child-allowance-check/city-minato/2026-1"
    )


def test_a_hold_written_without_a_time_zone_is_taken_as_utc() -> None:
    import datetime as dt

    from renkei.contracts.messages import DisclosureHold

    hold = DisclosureHold(until="2027-01-31T00:00:00", reason="investigation")
    assert hold.until == dt.datetime(2027, 1, 31, tzinfo=dt.UTC)
