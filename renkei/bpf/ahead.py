"""Which linkages a flow will certainly ask for next: what the hub brokers ahead.

Computed from the definition alone (a run's replay computes the same). A query step is
*certain* when nothing the flow computes decides it: its provider is a literal (no embedded
expression) and it has no ``about`` (its subject is the start's). A query step has no
condition of its own; what can keep a step from running is a branch (its arms are sequences of
their own) or a failure before it, and a failure leaves the permits brokered ahead of it unused
(their attempts end as ``not_asked``).

Within one sequence of steps (the top level, a parallel step's lane, a branch's arm) the steps
that certainly follow a linkage are the certain query steps right after it, up to the first step
that is not one.

A run that starts with a parallel step starts every lane at once: each lane's own leading certain
query steps are as certain as a sequence's (nothing the flow computes comes before them). They
are brokered with the start, lane by lane (:func:`leading_lanes`), only when every lane starts
with a certain query step and the lanes fit in one call: a lane that starts with anything else
asks the hub at the step anyway (no crossing saved), and would then have its siblings' providers
asked before the group's linkages are all decided, where brokered together at the step none is.
"""

from __future__ import annotations

from collections.abc import Iterator

from renkei.bpf.cel.types import embedded
from renkei.bpf.models import AnyStep, BranchStep, ParallelStep, QueryStep, WhenArm


def certain(step: AnyStep) -> bool:
    """Whether ``step`` is a query whose request nothing the flow computes can change."""
    return (
        isinstance(step, QueryStep)
        and step.query.about is None
        and embedded(step.query.provider) is None
    )


def _sequences(steps: list[AnyStep]) -> Iterator[list[AnyStep]]:
    yield steps
    for s in steps:
        if isinstance(s, ParallelStep):
            for lane in s.parallel:
                yield from _sequences(lane)
        elif isinstance(s, BranchStep):
            for arm in s.branch:
                yield from _sequences(arm.steps if isinstance(arm, WhenArm) else arm.otherwise)


def _run_of_certain(steps: list[AnyStep], limit: int) -> list[QueryStep]:
    out: list[QueryStep] = []
    for s in steps:
        if len(out) >= limit or not certain(s) or not isinstance(s, QueryStep):
            break
        out.append(s)
    return out


def leading(steps: list[AnyStep], limit: int) -> list[QueryStep]:
    """The run's leading linkages: the certain query steps it starts with (at most ``limit``),
    asked for as the run starts."""
    return _run_of_certain(steps, limit)


def leading_lanes(steps: list[AnyStep], limit: int) -> list[list[QueryStep]]:
    """The run's leading linkages by the sequence each is in (at most ``limit`` in all): the
    top level's (:func:`leading`), or, for a run that starts with a parallel step, each lane's
    leading certain query steps, if every lane starts with one and there are no more lanes than
    ``limit`` (else none: the group is brokered at its step, together). Within a sequence the
    flow reaches them in order; across lanes at once. Past ``limit``, the lanes keep their
    first steps before any lane keeps a second."""
    if not steps or not isinstance(steps[0], ParallelStep):
        top = leading(steps, limit)
        return [top] if top else []
    runs = [_run_of_certain(lane, limit) for lane in steps[0].parallel]
    if len(runs) > limit or not all(runs):
        return []
    kept = [0] * len(runs)
    total = 0
    for depth in range(limit):
        for i, run in enumerate(runs):
            if total < limit and len(run) > depth:
                kept[i] += 1
                total += 1
        if total >= limit:
            break
    return [run[:k] for run, k in zip(runs, kept, strict=True) if k]


def following(steps: list[AnyStep], limit: int) -> dict[str, list[QueryStep]]:
    """For each query step, the certain query steps right after it in its own sequence (at most
    ``limit``): asked for in the same call as it."""
    out: dict[str, list[QueryStep]] = {}
    for seq in _sequences(steps):
        for i, s in enumerate(seq):
            if isinstance(s, QueryStep):
                after = _run_of_certain(seq[i + 1 :], limit)
                if after:
                    out[s.id] = after
    return out


def lead(steps: list[AnyStep], step_id: str, limit: int) -> list[QueryStep]:
    """The most steps the flow may run between the hub brokering the query step ``step_id``
    ahead and the flow reaching it (what its permit must outlive, see
    :func:`~renkei.contracts.messages.ahead_budget`): none unless it is certain; else the
    query steps right before it in its own sequence that it may be asked ahead of, as
    :func:`leading` and :func:`following` ask it (the linkage asked at its step, then the
    certain ones between, at most ``limit`` in all). The hub bounds a permit's budget by it,
    whatever a flow asks."""
    for seq in _sequences(steps):
        for k, s in enumerate(seq):
            if s.id != step_id:
                continue
            if not certain(s):
                return []
            j = k
            while j > 0 and k - j < limit and certain(seq[j - 1]):
                j -= 1
            if j > 0 and k - j < limit and isinstance(seq[j - 1], QueryStep):
                j -= 1  # the linkage the flow asks at its step, with those after it
            return [q for q in seq[j:k] if isinstance(q, QueryStep)]
    return []
