"""The PIA gate and the emergency stop, as pure decisions (whitelist.controls)."""

from __future__ import annotations

import datetime as dt

import pytest

from whitelist.controls import (
    ControlsIndex,
    Pia,
    Suspension,
    parties_needing_pias,
    sample_pias,
    screen,
)
from whitelist.decide import Decision
from whitelist.models import WhitelistRow

DAY = dt.date(2026, 11, 27)
NOW = dt.datetime(2026, 11, 27, 3, 0, tzinfo=dt.UTC)  # noon in Japan
ROW = WhitelistRow(
    id="annex2/57/x",
    source="annex2-2015",
    item="番号法別表第二 五十七項",
    requester_role="prefectural-governor-etc",
    task="child-rearing-allowance",
    provider_role="municipal-mayor",
    info="local-tax",
    legal_text="…",
    valid_from=dt.date(2017, 7, 18),
)
ALLOWED = Decision(allowed=True, row=ROW, reason="permitted by 番号法別表第二 五十七項")
TASK = "child-rearing-allowance"


def pia(org: str, **changes: object) -> Pia:
    return Pia(
        org=org,
        task=TASK,
        level="full",
        approved_on=dt.date(2025, 4, 1),
        review_due=dt.date(2030, 3, 31),
    ).model_copy(update=changes)


def both(**changes: object) -> list[Pia]:
    return [pia("pref-tokyo", **changes), pia("city-minato")]


def suspension(kind: str, target: str, **kw: object) -> Suspension:
    return Suspension.model_validate(
        {
            "kind": kind,
            "target": target,
            "reason": "a leak under investigation",
            "operator": "alice",
            "at": NOW,
            **kw,
        }
    )


def decide(index: ControlsIndex, decision: Decision = ALLOWED, **kw: object) -> Decision:
    args: dict[str, object] = {
        "requester": "pref-tokyo",
        "provider": "city-minato",
        "task": TASK,
        "bpf": "child-rearing-allowance-income-check",
        "bpf_version": 1,
        "at": NOW,
        **kw,
    }
    return screen(decision, index, **args)  # type: ignore[arg-type]


def test_a_linkage_with_both_parties_pias_in_force_goes_through_unchanged() -> None:
    assert decide(ControlsIndex(both())) is ALLOWED


@pytest.mark.parametrize(
    ("pias", "expected"),
    [
        ([pia("city-minato")], "pref-tokyo has no PIA"),
        ([pia("pref-tokyo")], "city-minato has no PIA"),
        (both(review_due=dt.date(2026, 11, 26)), "review was due on 2026-11-26"),
        (both(approved_on=dt.date(2026, 11, 28)), "not approved until 2026-11-28"),
        (both(status="withdrawn", note="the file was rebuilt"), "withdrawn"),
    ],
)
def test_a_missing_lapsed_or_withdrawn_pia_denies_with_its_reason(
    pias: list[Pia], expected: str
) -> None:
    d = decide(ControlsIndex(pias))
    assert not d.allowed and d.row is None
    assert expected in d.reason and "番号法第28条" in d.reason
    assert d.legal_reference == ""


def test_the_review_day_itself_still_counts_in_japan() -> None:
    # 2026-11-26 23:30 UTC is already the 27th in Japan: a review due on the 26th has passed.
    late = dt.datetime(2026, 11, 26, 23, 30, tzinfo=dt.UTC)
    index = ControlsIndex(both(review_due=dt.date(2026, 11, 26)))
    assert not decide(index, at=late).allowed
    assert decide(index, at=late - dt.timedelta(hours=9)).allowed


def test_one_body_with_itself_needs_its_one_pia() -> None:
    index = ControlsIndex([pia("city-minato")])
    assert decide(index, requester="city-minato").allowed


def test_a_denial_stays_the_whitelists_own() -> None:
    denied = Decision(allowed=False, reason="no whitelist row permits …")
    assert decide(ControlsIndex(), denied) is denied


@pytest.mark.parametrize(
    ("s", "kw", "denied"),
    [
        (suspension("org", "pref-tokyo", side="requester"), {}, True),
        (suspension("org", "pref-tokyo", side="provider"), {}, False),
        (suspension("org", "city-minato", side="provider"), {}, True),
        (suspension("org", "city-minato", side="requester"), {}, False),
        (suspension("org", "city-minato", side="both"), {}, True),
        (suspension("bpf", "child-rearing-allowance-income-check", version=1), {}, True),
        (suspension("bpf", "child-rearing-allowance-income-check", version=2), {}, False),
        (suspension("row", ROW.id), {}, True),
        (suspension("row", "annex2/57/other"), {}, False),
    ],
)
def test_a_suspension_denies_exactly_what_it_names(
    s: Suspension, kw: dict[str, object], denied: bool
) -> None:
    d = decide(ControlsIndex(both(), [s]), **kw)
    assert d.allowed is not denied
    if denied:
        assert d.reason.startswith("suspended: ") and "by alice" in d.reason
        assert "a leak under investigation" in d.reason


def test_a_suspension_is_named_before_a_missing_pia() -> None:
    d = decide(ControlsIndex([], [suspension("org", "pref-tokyo", side="both")]))
    assert d.reason.startswith("suspended: org pref-tokyo (as requester and provider)")


def test_the_samples_get_a_pia_for_every_org_and_task_a_row_names() -> None:
    from whitelist.catalog import default_catalog

    catalog = default_catalog()
    needed = parties_needing_pias(catalog, [ROW])
    assert ("pref-tokyo", TASK) in needed
    assert all(catalog.orgs[o].roles for o, _ in needed)
    assert {(o, t) for o, t in needed} >= {
        (o.id, TASK) for o in catalog.orgs_with_role("municipal-mayor")
    }
    leap = sample_pias(catalog, [ROW], dt.date(2028, 2, 29))
    assert {p.review_due for p in leap} == {dt.date(2033, 2, 28)}
    index = ControlsIndex(sample_pias(catalog, [ROW], DAY))
    assert decide(index).allowed
