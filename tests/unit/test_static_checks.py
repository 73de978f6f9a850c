"""What passes validation runs: the static checks of calls, providers, life events and starts by
one event, and messages that say what to write instead."""

from __future__ import annotations

import datetime as dt

import pytest

from renkei.app.kit.scenarios import Behaviour, Expectation, Scenario
from renkei.app.kit.stubs import Stubs
from renkei.bpf.loader import BpfFileError, Issue, load_file, parse_text
from renkei.bpf.models import BpfDefinition
from renkei.bpf.providers import unserved_at_start
from renkei.bpf.validation import KnownBpfs, validate
from tests.paths import PROJECT_ROOT, SAMPLES_DIR
from whitelist.catalog import default_catalog
from whitelist.decide import WhitelistIndex
from whitelist.local import all_rows
from whitelist.models import Catalog, Org

CATALOG = default_catalog()
INDEX = WhitelistIndex(all_rows(CATALOG))
DAY = dt.date(2026, 11, 27)
SAMPLES = {d.bpf: d for d in (load_file(p).definition for p in sorted(SAMPLES_DIR.glob("*.yaml")))}
FIXTURES = PROJECT_ROOT / "tests" / "definitions"

HEAD = """\
bpf: probe
version: 1
title: {ja: 確認, en: Probe}
task: child-allowance
owners:
  definer: mhlw
  executors: [role:municipal-mayor]
triggers: [counter]
"""


def issues(
    text: str,
    known: KnownBpfs | dict[str, BpfDefinition] | None = None,
    catalog: Catalog = CATALOG,
    operating: bool = False,
) -> list[Issue]:
    return validate(
        parse_text(text, "probe.yaml"),
        catalog,
        INDEX,
        at=DAY,
        known=SAMPLES if known is None else known,
        operating=operating,
    )


def errors(text: str, **kw: object) -> list[str]:
    return [f"{i.path}: {i.message}" for i in issues(text, **kw) if i.severity == "error"]  # type: ignore[arg-type]


def warnings(text: str, **kw: object) -> list[str]:
    return [f"{i.path}: {i.message}" for i in issues(text, **kw) if i.severity == "warning"]  # type: ignore[arg-type]


def parse_error(text: str) -> list[str]:
    with pytest.raises(BpfFileError) as err:
        parse_text(text, "probe.yaml")
    return [f"{i.path}: {i.message}" for i in err.value.issues]


def call(inputs: str = "{previous_municipality: \"'city-shibuya'\"}", then: str = "") -> str:
    return (
        HEAD
        + "steps:\n  - id: allowance\n    call:\n      bpf: child-allowance-check\n"
        + f"      inputs: {inputs}\n"
        + then
    )


# -- call steps ----------------------------------------------------------------------------------


def test_a_call_that_fits_its_child_validates() -> None:
    text = call(then="  - id: s\n    set: {limit: int(allowance.income_limit)}\n")
    assert errors(text) == []


def test_a_call_without_a_required_child_input_is_refused() -> None:
    [error] = errors(call(inputs="{}"))
    assert error == (
        "steps[0].call.inputs: calls child-allowance-check without its required input"
        " 'previous_municipality' (org, role municipal-mayor)"
    )


def test_a_child_input_of_the_wrong_type_is_refused() -> None:
    [error] = errors(call(inputs='{previous_municipality: "42"}'))
    assert error.startswith("steps[0].call.inputs.previous_municipality: expression:")
    assert "input previous_municipality is of type org: must be of type string, is int" in error


def test_a_child_input_the_child_does_not_declare_is_refused_with_a_suggestion() -> None:
    found = errors(call(inputs="{previous_municipalty: \"'city-shibuya'\"}"))
    assert (
        "steps[0].call.inputs.previous_municipalty: child-allowance-check has no input"
        " 'previous_municipalty' (did you mean `previous_municipality`?); its inputs:"
        " previous_municipality (org)"
    ) in found


