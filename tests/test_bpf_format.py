"""The BPF format: parsing, located errors, typed expressions, static whitelist conformance."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from renkei.app.bootstrap import check_file
from renkei.bpf.loader import BpfFileError, parse_text
from renkei.bpf.validation import validate
from tests.paths import PROJECT_ROOT, SAMPLES_DIR
from whitelist.catalog import default_catalog
from whitelist.decide import WhitelistIndex
from whitelist.local import all_rows

DEFINITIONS = SAMPLES_DIR
TODAY = dt.date(2026, 11, 26)


@pytest.fixture(scope="module")
def index() -> WhitelistIndex:
    return WhitelistIndex(all_rows(default_catalog()))


def issues_of(text: str, index: WhitelistIndex) -> list[str]:
    try:
        loaded = parse_text(text, "flow.yaml")
    except BpfFileError as err:
        return [str(i) for i in err.issues]
    return [
        str(i)
        for i in validate(loaded, default_catalog(), index, at=TODAY)
        if i.severity == "error"
    ]


BASE = """\
bpf: sample-flow
version: 1
title: {ja: 例, en: Example}
task: child-allowance
owners:
  definer: mhlw
  executors: [role:municipal-mayor]
triggers: [counter]
inputs:
  previous: {type: org, role: municipal-mayor}
steps:
  - id: tax
    query: {info: local-tax, provider: "${ inputs.previous }"}
"""


@pytest.mark.parametrize("path", sorted(DEFINITIONS.glob("*.yaml")), ids=lambda p: p.name)
def test_sample_definitions_are_valid_and_conformant(path: Path, index: WhitelistIndex) -> None:
    loaded, issues = check_file(path, index, TODAY)
    assert loaded is not None
    assert [i for i in issues if i.severity == "error"] == []


def test_nonconformant_definition_is_rejected_at_the_offending_step(index: WhitelistIndex) -> None:
    path = DEFINITIONS / "nonconformant" / "child-allowance-medical-peek.yaml"
    _, issues = check_file(path, index, TODAY)
    errors = [i for i in issues if i.severity == "error"]
    assert len(errors) == 1
    assert errors[0].line == 15 and errors[0].path == "steps[1].query.provider"
    assert "not permitted by the whitelist" in errors[0].message


def test_a_minimal_flow_validates(index: WhitelistIndex) -> None:
    assert issues_of(BASE, index) == []


def test_unknown_key_is_reported_with_line_and_path(index: WhitelistIndex) -> None:
    text = BASE.replace(
        'provider: "${ inputs.previous }"', 'provider: "${ inputs.previous }", timout: 5s'
    )
    assert issues_of(text, index) == ["flow.yaml:13: steps[0].query.timout: unknown key `timout`"]


def test_missing_required_key_is_reported(index: WhitelistIndex) -> None:
    text = BASE.replace("task: child-allowance\n", "")
    assert issues_of(text, index) == ["flow.yaml:1: task: Field required"]


def test_invalid_yaml_names_the_line(index: WhitelistIndex) -> None:
    [issue] = issues_of(BASE + "  - id: bad: colon\n", index)
    assert issue.startswith("flow.yaml:14:") and "not valid YAML" in issue


def test_duplicate_yaml_keys_are_errors(index: WhitelistIndex) -> None:
    [issue] = issues_of(BASE.replace("version: 1\n", "version: 1\nversion: 2\n"), index)
    assert "not valid YAML" in issue


def test_step_without_a_kind_is_explained(index: WhitelistIndex) -> None:
    [issue] = issues_of(BASE + "  - id: nothing\n", index)
    assert issue.startswith("flow.yaml:14: steps[1]:") and "exactly one kind key" in issue


def test_a_malformed_wait_is_located(index: WhitelistIndex) -> None:
    found = issues_of(BASE + "  - id: consent\n    wait: {signal: consent, timeout: 30d}\n", index)
    assert found == [
        "flow.yaml:15: steps[1].wait.for: Field required",
        "flow.yaml:15: steps[1].wait.signal: unknown key `signal`",
    ]
    [issue] = issues_of(
        BASE + "  - id: consent\n    wait: {for: consent, timeout: 3d, remind: 5d}\n", index
    )
    assert "`remind` must be shorter than `timeout`" in issue


def test_field_missing_from_the_info_schema_is_a_type_error(index: WhitelistIndex) -> None:
    [issue] = issues_of(BASE + "result:\n  income: tax.taxabel_income\n", index)
    assert issue.startswith("flow.yaml:15: result.income: expression:")
    assert "taxabel_income" in issue


def test_type_mismatch_in_expression_is_reported(index: WhitelistIndex) -> None:
    [issue] = issues_of(BASE + "result:\n  x: tax.taxable_income + 'yen'\n", index)
    assert "no matching overload" in issue


def test_later_steps_are_not_in_scope(index: WhitelistIndex) -> None:
    text = BASE.replace("steps:\n", "steps:\n  - id: early\n    set: {x: tax.taxable_income}\n")
    [issue] = issues_of(text, index)
    assert "steps[0].set.x" in issue and "undeclared reference to 'tax.taxable_income'" in issue


def test_branch_condition_must_be_boolean(index: WhitelistIndex) -> None:
    text = (
        BASE
        + "  - id: b\n    branch:\n      - when: tax.taxable_income\n        steps: [{id: f, fail: {reason: no}}]\n"
    )
    [issue] = issues_of(text, index)
    assert "steps[1].branch[0].when" in issue and "must be of type bool" in issue


def test_duplicate_step_ids_are_errors(index: WhitelistIndex) -> None:
    [issue] = issues_of(BASE + "  - id: tax\n    set: {x: '1'}\n", index)
    assert "duplicate step id 'tax'" in issue


def test_unknown_references_are_errors(index: WhitelistIndex) -> None:
    text = BASE.replace("info: local-tax", "info: horoscope").replace(
        "task: child-allowance", "task: fortune"
    )
    found = issues_of(text, index)
    assert "flow.yaml:4: task: unknown task 'fortune'" in found
    assert "flow.yaml:13: steps[0].query.info: unknown info item 'horoscope'" in found


def test_role_constrained_provider_outside_the_whitelist_is_rejected(index: WhitelistIndex) -> None:
    text = BASE.replace("role: municipal-mayor}", "role: medical-insurer}")
    [issue] = issues_of(text, index)
    assert "not permitted by the whitelist" in issue and "role:medical-insurer" in issue


def test_unconstrained_provider_is_flagged_for_the_runtime_check(index: WhitelistIndex) -> None:
    loaded = parse_text(BASE.replace(", role: municipal-mayor", ""), "flow.yaml")
    issues = validate(loaded, default_catalog(), index, at=TODAY)
    assert [i.severity for i in issues] == ["warning"]
    assert "checked when the linkage runs" in issues[0].message


def test_expired_rows_do_not_satisfy_the_static_check(index: WhitelistIndex) -> None:
    loaded = parse_text(BASE, "flow.yaml")
    assert [
        str(i)
        for i in validate(loaded, default_catalog(), index, at=dt.date(2010, 1, 1))
        if i.severity == "error"
    ]


def test_the_format_documents_example_validates(index: WhitelistIndex) -> None:
    doc = (PROJECT_ROOT / "docs" / "bpf-format.md").read_text(encoding="utf-8")
    example = doc.split("## Example")[1].split("```yaml")[1].split("```")[0]
    assert issues_of(example, index) == []
