"""The samples say what the law says: who sends the notice, at what age, under which provision
(the catalog is what citizens read)."""

from __future__ import annotations

import datetime as dt

from renkei.bpf.loader import load_file
from renkei.bpf.validation import validate
from tests.paths import SAMPLES_DIR
from whitelist.catalog import default_catalog
from whitelist.decide import WhitelistIndex, decide_linkage
from whitelist.local import all_rows, all_sources, load_local

CATALOG = default_catalog()
INDEX = WhitelistIndex(all_rows(CATALOG), sources=all_sources())
NOW = dt.datetime(2026, 10, 1, tzinfo=dt.UTC)


def test_the_school_entry_notice_is_the_board_of_educations() -> None:
    d = load_file(SAMPLES_DIR / "school-entry-notice.yaml").definition
    assert d.owners.executors == ["role:municipal-board-of-education"]  # 学校教育法施行令第5条
    assert "学校教育法施行令第五条" in CATALOG.tasks[d.task].ja
    assert [(r.age, r.on) for r in d.life_events()] == [(6, "school-year-start")]
    # The mayor has no row of its own for it; a city's board reads its own register.
    mayor = INDEX.decide(
        ["municipal-mayor"],
        d.task,
        ["municipal-mayor"],
        "resident-cohort",
        NOW.date(),
        same_body=True,
    )
    assert not mayor.allowed
    board = decide_linkage(
        CATALOG, INDEX, "city-minato", "city-minato", d.task, "resident-cohort", NOW
    )
    assert board.allowed and board.row is not None
    assert board.row.requester_role == "municipal-board-of-education"
    assert "学校教育法施行令第1条・第5条" in board.row.legal_text


def test_the_national_pension_notice_comes_at_20() -> None:
    d = load_file(SAMPLES_DIR / "coming-of-age-pension.yaml").definition
    assert [(r.age, r.on) for r in d.life_events()] == [(20, "birthday")]  # 国民年金法第7条
    assert "二十歳" in CATALOG.tasks[d.task].ja and "18" not in d.description.ja
    rows = [r for r in load_local(CATALOG) if r.task == d.task]
    assert rows and all("国民年金法第7条" in r.legal_text for r in rows)


def test_every_sample_validates_against_the_shipped_sources() -> None:
    for path in sorted(SAMPLES_DIR.glob("*.yaml")):
        loaded = load_file(path)
        errors = [
            str(i) for i in validate(loaded, CATALOG, INDEX, at=NOW.date()) if i.severity == "error"
        ]
        assert not errors, errors
