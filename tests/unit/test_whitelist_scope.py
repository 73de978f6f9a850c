"""A body's own-use rows (番号法第9条第2項) permit nothing between two bodies."""

from __future__ import annotations

import datetime as dt

from renkei.bpf.loader import parse_text
from renkei.bpf.validation import validate
from whitelist.annex2 import load_annex2
from whitelist.catalog import default_catalog
from whitelist.decide import WhitelistIndex, decide_linkage
from whitelist.local import load_local

CATALOG = default_catalog()
INDEX = WhitelistIndex([*load_annex2(CATALOG), *load_local(CATALOG)])
NOW = dt.datetime(2026, 11, 27, 3, 0, tzinfo=dt.UTC)


def test_every_local_row_is_a_bodys_own_use() -> None:
    assert {r.scope for r in load_local(CATALOG)} == {"within-body"}
    assert {r.scope for r in load_annex2(CATALOG)} == {"between-bodies"}


def test_a_city_reads_its_own_register_under_its_ordinance() -> None:
    d = decide_linkage(
        CATALOG, INDEX, "city-minato", "city-minato", "school-entry-notice", "resident-cohort", NOW
    )
    assert d.allowed and d.row is not None and d.row.scope == "within-body"


def test_a_city_cannot_read_another_citys_register_under_an_own_use_row() -> None:
    d = decide_linkage(
        CATALOG, INDEX, "city-minato", "city-shibuya", "school-entry-notice", "resident-cohort", NOW
    )
    assert not d.allowed and d.row is None
    assert "its own records only" in d.reason and "different bodies" in d.reason


def test_validation_refuses_another_bodys_register_named_literally() -> None:
    text = """
bpf: cross-register
version: 1
title: {ja: 他市の住民記録, en: Another city's register}
task: school-entry-notice
owners: {definer: mhlw, executors: [city-minato]}
triggers: [counter]
steps:
  - id: household
    query: {info: resident-record, provider: city-shibuya}
"""
    errors = [
        i for i in validate(parse_text(text, "x.yaml"), CATALOG, INDEX) if i.severity == "error"
    ]
    assert errors and "its own records only" in errors[0].message
    assert errors[0].path.endswith("query.provider")


def test_validation_accepts_the_executors_own_register() -> None:
    text = """
bpf: own-register
version: 1
title: {ja: 自市の住民記録, en: Own register}
task: school-entry-notice
owners: {definer: mhlw, executors: [city-minato, role:municipal-board-of-education]}
triggers: [counter]
steps:
  - id: household
    query: {info: resident-record, provider: "${ executor }"}
  - id: literal
    query: {info: resident-record, provider: city-minato}
"""
    issues = validate(parse_text(text, "x.yaml"), CATALOG, INDEX)
    errors = [i for i in issues if i.severity == "error"]
    # The executor's own register is fine for every executor; the literal city-minato is its
    # own only for city-minato, not for every board of education the role stands for.
    assert [e.path for e in errors] == ["steps[1].query.provider"]
