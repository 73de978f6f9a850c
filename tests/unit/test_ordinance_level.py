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


# -- the ordinance-level task (主務省令で定める事務) a query names ---------------------------------

AWARD, CHECK = "child-allowance-award", "child-allowance-income-check"


def _decide_sub(index: WhitelistIndex, sub_task: str | None):
    return index.decide(
        ["municipal-mayor"],
        "child-allowance",
        ["municipal-mayor"],
        "local-tax",
        DAY,
        sub_task=sub_task,
    )


def test_a_query_naming_a_sub_task_is_permitted_by_a_row_of_it_and_the_decision_keeps_both_levels() -> (
    None
):
    [row] = build_rows(ORDINANCE, [_spec(sub_task=AWARD)], CATALOG)
    index = WhitelistIndex([row], sources=[ORDINANCE])
    d = _decide_sub(index, AWARD)
    assert d.allowed and d.sub_task == AWARD and d.row is not None and d.row.sub_task == AWARD
    assert f"[child-allowance › {AWARD}]" in d.reason and d.row.id.endswith(f"/{AWARD}/-")
    other = _decide_sub(index, CHECK)
    assert not other.allowed and other.row is None
    assert other.reason == (
        f"no whitelist row permits sub-task {CHECK!r} of task 'child-allowance': the rows for"
        f" 'local-tax' name {AWARD!r} only"
    )
    # A query of the whole task (no sub_task) is decided as before: any row of the task.
    whole = _decide_sub(index, None)
    assert whole.allowed and whole.sub_task is None


def test_a_row_of_the_whole_task_permits_each_of_its_sub_tasks() -> None:
    [row] = build_rows(ORDINANCE, [_spec()], CATALOG)
    index = WhitelistIndex([row], sources=[ORDINANCE])
    for sub in (AWARD, CHECK):
        d = _decide_sub(index, sub)
        assert d.allowed and d.sub_task == sub and d.row is not None and d.row.sub_task is None


@pytest.mark.parametrize(
    ("sub_task", "problem"),
    [
        (AWARD, None),
        (CHECK, "not permitted by the whitelist"),
        (
            "child-allowance-awrd",
            "steps[0].query.sub_task: no whitelist row names sub-task 'child-allowance-awrd'"
            f" under task 'child-allowance' (sub-tasks named: {AWARD}, {CHECK})"
            f" (did you mean `{AWARD}`?)",
        ),
    ],
)
def test_validation_checks_a_querys_sub_task_against_the_whitelist(
    sub_task: str, problem: str | None
) -> None:
    rows = build_rows(
        ORDINANCE,
        [
            _spec(sub_task=AWARD),
            _spec(sub_task=CHECK, info="pension-benefit", provider_role="mhlw-minister"),
        ],
        CATALOG,
    )
    index = WhitelistIndex(rows, sources=[ORDINANCE])
    text = FLOW.replace("{info: INFO,", f"{{info: local-tax, sub_task: {sub_task},")
    issues = [
        str(i)
        for i in validate(parse_text(text, "probe.yaml"), CATALOG, index, at=DAY)
        if i.severity == "error"
    ]
    if problem is None:
        assert not issues
    else:
        assert any(problem in i for i in issues), issues
        assert all(i.startswith("probe.yaml:13:") for i in issues), issues


def test_a_query_without_a_sub_task_keeps_the_format_and_the_schema_accepts_one() -> None:
    import jsonschema

    from renkei.bpf.models import BpfDefinition

    schema = BpfDefinition.model_json_schema(by_alias=True)
    validator = jsonschema.Draft202012Validator(schema)
    plain = parse_text(FLOW.replace("INFO", "local-tax"), "probe.yaml").definition
    assert "sub_task" not in plain.model_dump(by_alias=True, exclude_none=True)["steps"][0]["query"]
    named = parse_text(
        FLOW.replace("{info: INFO,", f"{{info: local-tax, sub_task: {AWARD},"), "probe.yaml"
    ).definition
    doc = named.model_dump(mode="json", by_alias=True, exclude_none=True)
    validator.validate(doc)
    doc["steps"][0]["query"]["sub_task"] = "Not An Id"
    assert not validator.is_valid(doc)
