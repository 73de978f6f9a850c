"""The whitelist index answers a question it has answered from the decision it made
(whitelist.decide.WhitelistIndex.decide): the same answer as deciding afresh, for that very
question only (another day, another consent, another body is decided again), within a bounded
number of decisions kept."""

from __future__ import annotations

import datetime as dt

import pytest

import whitelist.decide as decide
from whitelist.decide import WhitelistIndex
from whitelist.models import WhitelistRow


def _row(**kw: object) -> WhitelistRow:
    fields: dict[str, object] = {
        "id": "t/1",
        "source": "t",
        "item": "t 1",
        "requester_role": "mayor",
        "task": "allowance",
        "provider_role": "governor",
        "info": "local-tax",
        "legal_text": "t",
        "valid_from": dt.date(2020, 1, 1),
    }
    return WhitelistRow.model_validate(fields | kw)


def _index() -> WhitelistIndex:
    return WhitelistIndex(
        [
            _row(valid_to=dt.date(2026, 4, 1)),
            _row(id="t/2", item="t 2", info="acts", scope="consent"),
            _row(id="t/3", item="t 3", info="own", scope="within-body"),
        ],
        periods={},
        parents={},
    )


def _fresh(index: WhitelistIndex, *args: object, **kw: object) -> decide.Decision:
    return WhitelistIndex(index.rows(), periods={}, parents={}).decide(*args, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("info", "day", "kw"),
    [
        ("local-tax", dt.date(2026, 3, 31), {}),
        ("local-tax", dt.date(2026, 4, 1), {}),  # the row has lapsed that day
        ("acts", dt.date(2026, 3, 31), {}),
        ("acts", dt.date(2026, 3, 31), {"consented": True}),
        ("own", dt.date(2026, 3, 31), {}),
        ("own", dt.date(2026, 3, 31), {"same_body": True}),
        ("nothing", dt.date(2026, 3, 31), {}),
    ],
)
def test_a_kept_decision_is_the_one_made_afresh(info: str, day: dt.date, kw: object) -> None:
    index = _index()
    asked = (["mayor"], "allowance", ("governor",), info, day)
    first = index.decide(*asked, **kw)  # type: ignore[arg-type]
    again = index.decide(*asked, **kw)  # type: ignore[arg-type]
    assert again is first  # kept
    assert first == _fresh(index, *asked, **kw)


def test_another_day_consent_or_body_is_decided_again() -> None:
    index = _index()
    roles = (("mayor",), "allowance", ("governor",))
    assert index.decide(*roles, "local-tax", dt.date(2026, 3, 31)).allowed
    assert not index.decide(*roles, "local-tax", dt.date(2026, 4, 1)).allowed
    assert not index.decide(*roles, "acts", dt.date(2026, 3, 31)).allowed
    assert index.decide(*roles, "acts", dt.date(2026, 3, 31), consented=True).allowed
    assert not index.decide(*roles, "own", dt.date(2026, 3, 31)).allowed
    assert index.decide(*roles, "own", dt.date(2026, 3, 31), same_body=True).allowed


def test_the_decisions_kept_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(decide, "DECISIONS_KEPT", 3)
    index = _index()
    for i in range(10):
        day = dt.date(2026, 1, 1) + dt.timedelta(days=i)
        assert index.decide(("mayor",), "allowance", ("governor",), "local-tax", day).allowed
        assert len(index._answered) <= 3
