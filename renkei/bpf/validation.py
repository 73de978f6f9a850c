"""Static validation of a BPF: references, expressions, and whitelist conformance.

Runs before a definition is registered and before any flow of it can start:

- references: the task, the definer, every executor, every info item and literal provider exist;
- expressions: every CEL expression compiles and type-checks in the scope of its position;
- whitelist conformance: every ``query`` step, for every executor that may run it, matches a
  whitelist row valid on the check date. A provider given by an expression is checked for every
  org its type admits (an ``org`` input constrained by ``role``); an unconstrained one is flagged
  as needing the runtime check, which the linkage interceptor always makes anyway.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping

from renkei.bpf.cel.compiler import compile_definition
from renkei.bpf.cel.types import embedded
from renkei.bpf.loader import Issue, LoadedBpf
from renkei.bpf.models import (
    RESERVED,
    AnyStep,
    BpfDefinition,
    BranchStep,
    CallStep,
    ParallelStep,
    QueryStep,
    WhenArm,
    walk,
)
from whitelist.decide import WhitelistIndex
from whitelist.models import Catalog, role_of, role_ref


def executor_roles(catalog: Catalog, executor: str) -> dict[str, frozenset[str]]:
    """The requesters an executor entry stands for: ``{label: roles}``."""
    role = role_of(executor)
    if role is not None:
        return {executor: frozenset({role})}
    return {executor: catalog.org_roles(executor)}


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
    known: Mapping[str, BpfDefinition] | None = None,
) -> list[Issue]:
    """Every problem (errors) and note (warnings) about one parsed definition.

    ``known`` holds the definitions a ``call`` step may name (the registry's, or the files
    validated together), by BPF id; without it call targets are not checked.
    """
    d = loaded.definition
    day = at or dt.date.today()
    issues: list[Issue] = []
    locs = _step_locs(d.steps, ("steps",))

    def add(loc: tuple[str | int, ...], message: str, severity: str = "error") -> None:
        from renkei.bpf.loader import format_path

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
        add(("task",), f"unknown task {d.task!r}")
    if d.owners.definer not in catalog.orgs:
        add(("owners", "definer"), f"unknown org {d.owners.definer!r}")
    for i, ex in enumerate(d.owners.executors):
        role = role_of(ex)
        if role is not None:
            if role not in catalog.roles:
                add(("owners", "executors", i), f"unknown role {role!r}")
        elif ex not in catalog.orgs:
            add(("owners", "executors", i), f"unknown org {ex!r}")
    for name, spec in d.inputs.items():
        if name in RESERVED:
            add(("inputs", name), f"{name!r} is a reserved name")
        if spec.role is not None and spec.role not in catalog.roles:
            add(("inputs", name, "role"), f"unknown role {spec.role!r}")
    for dup in _duplicate_ids(d.steps):
        add(locs.get(dup, ("steps",)), f"duplicate step id {dup!r}")
    collide = set(d.inputs) & {s.id for s in walk(d.steps)}
    for name in sorted(collide):
        add(locs[name], f"step id {name!r} is also an input name")

    queries = [s for s in walk(d.steps) if isinstance(s, QueryStep)]
    for s in queries:
        step_loc = locs[s.id]
        if s.query.info not in catalog.info_items:
            add((*step_loc, "query", "info"), f"unknown info item {s.query.info!r}")
        if embedded(s.query.provider) is None and s.query.provider not in catalog.orgs:
            add((*step_loc, "query", "provider"), f"unknown org {s.query.provider!r}")
        elif embedded(s.query.provider) is None:
            org = catalog.orgs[s.query.provider]
            if s.query.info in catalog.info_items and s.query.info not in org.serves:
                add(
                    (*step_loc, "query", "provider"),
                    f"{org.id} does not serve info item {s.query.info!r}",
                )

    for call in walk(d.steps):
        if isinstance(call, CallStep):
            _check_call(d, call, locs[call.id], catalog, known, add)

    if any(i.severity == "error" for i in issues):
        return issues

    compiled = compile_definition(d, info_schemas(catalog, loaded))
    for err in compiled.errors:
        key = err.key
        loc: tuple[str | int, ...]
        if key[0] == "result":
            loc = ("result", key[1])
        else:
            base = locs.get(str(key[0]), ("steps",))
            step = next(s for s in walk(d.steps) if s.id == key[0])
            if isinstance(step, QueryStep):
                loc = (*base, "query", key[1])
            elif key[1] == "when":
                loc = (*base, "branch", key[2], "when")
            elif key[1] == "set":
                loc = (*base, "set", key[2])
            else:
                loc = (*base, "fail", "reason")
        add(loc, f"expression: {err.message}")

    for s in queries:
        issues.extend(_conformance(loaded, catalog, whitelist, s, locs[s.id], day))
    return issues


def _check_call(
    d: BpfDefinition,
    step: CallStep,
    loc: tuple[str | int, ...],
    catalog: Catalog,
    known: Mapping[str, BpfDefinition] | None,
    add: Callable[..., None],
) -> None:
    """A child flow must exist and serve its caller's purpose."""
    target = step.call.bpf
    if known is None:
        add((*loc, "call", "bpf"), f"call target {target!r} not checked here", "warning")
        return
    child = known.get(target)
    if child is None:
        add((*loc, "call", "bpf"), f"calls {target!r}, which is not registered")
        return
    if not catalog.serves_purpose(d.task, child.task):
        add(
            (*loc, "call", "bpf"),
            f"calls {target!r}, which serves task {child.task!r}: a child flow must serve its"
            f" caller's task {d.task!r} (or one the catalog records {d.task!r} to include),"
            " so data fetched for one purpose does not feed another",
        )


def _conformance(
    loaded: LoadedBpf,
    catalog: Catalog,
    whitelist: WhitelistIndex,
    step: QueryStep,
    loc: tuple[str | int, ...],
    day: dt.date,
) -> list[Issue]:
    from renkei.bpf.loader import format_path

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
                    req_roles, d.task, prov_roles, step.query.info, day, same_body=same_body
                )
                if not decision.allowed:
                    add(
                        f"not permitted by the whitelist on {day.isoformat()}: executor {label} "
                        f"asking {prov_label} for {step.query.info!r} under task {d.task!r}: "
                        f"{decision.reason}"
                    )
    return out
