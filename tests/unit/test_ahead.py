"""What the hub brokers ahead: computed from the definition alone (renkei.bpf.ahead)."""

from __future__ import annotations

from datetime import timedelta

from renkei.bpf.ahead import certain, following, lead, leading, leading_lanes
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
    assert leading(d.steps, 50) == []  # a parallel step first: not a sequence's lead ...
    # ... but each lane's, brokered with the start lane by lane
    assert [_ids(lane) for lane in leading_lanes(d.steps, 50)] == [["a0", "a1"], ["b0"]]
    assert {k: _ids(v) for k, v in following(d.steps, 50).items()} == {"a0": ["a1"]}


def test_a_leading_parallel_step_leads_only_if_every_lane_starts_with_a_certain_linkage() -> None:
    """A lane whose first step the flow computes (its provider, its subject, whether it runs)
    or that is not a query asks the hub at the step: then the whole group is brokered there,
    together, and nothing with the start. When every lane starts with a certain linkage, each
    lane's leading ones are; past the limit every lane keeps its first before any keeps a
    second, and a group wider than the limit is brokered at its step."""
    certain_lanes = (
        "      - [{id: a0, query: {info: local-tax, provider: city-shibuya}},"
        " {id: a1, query: {info: local-tax, provider: city-shibuya}},"
        " {id: a2, query: {info: local-tax, provider: city-shibuya}}]\n"
        "      - [{id: f0, query: {info: pension-benefit, provider: jps}},"
        " {id: f1, query: {info: local-tax, provider: city-shibuya}},"
        ' {id: f2, query: {info: local-tax, provider: "${ inputs.office }"}},'
        " {id: f3, query: {info: local-tax, provider: city-shibuya}}]\n"
    )
    others = [
        '      - [{id: b0, query: {info: local-tax, provider: "${ inputs.office }"}}]\n',
        "      - [{id: c0, query: {info: local-tax, provider: city-shibuya,"
        ' about: "${ inputs.spouse }"}}]\n',
        "      - [{id: d0, set: {x: '1'}}, {id: d1, query: {info: local-tax,"
        " provider: city-shibuya}}]\n",
        "      - - id: e0\n"
        "          branch:\n"
        "            - when: inputs.office == 'city-shibuya'\n"
        "              steps: [{id: e1, query: {info: local-tax, provider: city-shibuya}}]\n",
    ]
    head = "  - id: p\n    parallel:\n"
    d = _definition(head + certain_lanes + _q(9))
    assert [_ids(lane) for lane in leading_lanes(d.steps, 50)] == [["a0", "a1", "a2"], ["f0", "f1"]]
    assert [_ids(lane) for lane in leading_lanes(d.steps, 3)] == [["a0", "a1"], ["f0"]]
    assert leading_lanes(d.steps, 1) == []  # two lanes: more than one call of one takes
    # a permit brokered so lasts no longer than the hub allows its step (the definition's word)
    for lane in leading_lanes(d.steps, 50):
        for k, s in enumerate(lane):
            assert _ids(lead(d.steps, s.id, 50)) == _ids(lane[:k])
            assert ahead_budget(s, lane[:k]) <= ahead_budget(s, lead(d.steps, s.id, 50))
    for other in others:
        mixed = _definition(head + certain_lanes + other)
        assert leading_lanes(mixed.steps, 50) == [], other


def test_a_parallel_step_after_the_start_leads_nothing() -> None:
    """Only a run that starts with a parallel step starts its lanes at once: one after a query
    is reached only once that query is answered (its lanes are asked for there)."""
    d = _definition(
        _q(0) + "  - id: p\n"
        "    parallel:\n"
        "      - [{id: a0, query: {info: local-tax, provider: city-shibuya}}]\n"
        "      - [{id: b0, query: {info: local-tax, provider: city-shibuya}}]\n"
    )
    assert [_ids(lane) for lane in leading_lanes(d.steps, 50)] == [["q0"]]
    assert leading_lanes(_definition("  - {id: s, set: {x: '1'}}\n" + _q(1)).steps, 50) == []


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
