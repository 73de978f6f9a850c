"""Tasks (事務) and info items (特定個人情報) in force over a period: outside it nothing of them is
permitted; validation warns of a version whose task or items end while it operates."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import pytest
from pydantic import ValidationError

from renkei.bpf.loader import load_file
from renkei.bpf.validation import validate
from tests.paths import SAMPLES_DIR
from whitelist.catalog import DATA_DIR, default_catalog, load_catalog
from whitelist.decide import JST, WhitelistIndex, decide_linkage
from whitelist.local import all_rows, all_sources
from whitelist.models import Held, PeriodKind, Task

CATALOG = default_catalog()
ENDS = dt.date(2027, 4, 1)


def _index(*periods: tuple[PeriodKind, Held]) -> WhitelistIndex:
    keyed = {(kind, held.id): held for kind, held in periods}
    return WhitelistIndex(all_rows(CATALOG), sources=all_sources(), periods=keyed)


def _at(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(12), tzinfo=JST)


def test_the_catalog_data_gives_a_task_and_an_info_item_their_periods(tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(DATA_DIR, data)
    tasks = data / "catalog" / "tasks.yaml"
    text = tasks.read_text(encoding="utf-8")
    assert "- id: child-allowance\n" in text
    tasks.write_text(
        text.replace("- id: child-allowance\n", "- id: child-allowance\n  valid_to: 2027-04-01\n"),
        encoding="utf-8",
    )
    catalog = load_catalog(data)
    assert catalog.periods() == {
        ("task", "child-allowance"): Held(id="child-allowance", valid_to=ENDS)
    }
    with pytest.raises(ValidationError, match="is not after"):
        Task(id="t", ja="t", en="t", valid_from=ENDS, valid_to=ENDS)


def test_a_linkage_outside_its_tasks_period_is_denied_with_the_reason() -> None:
    index = _index(("task", Held(id="child-allowance", valid_to=ENDS)))
    args = ("city-minato", "city-shibuya", "child-allowance", "local-tax")
    assert decide_linkage(CATALOG, index, *args, _at(ENDS - dt.timedelta(days=1))).allowed
    d = decide_linkage(CATALOG, index, *args, _at(ENDS))
    assert not d.allowed and d.row is None
    assert d.reason == (
        "task 'child-allowance' is not in force on 2027-04-01: it ended on 2027-04-01"
        " (in force from the start to 2027-04-01)"
    )


def test_an_info_items_period_binds_its_finer_items_too() -> None:
    index = _index(("info", Held(id="local-tax", valid_from=ENDS)))
    for info in ("local-tax", "local-tax-income-basis"):
        d = decide_linkage(
            CATALOG,
            index,
            "city-minato",
            "city-shibuya",
            "child-allowance",
            info,
            _at(ENDS - dt.timedelta(days=1)),
        )
        assert not d.allowed
        assert (
            "info item 'local-tax' is not in force on 2027-03-31: it begins on 2027-04-01"
            in d.reason
        )
    assert decide_linkage(
        CATALOG, index, "city-minato", "city-shibuya", "child-allowance", "local-tax", _at(ENDS)
    ).allowed


def test_validation_warns_of_a_task_or_an_item_that_ends_while_the_version_operates() -> None:
    loaded = load_file(SAMPLES_DIR / "child-allowance.yaml")
    day = dt.date(2026, 6, 1)
    plain = validate(loaded, CATALOG, _index(), at=day)
    assert not [i for i in plain if "ends on" in i.message]
    index = _index(
        ("task", Held(id="child-allowance", valid_to=ENDS)),
        ("info", Held(id="pension-benefit", valid_to=ENDS)),
    )
    issues = validate(loaded, CATALOG, index, at=day)
    warned = [i for i in issues if "ends on 2027-04-01" in i.message]
    assert {i.severity for i in warned} == {"warning"}
    assert any(i.message.startswith("task 'child-allowance' ends on 2027-04-01") for i in warned)
    assert any(
        i.message.startswith("info item 'pension-benefit' ends on 2027-04-01")
        and i.path.endswith("query.info")
        for i in warned
    )
    assert not [i for i in issues if i.severity == "error"]
    # On the day it ends, the whitelist check refuses the version.
    late = validate(loaded, CATALOG, index, at=ENDS)
    assert any(
        i.severity == "error"
        and "task 'child-allowance' is not in force on 2027-04-01" in i.message
        for i in late
    )
