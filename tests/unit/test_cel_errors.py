"""CEL compile errors, through the public validation entry point: each is located (file, line,
field path) and names what is wrong."""

from __future__ import annotations

from renkei.bpf.loader import Issue, parse_text
from renkei.bpf.validation import validate
from whitelist.annex2 import load_annex2
from whitelist.catalog import default_catalog
from whitelist.decide import WhitelistIndex
from whitelist.local import load_local

CATALOG = default_catalog()
INDEX = WhitelistIndex([*load_annex2(CATALOG), *load_local(CATALOG)])
FILE = "probe.yaml"

# Line numbers below refer to this text.
PROBE = """\
bpf: cel-probe
version: 1
title: {ja: 確認, en: Probe}
task: child-allowance
owners:
  definer: mhlw
  executors: [role:municipal-mayor]
triggers: [counter]
inputs:
  previous_municipality: {type: org, role: municipal-mayor}
steps:
  - id: tax
    query: {info: local-tax, provider: "${ inputs.previous_municipality }"}
  - id: limit
    set:
      income_limit: "6220000 + 380000 * tax.dependents"
  - id: over_limit
    branch:
      - when: tax.taxable_income > limit.income_limit
        steps:
          - id: reject
            fail: {reason: income above the limit}
result:
  taxable_income: tax.taxable_income
"""
SET = "6220000 + 380000 * tax.dependents"
WHEN = "tax.taxable_income > limit.income_limit"


def errors(old: str, new: str) -> list[Issue]:
    text = PROBE.replace(old, new)
    assert text != PROBE, f"{old!r} is not in the probe"
    found = validate(parse_text(text, FILE), CATALOG, INDEX)
    return [i for i in found if i.severity == "error"]


def the_error(old: str, new: str) -> Issue:
    [issue] = errors(old, new)
    assert issue.file == FILE
    assert issue.message.startswith("expression: ")
    return issue


def test_the_probe_itself_has_no_error() -> None:
    assert validate(parse_text(PROBE, FILE), CATALOG, INDEX) == []


def test_an_undefined_name_is_located_and_named() -> None:
    issue = the_error(SET, "6220000 + nothing")
    assert (issue.line, issue.path) == (16, "steps[1].set.income_limit")
    assert "undeclared reference" in issue.message and "'nothing'" in issue.message


def test_a_field_the_payload_schema_lacks_is_named_with_the_schema() -> None:
    issue = the_error(SET, "380000 * tax.dependnts")
    assert (issue.line, issue.path) == (16, "steps[1].set.income_limit")
    assert "'dependnts'" in issue.message and "LocalTax" in issue.message


def test_an_input_the_flow_does_not_declare_is_located_at_the_provider() -> None:
    issue = the_error("${ inputs.previous_municipality }", "${ inputs.previous }")
    assert (issue.line, issue.path) == (13, "steps[0].query.provider")
    assert "'previous'" in issue.message


def test_a_type_error_names_the_operator_and_the_operand_types() -> None:
    issue = the_error(WHEN, "tax.taxable_income > 'a lot'")
    assert (issue.line, issue.path) == (19, "steps[2].branch[0].when")
    assert "no matching overload" in issue.message
    assert "_>_" in issue.message and "(int, string)" in issue.message


def test_a_condition_that_is_not_boolean_names_its_type() -> None:
    issue = the_error(WHEN, "tax.taxable_income")
    assert (issue.line, issue.path) == (19, "steps[2].branch[0].when")
    assert "must be of type bool, is int" in issue.message


def test_a_syntax_error_is_located_and_says_so() -> None:
    issue = the_error(SET, "6220000 + (380000")
    assert (issue.line, issue.path) == (16, "steps[1].set.income_limit")
    assert "syntax error" in issue.message.lower() and "')'" in issue.message


def test_a_syntax_error_in_the_result_is_located_under_result() -> None:
    issue = the_error("taxable_income: tax.taxable_income", "taxable_income: tax.taxable_income )")
    assert (issue.line, issue.path) == (24, "result.taxable_income")
    assert "syntax error" in issue.message.lower()


def test_an_error_in_a_fail_reason_is_located_at_the_nested_step() -> None:
    issue = the_error("{reason: income above the limit}", '{reason: "${ nope }"}')
    assert (issue.line, issue.path) == (22, "steps[2].branch[0].steps[0].fail.reason")
    assert "'nope'" in issue.message


def test_each_broken_expression_is_reported_on_its_own() -> None:
    text = PROBE.replace(SET, "6220000 + nothing").replace(WHEN, "tax.taxable_income > 'a'")
    found = validate(parse_text(text, FILE), CATALOG, INDEX)
    assert sorted((i.line, i.path) for i in found if i.severity == "error") == [
        (16, "steps[1].set.income_limit"),
        (19, "steps[2].branch[0].when"),
    ]