def test_a_literal_org_given_to_a_child_must_hold_the_role_it_requires() -> None:
    [error] = errors(call(inputs="{previous_municipality: \"'jps'\"}"))
    assert error == (
        "steps[0].call.inputs.previous_municipality: jps does not hold role municipal-mayor,"
        " which child-allowance-check's input previous_municipality requires (orgs that do:"
        " city-minato, city-shibuya)"
    )


def test_reading_a_result_field_the_child_does_not_return_is_refused() -> None:
    [error] = errors(call(then="  - id: s\n    set: {x: allowance.income_limt}\n"))
    assert error.startswith("steps[1].set.x: expression:")
    assert "allowance (a call of child-allowance-check) has no field 'income_limt'" in error
    assert "(did you mean `income_limit`?)" in error
    assert "returns taxable_income, income_limit, receives_pension" in error


def test_a_call_of_an_unknown_bpf_suggests_the_closest() -> None:
    text = call().replace("bpf: child-allowance-check", "bpf: child-allowance-chek")
    assert errors(text) == [
        "steps[0].call.bpf: calls 'child-allowance-chek', which is not registered"
        " (did you mean `child-allowance-check`?)"
    ]


def test_a_call_of_a_version_that_is_not_registered_is_refused() -> None:
    text = call().replace(
        "bpf: child-allowance-check\n", "bpf: child-allowance-check\n      version: 3\n"
    )
    assert errors(text) == [
        "steps[0].call.version: calls child-allowance-check version 3, which is not registered"
        " (versions: 1)"
    ]


def test_a_child_must_run_where_its_caller_runs() -> None:
    narrow = SAMPLES["child-allowance-check"].model_copy(
        update={
            "owners": SAMPLES["child-allowance-check"].owners.model_copy(
                update={"executors": ["city-minato"]}
            )
        }
    )
    [error] = errors(call(), known={**SAMPLES, narrow.bpf: narrow})
    assert error == (
        "steps[0].call.bpf: calls child-allowance-check, which city-shibuya cannot run (its"
        " executors: city-minato): a child runs at its caller's executor"
    )


def test_a_call_that_comes_back_to_its_caller_is_refused() -> None:
    back = parse_text(
        HEAD.replace("bpf: probe", "bpf: back") + "steps:\n  - id: again\n    call: {bpf: probe}\n",
        "back.yaml",
    ).definition
    found = errors(
        call()
        .replace("bpf: child-allowance-check", "bpf: back")
        .replace("inputs: {previous_municipality: \"'city-shibuya'\"}", "inputs: {}"),
        known={**SAMPLES, "back": back},
    )
    assert found == [
        "steps[0].call.bpf: calls back, which calls this flow back: child flows would never end"
    ]


def test_a_call_of_a_child_with_no_operating_version_is_refused_for_operation() -> None:
    registered = KnownBpfs()
    for d in SAMPLES.values():
        registered.add(d, "approved")
    message = (
        "steps[0].call.bpf: calls child-allowance-check, which has no operating version"
        " (v1 approved): in operation the call is refused until it operates"
    )
    assert warnings(call(), known=registered) == [message]
    assert errors(call(), known=registered, operating=True) == [message]
    registered.add(SAMPLES["child-allowance-check"], "operating")
    assert errors(call(), known=registered, operating=True) == []


def test_the_sample_and_fixture_calls_validate() -> None:
    known = {**SAMPLES, **{p.stem: load_file(p).definition for p in FIXTURES.glob("*.yaml")}}
    text = (FIXTURES / "one-stop-probe.yaml").read_text(encoding="utf-8")
    assert errors(text, known=known) == []


# -- providers named by a role, or the executor --------------------------------------------------

PENSION = """\
bpf: probe
version: 1
title: {ja: 確認, en: Probe}
task: child-rearing-allowance
owners:
  definer: mhlw
  executors: [role:prefectural-governor-etc]
triggers: [counter]
inputs:
  payer: {type: org, role: crra-public-pension-payer}
steps:
  - id: pension
    query: {info: crra-public-pension, provider: "${ inputs.payer }"}
"""


