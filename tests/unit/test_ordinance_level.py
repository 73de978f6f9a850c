"""Ordinance-level items (主務省令で定める情報) under a statutory row: a row of the whole category
permits each of its items; a row naming one item permits that item only; the decision keeps
both levels."""

from __future__ import annotations

import datetime as dt

import pytest

from renkei.bpf.loader import parse_text
from renkei.bpf.validation import validate
from whitelist.catalog import default_catalog
from whitelist.decide import WhitelistIndex
from whitelist.models import Source, WhitelistRow
from whitelist.sources import RowSpec, SourceFileError, build_rows

CATALOG = default_catalog()
DAY = dt.date(2027, 2, 1)
ITEM = "local-tax-income-basis"
ORDINANCE = Source(
    id="ordinance",
    title="命令",
    citation="番号法第十九条第八号に基づく命令 第{item}条",
    valid_from=dt.date(2027, 1, 1),
)


def _spec(**kw: str) -> RowSpec:
    base = {
        "item": "2",
        "requester_role": "municipal-mayor",
        "task": "child-allowance",
        "provider_role": "municipal-mayor",
        "info": "local-tax",
        "where": "ordinance.csv:2",
    }
    return RowSpec(**{**base, **kw})


def _decide(index: WhitelistIndex, info: str):
    return index.decide(["municipal-mayor"], "child-allowance", ["municipal-mayor"], info, DAY)


def test_the_catalog_knows_the_item_and_its_category() -> None:
    assert CATALOG.info_items[ITEM].parent == "local-tax"
    # It carries its category's payload.
    assert CATALOG.info_items[ITEM].schema_name == CATALOG.info_items["local-tax"].schema_name


def test_a_row_of_the_whole_category_permits_each_of_its_items() -> None:
    [row] = build_rows(ORDINANCE, [_spec()], CATALOG)
    index = WhitelistIndex([row], sources=[ORDINANCE])
    assert _decide(index, "local-tax").allowed
    d = _decide(index, ITEM)
    assert d.allowed and d.row is not None and d.row.sub_info is None


def test_a_row_naming_one_item_permits_that_item_only_and_the_decision_keeps_both_levels() -> None:
    [row] = build_rows(ORDINANCE, [_spec(sub_info=ITEM, sub_task="child-allowance-award")], CATALOG)
    index = WhitelistIndex([row], sources=[ORDINANCE])
    d = _decide(index, ITEM)
    assert d.allowed and d.row is not None
    assert (d.row.info, d.row.sub_info, d.row.sub_task) == (
        "local-tax",
        ITEM,
        "child-allowance-award",
    )
    assert f"[local-tax › {ITEM}]" in d.reason and "第2条" in d.legal_reference
    assert d.row.id.endswith(f"/child-allowance-award/{ITEM}")
    whole = _decide(index, "local-tax")
    assert not whole.allowed  # the ordinance names one item, not the whole category


def test_a_sub_item_that_is_not_under_the_rows_category_is_refused_with_its_place() -> None:
    with pytest.raises(SourceFileError) as err:
        build_rows(ORDINANCE, [_spec(info="pension-benefit", sub_info=ITEM)], CATALOG)
    assert (
        "ordinance.csv:2: sub_info: 'local-tax-income-basis' is not an ordinance-level item"
        in str(err.value)
    )


FLOW = """\
bpf: ordinance-level-probe
version: 1
title: {ja: 試験, en: probe}
task: child-allowance
owners:
  definer: mhlw
  executors: [role:municipal-mayor]
triggers: [counter]
inputs:
  previous_municipality: {type: org, role: municipal-mayor}
steps:
  - id: tax
    query: {info: INFO, provider: "${ inputs.previous_municipality }"}
"""


@pytest.mark.parametrize(("info", "conforms"), [(ITEM, True), ("local-tax", False)])
def test_a_query_may_name_the_finer_item_and_validation_checks_it_at_that_level(
    info: str, conforms: bool
) -> None:
    [row] = build_rows(ORDINANCE, [_spec(sub_info=ITEM)], CATALOG)
    index = WhitelistIndex([row], sources=[ORDINANCE])
    issues = validate(parse_text(FLOW.replace("INFO", info), "probe.yaml"), CATALOG, index, at=DAY)
    whitelist = [i for i in issues if "not permitted by the whitelist" in i.message]
    assert (not whitelist) == conforms, [str(i) for i in issues]


def test_rows_without_an_ordinance_level_keep_deciding_as_before() -> None:
    row = WhitelistRow(
        id="x/1",
        source="x",
        item="番号法別表第二 七十四項",
        requester_role="municipal-mayor",
        task="child-allowance",
        provider_role="municipal-mayor",
        info="local-tax",
        legal_text="…",
        valid_from=dt.date(2017, 7, 18),
    )
    index = WhitelistIndex([row])
    assert _decide(index, "local-tax").allowed and _decide(index, ITEM).allowed
    assert not _decide(index, "pension-benefit").allowed
