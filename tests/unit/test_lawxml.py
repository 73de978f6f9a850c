"""The law XML importer, the diff of two row sets, and how a source bounds and cites its rows."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from whitelist.annex2 import annex2_source, load_annex2
from whitelist.catalog import default_catalog
from whitelist.decide import WhitelistIndex
from whitelist.lawxml import read_law_xml
from whitelist.models import Source, WhitelistRow
from whitelist.sources import SourceFileError, build_rows, diff_rows

FIXTURE = Path(__file__).parent.parent / "fixtures" / "annex2-2015-excerpt.xml"
CATALOG = default_catalog()


def _terms(r: WhitelistRow) -> tuple[str, ...]:
    return (r.item, r.requester_role, r.task, r.provider_role, r.info, r.legal_text, r.scope)


def test_the_xml_importer_reproduces_the_shipped_rows_of_the_fixture() -> None:
    table = read_law_xml(FIXTURE, None, CATALOG)
    assert table.statutory == 43  # 一 … 十八, 五十七, 七十四, 七十五: the fixture's rows
    rows = build_rows(annex2_source(), table.rows, CATALOG)
    items = {r.item for r in rows}
    shipped = [r for r in load_annex2(CATALOG) if r.item in items]
    assert len(items) == 21 and len(rows) == len(shipped) > 100
    assert {_terms(r) for r in rows} == {_terms(r) for r in shipped}


def test_a_row_the_mapping_cannot_place_is_reported_with_its_element(tmp_path: Path) -> None:
    text = FIXTURE.read_text(encoding="utf-8").replace(
        "<Sentence>全国健康保険協会</Sentence>", "<Sentence>架空の協会</Sentence>", 1
    )
    path = tmp_path / "table.xml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(SourceFileError) as err:
        read_law_xml(path, None, CATALOG)
    assert "rows the mapping mapping.yaml cannot place (nothing loaded)" in str(err.value)
    # Item 二 spans four rows (one per provider): each is reported, none dropped in silence.
    placed = [p for p in err.value.problems if "(item 二)" in p]
    assert len(placed) == 4 and "no mapping for requester '架空の協会'" in placed[0]
    assert "AppdxTable/TableStruct/Table/TableRow[4]" in placed[0]


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ('<!DOCTYPE Law SYSTEM "http://example.org/x.dtd"><Law/>', ":1: refused: a DOCTYPE"),
        ("<Law>\n<!ENTITY x 'y'>\n</Law>", ":2: refused: a DOCTYPE or ENTITY"),
        ("<Law><LawBody/></Law>", "no AppdxTable element"),
        (
            "<AppdxTable><TableStruct><Table><TableRow>"
            + "<TableColumn><Sentence>x</Sentence></TableColumn>" * 5
            + "</TableRow></Table></TableStruct></AppdxTable>",
            "TableRow[1]/TableColumn[1]: 'x' is not an item number",
        ),
    ],
)
def test_unsafe_or_malformed_xml_is_refused_with_its_place(
    tmp_path: Path, text: str, found: str
) -> None:
    path = tmp_path / "law.xml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(SourceFileError) as err:
        read_law_xml(path, None, CATALOG)
    assert found in str(err.value)


def _row(
    source: str, item: str, info: str = "local-tax", scope: str = "between-bodies"
) -> WhitelistRow:
    return WhitelistRow(
        id=f"{source}/{item}/{info}",
        source=source,
        item=item,
        requester_role="municipal-mayor",
        task="child-allowance",
        provider_role="municipal-mayor",
        info=info,
        legal_text=item,
        valid_from=dt.date(2017, 7, 18),
        scope=scope,  # type: ignore[arg-type]
    )


def test_a_diff_lists_rows_added_removed_and_changed() -> None:
    old = [_row("a", "1"), _row("a", "2", "resident-record"), _row("a", "3", "pension-benefit")]
    new = [_row("a", "1"), _row("a", "2b", "resident-record"), _row("a", "4", "medical-benefit")]
    d = diff_rows(old, new, "a")
    assert [r.info for r in d.added] == ["medical-benefit"]
    assert [r.info for r in d.removed] == ["pension-benefit"]
    assert [(c.before.item, c.after.item) for c in d.changed] == [("2", "2b")]
    assert d.unchanged == 1
    # Across sources a new citation alone is no change; a new scope is.
    moved = diff_rows(
        old[:1], [_row("b", "9"), _row("b", "8", "resident-record", "within-body")], "a"
    )
    assert moved.unchanged == 1 and [r.info for r in moved.added] == ["resident-record"]
    assert not diff_rows(old[:1], [_row("b", "9")], "a").changed


def test_a_source_bounds_its_rows_and_marks_its_citations_as_a_stand_ins() -> None:
    table = Source(
        id="t2015",
        title="the 2015 table",
        citation="番号法別表第二 {item}項",
        valid_from=dt.date(2017, 7, 18),
        valid_to=dt.date(2027, 1, 1),
        stand_in_from=dt.date(2024, 5, 27),
        stand_in_note="代用",
    )
    row = _row("t2015", "番号法別表第二 七十四項")
    index = WhitelistIndex([row], sources=[table])

    def decide(day: dt.date) -> tuple[bool, str, str]:
        d = index.decide(
            ["municipal-mayor"], "child-allowance", ["municipal-mayor"], "local-tax", day
        )
        return d.allowed, d.legal_reference, d.reason

    assert decide(dt.date(2020, 1, 1))[:2] == (True, "番号法別表第二 七十四項")
    assert decide(dt.date(2026, 1, 1))[:2] == (True, "番号法別表第二 七十四項 (代用)")
    allowed, ref, reason = decide(dt.date(2027, 1, 1))
    assert not allowed and ref == ""
    assert "t2015 (the 2015 table) is not in force on 2027-01-01: it ended on 2027-01-01" in reason
    # The row itself is untouched: the index cites, the row keeps its item.
    assert row.legal_reference == "番号法別表第二 七十四項"


def test_xml_in_another_encoding_is_refused_before_parsing(tmp_path: Path) -> None:
    # A DOCTYPE spelled in UTF-16 would pass a byte search for it: only UTF-8 is read.
    path = tmp_path / "law.xml"
    path.write_bytes(
        '<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE Law [<!ENTITY a "b">]><Law>&a;</Law>'.encode(
            "utf-16"
        )
    )
    with pytest.raises(SourceFileError) as err:
        read_law_xml(path, None, CATALOG)
    assert "law.xml:1: not UTF-8 text" in str(err.value)