def test_a_role_whose_orgs_do_not_serve_the_item_is_refused() -> None:
    assert errors(PENSION) == [
        "steps[0].query.provider: no org inputs.payer (role:crra-public-pension-payer) can name"
        " serves info item 'crra-public-pension' (it can name jps; no org in the catalog"
        " serves it)"
    ]


def _with_nerima(serves: tuple[str, ...] = ()) -> Catalog:
    nerima = Org(
        id="city-nerima", ja="練馬区", en="Nerima City", roles=("municipal-mayor",), serves=serves
    )
    return CATALOG.model_copy(update={"orgs": {**CATALOG.orgs, nerima.id: nerima}})


ROLE_TAX = (
    HEAD
    + """\
inputs:
  previous: {type: org, role: municipal-mayor}
steps:
  - id: tax
    query: {info: local-tax, provider: "${ inputs.previous }"}
"""
)


def test_a_role_some_of_whose_orgs_do_not_serve_the_item_is_named_and_refused_at_the_start() -> (
    None
):
    catalog = _with_nerima()
    assert errors(ROLE_TAX, catalog=catalog) == []
    assert warnings(ROLE_TAX, catalog=catalog) == [
        "steps[0].query.provider: not every org inputs.previous (role:municipal-mayor) can name"
        " serves info item 'local-tax': city-minato, city-shibuya serve it, city-nerima not; a"
        " start that names one that does not is refused"
    ]
    d = parse_text(ROLE_TAX, "probe.yaml").definition
    [refused] = unserved_at_start(d, "city-minato", {"previous": "city-nerima"}, catalog)
    assert refused.input == "previous"
    assert refused.message == (
        "previous: city-nerima does not serve info item 'local-tax', which step tax asks of it"
        " (served by city-minato, city-shibuya)"
    )
    assert unserved_at_start(d, "city-minato", {"previous": "city-shibuya"}, catalog) == []


def test_the_executor_as_provider_must_serve_the_item() -> None:
    text = (
        HEAD
        + 'steps:\n  - id: own\n    query: {info: resident-record, provider: "${ executor }"}\n'
    )
    catalog = _with_nerima()
    assert errors(text, catalog=catalog) == []
    found = warnings(text, catalog=catalog)
    [warning] = [w for w in found if "serve it" in w]
    assert "city-minato, city-shibuya serve it, city-nerima not" in warning
    # nor has it an ordinance of its own for its own records (番号法第9条第2項)
    assert any(
        "city-nerima (role municipal-mayor) has no row of its own ordinance" in w for w in found
    ), found
    d = parse_text(text, "probe.yaml").definition
    [refused] = unserved_at_start(d, "city-nerima", {}, catalog)
    assert refused.input is None and refused.message.startswith(
        "the executor city-nerima does not serve info item 'resident-record'"
    )


# -- life events ---------------------------------------------------------------------------------

LONG_TERM_CARE = """\
bpf: probe
version: 1
title: {ja: 介護保険のご案内, en: Long-term care insurance}
task: long-term-care-benefits-and-premiums
owners:
  definer: mhlw
  executors: [role:municipal-mayor]
triggers:
  - life-event: {age: 65, on: birthday}
steps:
  - id: household
    query: {info: resident-record, provider: "${ executor }"}
"""


def test_a_life_event_flow_needs_a_cohort_rule_for_its_task() -> None:
    [error] = errors(LONG_TERM_CARE)
    assert error.startswith(
        "triggers[0].life-event: task 'long-term-care-benefits-and-premiums' has no cohort rule"
    )
    assert "tasks with a cohort rule: coming-of-age-pension-notice, school-entry-notice" in error
    assert "whitelist/data/ordinances/local-<org>.yaml" in error and "docs/triggers.md" in error


