"""Act steps and private partners, statically: what validation refuses, with located messages,
and what the whitelist decides for a partner row of scope consent."""

from __future__ import annotations

import datetime as dt

from renkei.bpf.loader import parse_text
from renkei.bpf.validation import validate
from tests.paths import SAMPLES_DIR
from whitelist.catalog import default_catalog
from whitelist.decide import WhitelistIndex, decide_linkage
from whitelist.local import all_rows

CATALOG = default_catalog()
INDEX = WhitelistIndex(all_rows(CATALOG))
DAY = dt.date(2026, 11, 27)

HEAD = """\
bpf: probe
version: 1
title: {ja: 確認, en: Probe}
task: move-one-stop
owners:
  definer: city-minato
  executors: [role:municipal-mayor]
triggers: [portal]
inputs:
  moved_on: {type: date}
  new_address: {type: string}
"""
CONSENT = """\
  - id: consent
    wait:
      for: partner-consent
      by: citizen
      fields: {agree: {type: boolean}, customer_number: {type: string}}
      timeout: 14d
"""
SEND = """\
      send:
        customer_number: consent.customer_number
        moved_on: inputs.moved_on
        new_address: inputs.new_address
"""


def act(partner: str = "sample-denki", extra: str = "", consent: str = "consent") -> str:
    return (
        f"  - id: notify\n    act:\n      partner: {partner}\n"
        f"      action: electricity-move-notice\n{SEND}{extra}"
        + (f"      consent: {consent}\n" if consent else "")
    )


def errors(text: str) -> list[str]:
    found = validate(parse_text(text, "probe.yaml"), CATALOG, INDEX, at=DAY)
    return [f"{i.path}: {i.message}" for i in found if i.severity == "error"]


def test_the_sample_validates() -> None:
    text = (SAMPLES_DIR / "move-notice-electricity.yaml").read_text()
    assert errors(text) == []
    assert errors(HEAD + "steps:\n" + CONSENT + act()) == []


def test_an_act_sends_only_what_the_action_takes() -> None:
    found = errors(HEAD + "steps:\n" + CONSENT + act(extra="        birth_date: inputs.moved_on\n"))
    assert any(
        e.startswith("steps[1].act.send.birth_date:")
        and "does not take field 'birth_date'" in e
        and "customer_number, moved_on, new_address" in e
        for e in found
    ), found


def test_an_act_sends_every_field_the_action_needs_with_its_type() -> None:
    missing = (
        HEAD + "steps:\n" + CONSENT + act().replace("        new_address: inputs.new_address\n", "")
    )
    assert any("needs field 'new_address'" in e for e in errors(missing))
    typed = HEAD + "steps:\n" + CONSENT + act().replace("consent.customer_number", "1 + 2")
    assert any(
        e.startswith("steps[1].act.send.customer_number:") and "is int" in e for e in errors(typed)
    ), errors(typed)


def test_a_partner_must_carry_out_the_action() -> None:
    found = errors(HEAD + "steps:\n" + CONSENT + act(partner="jps"))
    assert any(
        e.startswith("steps[1].act.partner:")
        and "jps does not carry out action 'electricity-move-notice'" in e
        and "sample-denki" in e
        for e in found
    ), found
    unknown = errors(HEAD + "steps:\n" + CONSENT + act(partner="sample-denky"))
    assert any("did you mean `sample-denki`" in e for e in unknown), unknown


def test_a_private_partner_needs_the_citizens_own_consent() -> None:
    none = errors(HEAD + "steps:\n" + CONSENT + act(consent=""))
    assert any(
        e.startswith("steps[1].act.consent:") and "sample-denki is a private org" in e for e in none
    ), none
    by_agency = HEAD + "steps:\n" + CONSENT.replace("by: citizen", "by: agency") + act()
    assert any("must say `by: citizen`" in e for e in errors(by_agency)), errors(by_agency)
    no_agree = HEAD + "steps:\n" + CONSENT.replace("agree:", "yes:") + act()
    assert any("needs a boolean field 'agree'" in e for e in errors(no_agree))
    later = HEAD + "steps:\n" + act() + CONSENT
    assert any("not an earlier wait step" in e for e in errors(later)), errors(later)


def test_a_private_org_is_never_a_query_provider_nor_an_executor() -> None:
    query = (
        HEAD + "steps:\n  - id: peek\n    query: {info: resident-record, provider: sample-denki}\n"
    )
    found = errors(query)
    assert any(
        e.startswith("steps[0].query.provider:") and "sample-denki is a private org" in e
        for e in found
    ), found
    runs = HEAD.replace("[role:municipal-mayor]", "[sample-denki]") + "steps:\n" + CONSENT + act()
    assert any(e.startswith("owners.executors[0]:") and "private org" in e for e in errors(runs)), (
        errors(runs)
    )


def test_the_act_needs_a_row_for_its_task() -> None:
    other = HEAD.replace("task: move-one-stop", "task: child-allowance") + "steps:\n" + CONSENT
    found = errors(other + act())
    assert any(e.startswith("steps[1].act.partner:") and "not permitted" in e for e in found), found


def test_a_consent_row_permits_only_with_consent() -> None:
    at = dt.datetime(2026, 11, 27, tzinfo=dt.UTC)
    args = (CATALOG, INDEX, "city-minato", "sample-denki", "move-one-stop")
    without = decide_linkage(*args, "electricity-move-notice", at)
    assert not without.allowed and "only on the citizen's own consent" in without.reason
    given = decide_linkage(*args, "electricity-move-notice", at, consented=True)
    assert given.allowed and given.row is not None and given.row.scope == "consent"
    assert "第69条第2項第1号" in given.legal_reference
    # No row lets a private org answer a query, consent or not.
    peek = decide_linkage(*args, "resident-record", at, consented=True)
    assert not peek.allowed


def test_a_partner_chosen_at_run_time_is_flagged() -> None:
    text = HEAD.replace(
        "  new_address: {type: string}\n", "  new_address: {type: string}\n  company: {type: org}\n"
    )
    text += "steps:\n" + CONSENT + act(partner='"${ inputs.company }"')
    found = validate(parse_text(text, "probe.yaml"), CATALOG, INDEX, at=DAY)
    assert [i.severity for i in found if i.path == "steps[1].act.partner"] == ["warning"], found
    assert not [i for i in found if i.severity == "error"], found
