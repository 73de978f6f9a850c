"""A local government's own ordinance (独自利用事務, 番号法第9条第2項): each city's is a source of
its own, whose rows permit that city's use of its own records and never another body's."""

from __future__ import annotations

import datetime as dt

from whitelist.annex2 import load_annex2
from whitelist.catalog import default_catalog
from whitelist.decide import JST, WhitelistIndex, decide_linkage
from whitelist.local import ordinances

CATALOG = default_catalog()
ORDINANCES = dict((s.body, (s, rows)) for s, rows in ordinances(CATALOG))
AT = dt.datetime(2026, 6, 1, 3, 0, tzinfo=JST)


def _index(*bodies: str, ends: dt.date | None = None) -> WhitelistIndex:
    sources = [ORDINANCES[b][0].model_copy(update={"valid_to": ends}) for b in bodies]
    rows = [r for b in bodies for r in ORDINANCES[b][1]]
    return WhitelistIndex([*load_annex2(CATALOG), *rows], sources=sources)


def test_each_sample_city_ships_its_own_ordinance_whose_rows_name_it() -> None:
    assert set(ORDINANCES) == {"city-minato", "city-shibuya"}
    for body, (source, rows) in ORDINANCES.items():
        assert (
            source.id == f"local-{body}" and "条例" in source.title and "サンプル" in source.title
        )
        assert rows and all(r.body == body and r.scope == "within-body" for r in rows)
        assert all(r.source == source.id for r in rows)


def test_a_row_of_one_citys_ordinance_never_permits_another_city() -> None:
    """Both cities hold the same roles: only the ordinance's own body is permitted by it."""
    minato_only = _index("city-minato")
    for task, info in (
        ("school-entry-notice", "resident-cohort"),
        ("coming-of-age-pension-notice", "resident-record"),
        ("child-allowance", "resident-record"),
    ):
        own = decide_linkage(CATALOG, minato_only, "city-minato", "city-minato", task, info, AT)
        assert own.allowed and own.row is not None and own.row.body == "city-minato"
        other = decide_linkage(CATALOG, minato_only, "city-shibuya", "city-shibuya", task, info, AT)
        assert not other.allowed
        assert "city-minato's own ordinance" in other.reason
        assert "not city-shibuya's" in other.reason
        across = decide_linkage(CATALOG, minato_only, "city-minato", "city-shibuya", task, info, AT)
        assert not across.allowed and "its own records only" in across.reason
    both = _index("city-minato", "city-shibuya")
    shibuya = decide_linkage(
        CATALOG, both, "city-shibuya", "city-shibuya", "child-allowance", "resident-record", AT
    )
    assert shibuya.allowed and shibuya.legal_reference.startswith("渋谷区行政手続")


def test_a_decision_cites_the_citys_ordinance_in_its_own_form() -> None:
    d = decide_linkage(
        CATALOG,
        _index("city-minato", "city-shibuya"),
        "city-minato",
        "city-minato",
        "school-entry-notice",
        "resident-record",
        AT,
    )
    assert d.allowed and d.legal_reference == (
        "港区行政手続における特定の個人を識別するための番号の利用等に関する条例（サンプル）"
        "別表第一 一の項"
    )
    assert d.legal_reference in d.reason
    assert d.row is not None and "学校教育法施行令" in d.row.legal_text


def test_an_expired_ordinance_denies_naming_its_source_and_the_day() -> None:
    index = _index("city-minato", ends=dt.date(2026, 4, 1))
    d = decide_linkage(
        CATALOG, index, "city-minato", "city-minato", "child-allowance", "resident-record", AT
    )
    assert not d.allowed
    assert "its source local-city-minato (港区行政手続" in d.reason
    assert "not in force on 2026-06-01: it ended on 2026-04-01" in d.reason


def test_validation_warns_of_the_bodies_of_an_executor_role_without_their_own_row() -> None:
    from renkei.bpf.loader import load_file
    from renkei.bpf.validation import validate
    from tests.paths import SAMPLES_DIR

    loaded = load_file(SAMPLES_DIR / "school-entry-notice.yaml")  # role:municipal-board-of-…
    day = dt.date(2026, 6, 1)

    def warned(index: WhitelistIndex) -> list[str]:
        issues = validate(loaded, CATALOG, index, at=day)
        assert not [i for i in issues if i.severity == "error"], issues
        return [i.message for i in issues if "of its own ordinance" in i.message]

    assert warned(_index("city-minato", "city-shibuya")) == []
    [warning] = warned(_index("city-minato"))
    assert warning.startswith("city-shibuya (role municipal-board-of-education) has no row")
    assert "its runs are denied at this step" in warning