def test_the_docs_say_how_to_add_a_cohort_rule() -> None:
    doc = (PROJECT_ROOT / "docs" / "triggers.md").read_text(encoding="utf-8")
    assert "A cohort rule for a new task" in doc
    section = doc.split("A cohort rule for a new task")[1]
    assert "whitelist/data/ordinances/local-<org>.yaml" in section and "resident-cohort" in section


def test_a_life_event_flow_with_a_cohort_rule_validates() -> None:
    text = LONG_TERM_CARE.replace(
        "long-term-care-benefits-and-premiums", "coming-of-age-pension-notice"
    )
    assert errors(text) == []


def test_a_life_event_rule_without_an_age_is_refused() -> None:
    # A task with a cohort rule for the mayor (the school entry notice's is the board's).
    text = LONG_TERM_CARE.replace(
        "long-term-care-benefits-and-premiums", "coming-of-age-pension-notice"
    )
    text = text.replace("{age: 65, on: birthday}", "{on: school-year-start}")
    assert errors(text) == [
        "triggers[0].life-event: a life-event rule needs an `age`: the scan asks who reaches it"
    ]


def test_a_bad_life_event_rule_is_one_error() -> None:
    assert parse_error(LONG_TERM_CARE.replace("on: birthday", "on: birth-day")) == [
        "triggers[0].life-event.on: Input should be 'birthday', 'fiscal-year-start' or"
        " 'school-year-start'"
    ]
    [error] = parse_error(LONG_TERM_CARE.replace("life-event:", "life_event:"))
    assert error.startswith(
        "triggers[0]: unknown trigger `life_event` (did you mean `life-event`?)"
    )


# -- one event, one run --------------------------------------------------------------------------

ONE_STOP = """\
bpf: death-one-stop
version: 1
title: {ja: 死亡時ワンストップ, en: One-stop on death}
task: child-allowance
owners:
  definer: mhlw
  executors: [role:municipal-mayor]
triggers:
  - notification: {event: death}
inputs:
  occurred_on: {type: date}
steps:
  - id: stop
    call:
      bpf: allowance-stop-on-death
      inputs: {occurred_on: inputs.occurred_on}
"""


def test_a_flow_started_by_an_event_that_calls_another_it_starts_is_flagged() -> None:
    [warning] = warnings(ONE_STOP)
    assert warning.startswith(
        "steps[0].call.bpf: a death notice from role:municipal-mayor starts this flow and"
        " allowance-stop-on-death too"
    )
    assert "the same linkages twice" in warning


def test_a_flow_called_by_another_that_the_same_event_starts_is_flagged() -> None:
    one_stop = parse_text(ONE_STOP, "one-stop.yaml").definition
    text = (SAMPLES_DIR / "allowance-stop-on-death.yaml").read_text(encoding="utf-8")
    [warning] = warnings(text, known={**SAMPLES, one_stop.bpf: one_stop})
    assert warning.startswith(
        "triggers[0].notification: a death notice from role:municipal-mayor also starts"
        " death-one-stop, which calls this flow as a child"
    )
    assert warnings(text) == []  # alone, it is started once


def test_a_flow_started_by_another_event_is_not_flagged() -> None:
    assert warnings(ONE_STOP.replace("{event: death}", "{event: move}")) == []


# -- messages that teach -------------------------------------------------------------------------


def test_unknown_names_get_the_closest_known_one() -> None:
    text = (
        HEAD.replace("task: child-allowance", "task: child-alowance")
        .replace("definer: mhlw", "definer: mhwl")
        .replace("[role:municipal-mayor]", "[role:municipal-mayr, city-minto]")
        + "steps:\n  - id: tax\n    query: {info: local-taxes, provider: city-shibya}\n"
    )
    assert errors(text) == [
        "task: unknown task 'child-alowance' (did you mean `child-allowance`?)",
        "owners.definer: unknown org 'mhwl' (did you mean `mhlw`?)",
        "owners.executors[0]: unknown role 'municipal-mayr' (did you mean `municipal-mayor`?)",
        "owners.executors[1]: unknown org 'city-minto' (did you mean `city-minato`?)",
        "steps[0].query.info: unknown info item 'local-taxes' (did you mean `local-tax`?)",
        "steps[0].query.provider: unknown org 'city-shibya' (did you mean `city-shibuya`?)",
    ]


