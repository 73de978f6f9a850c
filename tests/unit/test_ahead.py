"""What the hub brokers ahead: computed from the definition alone (renkei.bpf.ahead)."""

from __future__ import annotations

from datetime import timedelta

from renkei.bpf.ahead import certain, following, lead, leading
from renkei.bpf.loader import parse_text
from renkei.bpf.models import BpfDefinition, QueryStep
from renkei.contracts.messages import ahead_budget
from renkei.contracts.retries import budget_seconds

HEAD = """bpf: ahead-unit
version: 1
title: {ja: 先行照会, en: Ahead}
task: child-allowance
owners: {definer: mhlw, executors: [role:municipal-mayor]}
triggers: [counter]
inputs:
  office: {type: org}
  spouse: {type: subject, required: false}
steps:
"""


def _definition(steps: str) -> BpfDefinition:
    return parse_text(HEAD + steps + "result: {}\n", "ahead-unit.yaml").definition


def _q(i: int, extra: str = "") -> str:
    return f"  - {{id: q{i}, query: {{info: local-tax, provider: city-shibuya{extra}}}}}\n"


def _ids(steps: list[QueryStep]) -> list[str]:
    return [s.id for s in steps]


def test_the_leading_linkages_stop_at_the_first_step_the_flow_computes() -> None:
    d = _definition(
        _q(0)
        + _q(1)
        + '  - {id: q2, query: {info: local-tax, provider: "${ inputs.office }"}}\n'
        + _q(3)
    )
    assert _ids(leading(d.steps, 50)) == ["q0", "q1"]
    # q2 is asked at its step; q3 certainly follows it, and q1 is followed by nothing certain
    assert {k: _ids(v) for k, v in following(d.steps, 50).items()} == {
        "q0": ["q1"],
        "q2": ["q3"],
    }


def test_an_about_a_set_step_or_a_branch_ends_the_lookahead() -> None:
    d = _definition(
        _q(0)
        + '  - {id: q1, query: {info: local-tax, provider: city-shibuya, about: "${ inputs.spouse }"}}\n'
        + _q(2)
        + "  - {id: s, set: {x: '1'}}\n"
        + _q(4)
        + "  - id: b\n"
        + "    branch:\n"
        + "      - when: inputs.office == 'city-shibuya'\n"
        + "        steps:\n"
        + "          - {id: q5, query: {info: local-tax, provider: city-shibuya}}\n"
        + "          - {id: q6, query: {info: local-tax, provider: city-shibuya}}\n"
        + "      - otherwise:\n"
        + "          - {id: q7, query: {info: local-tax, provider: city-shibuya}}\n"
        + _q(8)
    )
    steps = {s.id: s for s in d.steps}
    assert not certain(steps["q1"]) and certain(steps["q0"]) and not certain(steps["s"])
    assert _ids(leading(d.steps, 50)) == ["q0"]
    assert {k: _ids(v) for k, v in following(d.steps, 50).items()} == {
        "q1": ["q2"],  # asked at its step (its subject is computed), q2 certainly follows
        "q5": ["q6"],  # within an arm; nothing across the branch (q4 is not followed by q5)
    }


def test_a_parallel_steps_lanes_each_look_ahead_in_their_own_lane() -> None:
    d = _definition(
        "  - id: p\n"
        "    parallel:\n"
        "      - [{id: a0, query: {info: local-tax, provider: city-shibuya}},"
        " {id: a1, query: {info: local-tax, provider: city-shibuya}}]\n"
        "      - [{id: b0, query: {info: pension-benefit, provider: jps}}]\n" + _q(9)
    )
    assert leading(d.steps, 50) == []  # a parallel step first: its lanes ask at once
    assert {k: _ids(v) for k, v in following(d.steps, 50).items()} == {"a0": ["a1"]}


def test_the_lookahead_is_bounded() -> None:
    d = _definition("".join(_q(i) for i in range(12)))
    assert _ids(leading(d.steps, 5)) == ["q0", "q1", "q2", "q3", "q4"]
    assert _ids(following(d.steps, 3)["q4"]) == ["q5", "q6", "q7"]
    assert "q11" not in following(d.steps, 3)


def test_a_permit_brokered_ahead_lasts_the_steps_before_it_and_at_most_a_day() -> None:
    d = _definition(_q(0) + _q(1, ", timeout: 10s, retry: {max_attempts: 2}") + _q(2))
    q0, q1, q2 = d.steps
    assert isinstance(q0, QueryStep) and isinstance(q1, QueryStep) and isinstance(q2, QueryStep)
    own = budget_seconds(timedelta(seconds=60), 5, timedelta(minutes=1))  # the defaults
    assert ahead_budget(q0) == own
    assert ahead_budget(q2, [q0, q1]) == own + (own + 60) + (10 * 2 + 60 + 10)
    long = _definition(_q(0, ", timeout: 1h, retry: {max_attempts: 30}") + _q(1)).steps
    assert ahead_budget(long[1], [long[0]]) == 86_400  # type: ignore[list-item]


def test_the_most_a_step_may_be_brokered_ahead_of_covers_every_way_it_is_asked() -> None:
    """What the hub bounds a permit's budget by (whatever a flow asks): the steps before a
    certain linkage that it may be brokered ahead of, as the start or the linkage asked at its
    step before it asks it; none for one asked only at its step."""
    computed = '  - {id: q2, query: {info: local-tax, provider: "${ inputs.office }"}}\n'
    d = _definition(
        _q(0) + _q(1) + computed + _q(3) + _q(4) + "  - {id: s, set: {x: '1'}}\n" + _q(6)
    )
    assert _ids(lead(d.steps, "q0", 50)) == []
    assert _ids(lead(d.steps, "q1", 50)) == ["q0"]  # with the start
    assert _ids(lead(d.steps, "q2", 50)) == []  # asked at its step only
    assert _ids(lead(d.steps, "q4", 50)) == ["q2", "q3"]  # with q2, asked at its step
    assert _ids(lead(d.steps, "q6", 50)) == []  # after a set: asked at its step only
    assert _ids(lead(d.steps, "q4", 1)) == ["q3"]  # bounded as the lookahead is
    steps = {s.id: s for s in d.steps if isinstance(s, QueryStep)}
    for asker, after in following(d.steps, 50).items():  # never shorter than what is asked
        for k, s in enumerate(after):
            chain = [steps[asker], *after[:k]]
            assert ahead_budget(s, chain) <= ahead_budget(s, lead(d.steps, s.id, 50))
    for k, s in enumerate(leading(d.steps, 50)):
        assert ahead_budget(s, d.steps[:k]) <= ahead_budget(s, lead(d.steps, s.id, 50))  # type: ignore[arg-type]
