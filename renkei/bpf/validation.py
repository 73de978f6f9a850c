"""Static validation of a BPF: references, expressions, whitelist conformance, and the flows it
calls and is started beside.

Runs before a definition is registered, at each lifecycle step that leads to operation, and
before any flow of it can start; what passes it runs:

- references: the task, the definer, every executor, every info item and literal provider exist
  (an unknown name gets the closest known one: "did you mean …");
- providers: every org a provider can name serves the step's info item — a literal org, the
  executor's orgs (``${ executor }``), every org of an ``org`` input's ``role``; where only some
  do, a warning names them and a start naming another is refused (:mod:`.providers`);
- expressions: every CEL expression compiles and type-checks in the scope of its position;
- whitelist conformance: every ``query`` step, for every executor that may run it, matches a
  whitelist row valid on the check date; a denial says which rows would permit. A provider given
  by an expression is checked for every org its type admits (an ``org`` input constrained by
  ``role``); an unconstrained one is flagged as needing the runtime check, which the linkage
  interceptor always makes anyway;
- calls (with ``known``, :class:`KnownBpfs`): the child is registered (or validated alongside),
  serves the caller's purpose, runs at every executor of the caller, gets every required input
  with the right type, returns every result field the caller reads, calls nothing that calls the
  caller back, and — where the registry knows its states — has an operating version (required
  when the caller is to operate);
- triggers: a life-event flow's task has a cohort rule (a whitelist row that lets the executor
  ask its own register for ``resident-cohort`` under that task); a notification flow that calls,
  or is called by, another flow started by the same event is flagged (duplicate linkages).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from ruamel.yaml.comments import CommentedMap, CommentedSeq

from renkei.bpf.acts import act_requests, action_schemas, check_acts, check_private
from renkei.bpf.cel.compiler import CallShape, compile_definition
from renkei.bpf.cel.types import embedded
from renkei.bpf.loader import Issue, LoadedBpf, format_path
from renkei.bpf.models import (
    RESERVED,
    ActStep,
    AnyStep,
    BpfDefinition,
    BranchStep,
    CallStep,
    FailStep,
    LifeEventTrigger,
    NotificationRule,
    NotificationTrigger,
    ParallelStep,
    QueryStep,
    SetStep,
    SleepStep,
    WhenArm,
    did_you_mean,
    walk,
)
from renkei.bpf.providers import named_providers, served_by
from whitelist.decide import WhitelistIndex, japan_today, permitting_hint
from whitelist.models import COHORT_INFO, Catalog, PeriodKind, role_of, role_ref

Add = Callable[..., None]


class KnownBpfs:
    """What validation knows of other BPFs, for ``call`` steps: every version it has seen (the
    registry's, or files validated together) and, for registered versions, their state.

    A call without a version runs the highest version that may run: in test mode any not retired
    (:meth:`latest`), in operation the highest operating one (:meth:`operating`).
    """

    def __init__(self, definitions: Iterable[BpfDefinition] = ()) -> None:
        self._versions: dict[str, dict[int, BpfDefinition]] = {}
        self._states: dict[tuple[str, int], str] = {}
        for d in definitions:
            self.add(d)

    @classmethod
    def of(cls, known: KnownBpfs | Mapping[str, BpfDefinition]) -> KnownBpfs:
        """``known`` itself, or the definitions of a mapping by id (no states)."""
        return known if isinstance(known, KnownBpfs) else cls(known.values())

    def add(self, d: BpfDefinition, state: str | None = None) -> None:
        """Know ``d`` (a file, or with ``state`` a registered version); a later one of the same
        id and version replaces the earlier one, its state kept."""
        self._versions.setdefault(d.bpf, {})[d.version] = d
        if state is not None:
            self._states[(d.bpf, d.version)] = state

    def ids(self) -> list[str]:
        return sorted(self._versions)

    def version(self, bpf: str, version: int) -> BpfDefinition | None:
        return self._versions.get(bpf, {}).get(version)

    def versions(self, bpf: str) -> list[int]:
        return sorted(self._versions.get(bpf, {}))

    def state(self, bpf: str, version: int) -> str | None:
        """The registry's state of that version; ``None`` for one only in a file."""
        return self._states.get((bpf, version))

    def registered(self, bpf: str) -> bool:
        return any(self.state(bpf, v) is not None for v in self.versions(bpf))

    def latest(self, bpf: str) -> BpfDefinition | None:
        """The highest version not retired."""
        found = [v for v in self.versions(bpf) if self.state(bpf, v) != "retired"]
        return self._versions[bpf][found[-1]] if found else None

    def operating(self, bpf: str) -> BpfDefinition | None:
        """The highest operating version."""
        found = [v for v in self.versions(bpf) if self.state(bpf, v) == "operating"]
        return self._versions[bpf][found[-1]] if found else None

    def __iter__(self) -> Iterator[BpfDefinition]:
        """The latest version of every BPF."""
        return (d for bpf in self.ids() if (d := self.latest(bpf)) is not None)


def _names(choices: Iterable[str]) -> str:
    return ", ".join(sorted(choices)) or "none"


def executor_roles(catalog: Catalog, executor: str) -> dict[str, frozenset[str]]:
    """The requesters an executor entry stands for: ``{label: roles}``."""
    role = role_of(executor)
    if role is not None:
        return {executor: frozenset({role})}
    return {executor: catalog.org_roles(executor)}


def org_of(label: str) -> str | None:
    """The org an executor entry names (None for a role, which stands for many bodies)."""
    return label if role_of(label) is None else None


def info_schemas(catalog: Catalog, loaded: LoadedBpf) -> dict[str, str]:
    """Schema class name of every info item the definition queries."""
    return {
        s.query.info: catalog.info_items[s.query.info].schema_name
        for s in walk(loaded.definition.steps)
        if isinstance(s, QueryStep) and s.query.info in catalog.info_items
    }


def _step_locs(
    steps: list[AnyStep], prefix: tuple[str | int, ...]
) -> dict[str, tuple[str | int, ...]]:
    locs: dict[str, tuple[str | int, ...]] = {}
    for i, s in enumerate(steps):
        loc = (*prefix, i)
        locs.setdefault(s.id, loc)
        if isinstance(s, ParallelStep):
            for j, lane in enumerate(s.parallel):
                locs.update(
                    {
                        k: v
                        for k, v in _step_locs(lane, (*loc, "parallel", j)).items()
                        if k not in locs
                    }
                )
        elif isinstance(s, BranchStep):
            for j, arm in enumerate(s.branch):
                key = "steps" if isinstance(arm, WhenArm) else "otherwise"
                body = arm.steps if isinstance(arm, WhenArm) else arm.otherwise
                locs.update(
                    {
                        k: v
                        for k, v in _step_locs(body, (*loc, "branch", j, key)).items()
                        if k not in locs
                    }
                )
    return locs


def _duplicate_ids(steps: list[AnyStep]) -> list[str]:
    seen: set[str] = set()
    dups: list[str] = []
    for s in walk(steps):
        if s.id in seen:
            dups.append(s.id)
        seen.add(s.id)
    return dups


def validate(
    loaded: LoadedBpf,
    catalog: Catalog,
    whitelist: WhitelistIndex,
    *,
    at: dt.date | None = None,
    known: KnownBpfs | Mapping[str, BpfDefinition] | None = None,
    operating: bool = False,
) -> list[Issue]:
    """Every problem (errors) and note (warnings) about one parsed definition.

    ``known`` holds the definitions a ``call`` step may name (the registry's versions with their
    states, or the files validated together); without it call targets are not checked.
    ``operating``: the definition is about to operate, so every flow it calls must have an
    operating version (without it, a missing one is a warning).
    """
    d = loaded.definition
    day = at or japan_today()
    issues: list[Issue] = []
    locs = _step_locs(d.steps, ("steps",))
    others = KnownBpfs.of(known) if known is not None else None

    def add(loc: tuple[str | int, ...], message: str, severity: str = "error") -> None:
        issues.append(
            Issue(
                file=loaded.source_name,
                line=loaded.line_of(loc),
                path=format_path(loc),
                message=message,
                severity=severity,
            )
        )

    if d.task not in catalog.tasks:
        add(("task",), f"unknown task {d.task!r}{did_you_mean(d.task, catalog.tasks)}")
    if d.owners.definer not in catalog.orgs:
        add(("owners", "definer"), _unknown_org(d.owners.definer, catalog))
    for i, co in enumerate(d.owners.co_definers):
        if co not in catalog.orgs:
            add(("owners", "co-definers", i), _unknown_org(co, catalog))
        elif co == d.owners.definer or co in d.owners.co_definers[:i]:
            add(("owners", "co-definers", i), f"{co} is named twice among the definers")
    for ex, body in d.owners.entrusted_by.items():
        if ex not in d.owners.executors:
            add(("owners", "entrusted-by", ex), f"{ex} is not one of the executors")
        if body not in catalog.orgs:
            add(("owners", "entrusted-by", ex), _unknown_org(body, catalog))
    for i, ex in enumerate(d.owners.executors):
        role = role_of(ex)
        if role is not None:
            if role not in catalog.roles:
                add(("owners", "executors", i), _unknown_role(role, catalog))
        elif ex not in catalog.orgs:
            add(("owners", "executors", i), _unknown_org(ex, catalog))
    for name, spec in d.inputs.items():
        if name in RESERVED:
            add(("inputs", name), f"{name!r} is a reserved name")
        if spec.role is not None and spec.role not in catalog.roles:
            add(("inputs", name, "role"), _unknown_role(spec.role, catalog))
    for dup in _duplicate_ids(d.steps):
        add(locs.get(dup, ("steps",)), f"duplicate step id {dup!r}")
    collide = set(d.inputs) & {s.id for s in walk(d.steps)}
    for name in sorted(collide):
        add(locs[name], f"step id {name!r} is also an input name")
    for loc in _plain_texts(loaded.source_map.root if loaded.source_map else None, ()):
        add(
            loc,
            "one text taken for both languages: readers of English and of Japanese see the same"
            " words; write `{ja: …, en: …}` to give each its own",
            "warning",
        )

    queries = [s for s in walk(d.steps) if isinstance(s, QueryStep)]
    for s in queries:
        step_loc = locs[s.id]
        info, provider = s.query.info, s.query.provider
        sub_task = s.query.sub_task
        if sub_task is not None and sub_task not in (named := whitelist.sub_tasks(d.task)):
            add(
                (*step_loc, "query", "sub_task"),
                f"no whitelist row names sub-task {sub_task!r} under task {d.task!r}"
                + (f" (sub-tasks named: {_names(sorted(named))})" if named else " (none is)")
                + did_you_mean(sub_task, named),
            )
        if info not in catalog.info_items:
            add(
                (*step_loc, "query", "info"),
                f"unknown info item {info!r}{did_you_mean(info, catalog.info_items)}",
            )
        if embedded(provider) is None and provider not in catalog.orgs:
            add((*step_loc, "query", "provider"), _unknown_org(provider, catalog))
        elif embedded(provider) is None:
            if info in catalog.info_items and info not in catalog.orgs[provider].serves:
                add(
                    (*step_loc, "query", "provider"),
                    f"{provider} does not serve info item {info!r} ({served_by(catalog, info)})",
                )

    _check_periods(d, queries, whitelist, day, locs, add)
    check_private(d, catalog, locs, add)
    check_acts(d, catalog, whitelist, day, locs, add)
    if d.task in catalog.tasks:
        _check_triggers(d, catalog, whitelist, day, others, locs, add)
    calls: dict[str, CallShape] = {}
    for call in walk(d.steps):
        if isinstance(call, CallStep):
            shape = _check_call(d, call, locs[call.id], catalog, others, operating, add)
            if shape is not None:
                calls[call.id] = shape

    if any(i.severity == "error" for i in issues):
        return issues

    compiled = compile_definition(
        d,
        {**info_schemas(catalog, loaded), **action_schemas(catalog, d)},
        calls,
        act_requests(catalog, d),
    )
    steps = {s.id: s for s in walk(d.steps)}
    for err in compiled.errors:
        add(_expression_loc(err.key, steps, locs), f"expression: {err.message}")

    for s in queries:
        found = _conformance(loaded, catalog, whitelist, s, locs[s.id], day)
        issues.extend(found)
        if not any(i.severity == "error" for i in found):
            _check_providers_serve(d, s, locs[s.id], catalog, add)
    return issues


def _check_periods(
    d: BpfDefinition,
    queries: list[QueryStep],
    whitelist: WhitelistIndex,
    day: dt.date,
    locs: dict[str, tuple[str | int, ...]],
    add: Add,
) -> None:
    """Warn when the flow's task or an info item it queries (or that item's category) ends
    after ``day``: from then on its linkages are denied and a version in operation stops (the
    review finds it non-conformant that day). One not in force on ``day`` denies every
    linkage, which the whitelist check reports."""
    dated: list[tuple[PeriodKind, str, tuple[str | int, ...]]] = [("task", d.task, ("task",))]
    for s in queries:
        parent = whitelist.parent_of(s.query.info)
        for info in (s.query.info, *((parent,) if parent else ())):
            dated.append(("info", info, (*locs[s.id], "query", "info")))
    seen: set[tuple[str, str]] = set()
    for kind, ident, loc in dated:
        held = whitelist.periods.get((kind, ident))
        if held is None or held.valid_to is None or held.valid_to <= day or (kind, ident) in seen:
            continue
        seen.add((kind, ident))
        what = "task" if kind == "task" else "info item"
        add(
            loc,
            f"{what} {ident!r} ends on {held.valid_to} (in force"
            f" {held.valid_from or 'from the start'} to {held.valid_to}): from that day every"
            " linkage of it is denied, and a version in operation admits no new run",
            "warning",
        )


def _unknown_org(org: str, catalog: Catalog) -> str:
    return f"unknown org {org!r}{did_you_mean(org, catalog.orgs)}"


def _unknown_role(role: str, catalog: Catalog) -> str:
    return f"unknown role {role!r}{did_you_mean(role, catalog.roles)}"


def _expression_loc(
    key: tuple[str | int, ...],
    steps: Mapping[str, AnyStep],
    locs: Mapping[str, tuple[str | int, ...]],
) -> tuple[str | int, ...]:
    """Where in the document the expression a compile error names is."""
    if key[0] == "result":
        return ("result", key[1])
    base = locs.get(str(key[0]), ("steps",))
    step = steps.get(str(key[0]))
    if isinstance(step, QueryStep):
        return (*base, "query", key[1])
    if isinstance(step, BranchStep):
        return (*base, "branch", key[2], "when")
    if isinstance(step, SetStep):
        return (*base, "set", key[2])
    if isinstance(step, CallStep):
        return (*base, "call", "inputs", key[2])
    if isinstance(step, ActStep):
        return (*base, "act", *key[1:])
    if isinstance(step, SleepStep):
        return (*base, "sleep", "until")
    if isinstance(step, FailStep):
        return (*base, "fail", "reason")
    return base


def _plain_texts(node: Any, loc: tuple[str | int, ...]) -> Iterator[tuple[str | int, ...]]:
    """Where the document gives one string for a ``{ja, en}`` text (``title``,
    ``description``)."""
    if isinstance(node, CommentedMap):
        for key, value in node.items():
            if key in ("title", "description") and isinstance(value, str):
                yield (*loc, key)
            else:
                yield from _plain_texts(value, (*loc, key))
    elif isinstance(node, CommentedSeq):
        for i, value in enumerate(node):
            yield from _plain_texts(value, (*loc, i))


def _check_providers_serve(
    d: BpfDefinition,
    step: QueryStep,
    loc: tuple[str | int, ...],
    catalog: Catalog,
    add: Add,
) -> None:
    """Every org the step's provider can name serves its info item (a literal one is checked
    with the references); where only some do, a start naming another is refused."""
    named = named_providers(d, step, catalog)
    info = step.query.info
    if named is None or named.bounded_by is None or not named.orgs:
        return
    serving = [o for o in named.orgs if info in catalog.orgs[o].serves]
    not_serving = [o for o in named.orgs if o not in serving]
    where = (*loc, "query", "provider")
    who = (
        f"the executors ({', '.join(d.owners.executors)})"
        if named.bounded_by == "executor"
        else named.label
    )
    if not serving:
        add(
            where,
            f"no org {who} can name serves info item {info!r} (it can name"
            f" {_names(not_serving)}; {served_by(catalog, info)})",
        )
    elif not_serving:
        add(
            where,
            f"not every org {who} can name serves info item {info!r}: {_names(serving)} serve"
            f" it, {_names(not_serving)} not; a start that names one that does not is refused",
            "warning",
        )


def _check_triggers(
    d: BpfDefinition,
    catalog: Catalog,
    whitelist: WhitelistIndex,
    day: dt.date,
    known: KnownBpfs | None,
    locs: Mapping[str, tuple[str | int, ...]],
    add: Add,
) -> None:
    """A life-event flow can be scanned for; a notification flow is not started twice by one
    event (once itself, once as the child of another flow the event starts)."""
    for i, t in enumerate(d.triggers):
        if isinstance(t, LifeEventTrigger):
            loc: tuple[str | int, ...] = ("triggers", i, "life-event")
            if t.life_event.age is None:
                add(loc, "a life-event rule needs an `age`: the scan asks who reaches it")
            _check_cohort_rule(d, catalog, whitelist, day, loc, add)
            break  # one scan query per definition: its problems are said once
    if known is not None:
        _check_duplicate_starts(d, catalog, known, locs, add)


def _check_cohort_rule(
    d: BpfDefinition,
    catalog: Catalog,
    whitelist: WhitelistIndex,
    day: dt.date,
    loc: tuple[str | int, ...],
    add: Add,
) -> None:
    """A life-event scan asks the executor's own resident register (``resident-cohort``) under
    the flow's task: a row must permit that for every executor, and an executor org must serve
    the item."""
    refused = [
        label
        for ex in d.owners.executors
        for label, roles in executor_roles(catalog, ex).items()
        if not whitelist.decide(
            roles, d.task, roles, COHORT_INFO, day, same_body=True, body=org_of(label)
        ).allowed
    ]
    if refused:
        with_rule = whitelist.tasks_permitting(COHORT_INFO, day)
        add(
            loc,
            f"task {d.task!r} has no cohort rule: a life-event scan asks the executor's own"
            f" resident register who reaches the event ({COHORT_INFO!r}) under the flow's task,"
            f" and no whitelist row in force on {day.isoformat()} lets {', '.join(refused)} do"
            f" that (tasks with a cohort rule: {_names(with_rule)}). Add the rule to"
            " the municipality's own ordinance, whitelist/data/ordinances/local-<org>.yaml (docs/triggers.md, “A cohort rule for a new task”)",
        )
        return
    orgs = sorted({o for e in d.owners.executors for o in catalog.orgs_of(e)})
    serving = [o for o in orgs if COHORT_INFO in catalog.orgs[o].serves]
    if orgs and not serving:
        add(
            loc,
            f"no executor org serves {COHORT_INFO!r} (a register's answer to a scan), so no"
            f" scan can run (executors: {_names(orgs)}; {served_by(catalog, COHORT_INFO)})",
        )
    elif len(serving) < len(orgs):
        add(
            loc,
            f"no scan is scheduled at {_names(set(orgs) - set(serving))}: an org that does not"
            f" serve {COHORT_INFO!r} cannot answer one",
            "warning",
        )


def _sources_meet(a: NotificationRule, b: NotificationRule, catalog: Catalog) -> bool:
    """Whether one published change can start flows of both rules."""
    if a.event != b.event:
        return False
    return a.source == b.source or bool(
        set(catalog.orgs_of(a.source)) & set(catalog.orgs_of(b.source))
    )


def _executors_meet(a: BpfDefinition, b: BpfDefinition, catalog: Catalog) -> bool:
    def orgs(d: BpfDefinition) -> set[str]:
        return {o for e in d.owners.executors for o in catalog.orgs_of(e)}

    return bool(set(a.owners.executors) & set(b.owners.executors) or orgs(a) & orgs(b))


def _reachable(first: str, known: KnownBpfs) -> list[str]:
    """``first`` and every BPF it calls, directly or through its children (latest versions)."""
    seen: list[str] = []
    todo = [first]
    while todo:
        bpf = todo.pop()
        if bpf in seen:
            continue
        seen.append(bpf)
        child = known.latest(bpf)
        if child is not None:
            todo.extend(s.call.bpf for s in walk(child.steps) if isinstance(s, CallStep))
    return seen


def _check_duplicate_starts(
    d: BpfDefinition,
    catalog: Catalog,
    known: KnownBpfs,
    locs: Mapping[str, tuple[str | int, ...]],
    add: Add,
) -> None:
    """One published change must not run a flow twice at one executor: as a flow it starts, and
    as the child of another flow it starts."""
    rules = [
        (i, t.notification) for i, t in enumerate(d.triggers) if isinstance(t, NotificationTrigger)
    ]
    if not rules:
        return
    for step in walk(d.steps):  # what this flow calls, that the same change starts on its own
        if not isinstance(step, CallStep):
            continue
        for bpf in _reachable(step.call.bpf, known):
            child = known.latest(bpf)
            if child is None or bpf == d.bpf or not _executors_meet(d, child, catalog):
                continue
            for _, mine in rules:
                if any(_sources_meet(mine, theirs, catalog) for theirs in child.notifications()):
                    add(
                        (*locs[step.id], "call", "bpf"),
                        f"a {mine.event} notice from {mine.source} starts this flow and {bpf}"
                        f" too, and this step runs {bpf} again as a child: one event, the same"
                        " linkages twice. Keep one: drop this call, or the notification trigger"
                        f" of {bpf}",
                        "warning",
                    )
                    break
    for other in known:  # flows the same change starts, that call this one
        if other.bpf == d.bpf or not _executors_meet(d, other, catalog):
            continue
        calls_me = d.bpf in _reachable(other.bpf, known)[1:]
        if not calls_me:
            continue
        for i, mine in rules:
            if any(_sources_meet(mine, theirs, catalog) for theirs in other.notifications()):
                add(
                    ("triggers", i, "notification"),
                    f"a {mine.event} notice from {mine.source} also starts {other.bpf}, which"
                    " calls this flow as a child: one event, the same linkages twice. Keep one:"
                    f" drop this trigger, or the call in {other.bpf}",
                    "warning",
                )


_LITERAL = re.compile(r"""^\s*(?:'([^'\\]*)'|"([^"\\]*)")\s*$""")


def _check_call(
    d: BpfDefinition,
    step: CallStep,
    loc: tuple[str | int, ...],
    catalog: Catalog,
    known: KnownBpfs | None,
    operating: bool,
    add: Add,
) -> CallShape | None:
    """A child flow must exist, serve its caller's purpose, run where its caller runs, get the
    inputs it needs with the right types, and not call its caller back; returns what the
    expressions of the caller may rely on (its inputs' types, its result's names)."""
    target, pinned = step.call.bpf, step.call.version
    at_bpf = (*loc, "call", "bpf")
    if known is None:
        add(at_bpf, f"call target {target!r} not checked here", "warning")
        return None
    if target == d.bpf:
        add(at_bpf, "a flow cannot call itself: its child flows would never end")
        return None
    if target not in known.ids():
        add(
            at_bpf,
            f"calls {target!r}, which is not registered{did_you_mean(target, known.ids())}",
        )
        return None
    child: BpfDefinition | None
    if pinned is not None:
        child = known.version(target, pinned)
        if child is None:
            add(
                (*loc, "call", "version"),
                f"calls {target} version {pinned}, which is not registered (versions:"
                f" {', '.join(map(str, known.versions(target)))})",
            )
            return None
        if known.state(target, pinned) == "retired":
            add((*loc, "call", "version"), f"calls {target} v{pinned}, which is retired")
            return None
    else:
        child = (known.operating(target) if operating else None) or known.latest(target)
        if child is None:
            add(at_bpf, f"calls {target}, whose every version is retired")
            return None
    if known.registered(target):
        runs = (
            known.state(target, pinned) == "operating"
            if pinned is not None
            else known.operating(target) is not None
        )
        if not runs:
            states = ", ".join(
                f"v{v} {known.state(target, v) or 'not registered'}"
                for v in known.versions(target)
                if pinned is None or v == pinned
            )
            add(
                at_bpf,
                f"calls {target}, which has no operating version ({states}): in operation the"
                " call is refused until it operates",
                "error" if operating else "warning",
            )
    if not catalog.serves_purpose(d.task, child.task):
        add(
            at_bpf,
            f"calls {target!r}, which serves task {child.task!r}: a child flow must serve its"
            f" caller's task {d.task!r} (or one the catalog records {d.task!r} to include),"
            " so data fetched for one purpose does not feed another",
        )
    cannot = sorted(
        {
            o
            for e in d.owners.executors
            for o in catalog.orgs_of(e)
            if not any(catalog.refers_to(c, o) for c in child.owners.executors)
        }
    )
    if cannot:
        add(
            at_bpf,
            f"calls {target}, which {', '.join(cannot)} cannot run (its executors:"
            f" {', '.join(child.owners.executors)}): a child runs at its caller's executor",
        )
    if d.bpf in _reachable(target, known)[1:]:
        add(at_bpf, f"calls {target}, which calls this flow back: child flows would never end")
    _check_call_inputs(step, loc, child, catalog, add)
    return CallShape(
        bpf=target,
        inputs={name: spec.type for name, spec in child.inputs.items()},
        result=tuple(child.result),
    )


def _check_call_inputs(
    step: CallStep,
    loc: tuple[str | int, ...],
    child: BpfDefinition,
    catalog: Catalog,
    add: Add,
) -> None:
    given = step.call.inputs
    declared = ", ".join(f"{n} ({s.type})" for n, s in child.inputs.items()) or "none"
    for name in given:
        if name not in child.inputs:
            add(
                (*loc, "call", "inputs", name),
                f"{child.bpf} has no input {name!r}{did_you_mean(name, child.inputs)};"
                f" its inputs: {declared}",
            )
    for name, spec in child.inputs.items():
        if spec.required and name not in given:
            role = f", role {spec.role}" if spec.role else ""
            add(
                (*loc, "call", "inputs"),
                f"calls {child.bpf} without its required input {name!r} ({spec.type}{role})",
            )
        literal = _LITERAL.match(given.get(name, ""))
        if spec.type != "org" or literal is None:
            continue
        org = literal.group(1) if literal.group(1) is not None else literal.group(2)
        if org not in catalog.orgs:
            add((*loc, "call", "inputs", name), _unknown_org(org, catalog))
        elif spec.role is not None and spec.role not in catalog.orgs[org].roles:
            add(
                (*loc, "call", "inputs", name),
                f"{org} does not hold role {spec.role}, which {child.bpf}'s input {name}"
                f" requires (orgs that do: {_names(catalog.orgs_of(role_ref(spec.role)))})",
            )


def _conformance(
    loaded: LoadedBpf,
    catalog: Catalog,
    whitelist: WhitelistIndex,
    step: QueryStep,
    loc: tuple[str | int, ...],
    day: dt.date,
) -> list[Issue]:
    d = loaded.definition
    out: list[Issue] = []

    def add(message: str, severity: str = "error", field: str = "provider") -> None:
        full = (*loc, "query", field)
        out.append(
            Issue(
                file=loaded.source_name,
                line=loaded.line_of(full),
                path=format_path(full),
                message=message,
                severity=severity,
            )
        )

    expr = embedded(step.query.provider)
    providers: dict[str, frozenset[str]] | None
    if expr is None:
        providers = {step.query.provider: catalog.org_roles(step.query.provider)}
    elif expr == "executor":
        providers = None  # the executor's own records: provider roles = the executor's roles
    else:
        name = expr.removeprefix("inputs.") if expr.startswith("inputs.") else None
        spec = d.inputs.get(name) if name else None
        if spec is not None and spec.type == "org" and spec.role is not None:
            providers = {role_ref(spec.role): frozenset({spec.role})}
        else:
            add(
                "provider is chosen at run time and its type admits any org: "
                "the whitelist is checked when the linkage runs (constrain the input with "
                "`role:` to check it now)",
                severity="warning",
            )
            return out
    for ex in d.owners.executors:
        for label, req_roles in executor_roles(catalog, ex).items():
            own = {f"{label} itself": req_roles}
            for prov_label, prov_roles in (providers if providers is not None else own).items():
                # One body with itself: the executor's own records, or a literal provider that
                # is the executing org (never a role, which stands for many orgs).
                same_body = providers is None or (role_of(label) is None and prov_label == label)
                decision = whitelist.decide(
                    req_roles,
                    d.task,
                    prov_roles,
                    step.query.info,
                    day,
                    same_body=same_body,
                    body=org_of(label) if same_body else None,
                    sub_task=step.query.sub_task,
                )
                if not decision.allowed:
                    hint = permitting_hint(whitelist, d.task, step.query.info, day)
                    add(
                        f"not permitted by the whitelist on {day.isoformat()}: executor {label} "
                        f"asking {prov_label} for {step.query.info!r} under task {d.task!r}: "
                        f"{decision.reason}; {hint}"
                    )
                elif providers is None and (role := role_of(label)) is not None:
                    _check_own_ordinances(d, step, catalog, whitelist, day, role, add)
    return out


def _check_own_ordinances(
    d: BpfDefinition,
    step: QueryStep,
    catalog: Catalog,
    whitelist: WhitelistIndex,
    day: dt.date,
    role: str,
    add: Add,
) -> None:
    """For an executor role asking its own records under municipalities' own ordinances
    (番号法第9条第2項): warn of the orgs of the role whose own ordinance permits it not — each
    run is decided for its own org, so theirs would be denied."""
    roles = frozenset({role})
    lacking = sorted(
        o.id
        for o in catalog.orgs_with_role(role)
        if o.kind != "private"
        and not whitelist.decide(
            roles,
            d.task,
            roles,
            step.query.info,
            day,
            same_body=True,
            body=o.id,
            sub_task=step.query.sub_task,
        ).allowed
    )
    if lacking and len(lacking) < len(catalog.orgs_with_role(role)):
        add(
            f"{', '.join(lacking)} (role {role}) {'has' if len(lacking) == 1 else 'have'} no"
            f" row of its own ordinance (番号法第9条第2項) permitting {step.query.info!r} from"
            f" its own records under task {d.task!r} on {day.isoformat()}: its runs are denied"
            " at this step",
            severity="warning",
        )