def test_an_unknown_step_kind_is_named_with_the_closest_kind() -> None:
    [error] = parse_error(
        HEAD + "steps:\n  - id: tax\n    qeury: {info: local-tax, provider: jps}\n"
    )
    assert error.startswith("steps[0]: unknown step kind `qeury` (did you mean `query`?)")
    [error] = parse_error(HEAD + "steps:\n  - id: a\n    set: {x: '1'}\n    fail: {reason: r}\n")
    assert error.startswith("steps[0]: this step has 2 kind keys (`set`, `fail`)")


def test_does_not_serve_says_who_does() -> None:
    text = HEAD + "steps:\n  - id: tax\n    query: {info: local-tax, provider: jps}\n"
    assert errors(text) == [
        "steps[0].query.provider: jps does not serve info item 'local-tax' (served by"
        " city-minato, city-shibuya)"
    ]


def test_a_whitelist_denial_says_which_rows_would_permit() -> None:
    text = HEAD.replace("task: child-allowance", "task: child-rearing-allowance") + (
        "steps:\n  - id: tax\n    query: {info: local-tax, provider: city-shibuya}\n"
    )
    [error] = errors(text)
    assert "not permitted by the whitelist" in error
    assert "rows that permit 'local-tax' under task 'child-rearing-allowance':" in error
    assert "prefectural-governor-etc → municipal-mayor" in error
    medical = (
        HEAD + "steps:\n  - id: m\n    query: {info: medical-benefit, provider: kyokai-kenpo}\n"
    )
    [error] = errors(medical)
    assert (
        "no row permits 'medical-benefit' under task 'child-allowance'; rows permit it under:"
        in error
    )
    assert "vaccination-health-damage-relief" in error


def test_one_string_is_taken_for_both_languages_and_noted() -> None:
    text = HEAD.replace("title: {ja: 確認, en: Probe}", "title: 確認") + (
        "steps:\n  - id: tax\n    query: {info: local-tax, provider: city-shibuya}\n"
    )
    assert parse_text(text, "probe.yaml").definition.title.model_dump() == {
        "ja": "確認",
        "en": "確認",
    }
    assert errors(text) == []
    [warning] = warnings(text)
    assert warning.startswith("title: one text taken for both languages")
    [error] = parse_error(text.replace("title: 確認", "title: [確認]"))
    assert error == "title: a text is `{ja: …, en: …}` (one string is taken for both languages)"


def test_an_undeclared_name_suggests_a_step_in_scope() -> None:
    text = HEAD + (
        "steps:\n  - id: tax\n    query: {info: local-tax, provider: city-shibuya}\n"
        "  - id: s\n    set: {x: tx.taxable_income}\n"
    )
    [error] = errors(text)
    assert "undeclared reference" in error and "(did you mean `tax`?)" in error


# -- the conformance kit's stubs -----------------------------------------------------------------


def test_a_stub_stands_in_only_for_an_item_its_org_serves() -> None:
    scenario = Scenario(
        name="jps answers for a pension it does not serve",
        executor="pref-tokyo",
        providers={
            "jps": {
                "crra-public-pension": Behaviour(respond={}),
                "pension-benefit": Behaviour(
                    respond={"receives_pension": False, "kind": "none", "annual_amount": 0}
                ),
            }
        },
        expect=Expectation(outcome="completed"),
    )
    stubs = Stubs(scenario, CATALOG, lambda name, org: "A" * 20)
    assert set(stubs.providers("jps")) == {"pension-benefit"}
    stubs.check_answers()
    assert stubs.problems == [
        "providers.jps.crra-public-pension: jps is not registered to serve crra-public-pension"
        " (the catalog's `serves`), so no stub stands in for it (served by: no org)"
    ]
