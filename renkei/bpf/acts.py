"""Validation of ``act`` steps: a partner org asked to carry out an action of its own.

An act is checked like a query, with what is its own:

- the action exists in the catalog and the partner (a literal org) carries it out;
- ``send`` names only fields of the action's request, every required one, each with an
  expression of the field's type (the expressions are type-checked by the compiler);
- a private partner (an org of kind ``private``), or a row that permits the act only on consent,
  needs ``consent``: an earlier ``wait`` step ``by: citizen`` with a boolean field ``agree``;
- the whitelist: a partner row (``whitelist/data/partners``) permits the executor's roles to ask
  the partner's roles for the action under the definition's task.

A private org is never an executor nor a query's provider: it takes part through acts only.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping

from renkei.bpf.cel.types import embedded
from renkei.bpf.models import ActStep, BpfDefinition, QueryStep, WaitStep, did_you_mean, walk
from whitelist.decide import WhitelistIndex, permitting_hint
from whitelist.models import Catalog, role_of
from whitelist.payloads import SCHEMAS, GenericRecord, field_kinds

Add = Callable[..., None]
CONSENT_FIELD = "agree"


def act_requests(catalog: Catalog, d: BpfDefinition) -> dict[str, dict[str, str]]:
    """``{action: {field: type}}`` of every known action the definition's act steps ask for."""
    out: dict[str, dict[str, str]] = {}
    for s in walk(d.steps):
        if isinstance(s, ActStep) and s.act.action in catalog.actions:
            model = SCHEMAS.get(catalog.actions[s.act.action].request, GenericRecord)
            out[s.act.action] = {n: k for n, (k, _) in field_kinds(model).items()}
    return out


def action_schemas(catalog: Catalog, d: BpfDefinition) -> dict[str, str]:
    """The receipt schema of every known action the definition's act steps ask for."""
    return {
        s.act.action: catalog.actions[s.act.action].result
        for s in walk(d.steps)
        if isinstance(s, ActStep) and s.act.action in catalog.actions
    }


def check_private(
    d: BpfDefinition, catalog: Catalog, locs: Mapping[str, tuple[str | int, ...]], add: Add
) -> None:
    """A private org runs no flow and answers no query."""
    for i, ex in enumerate(d.owners.executors):
        if catalog.is_private(ex):
            add(
                ("owners", "executors", i),
                f"{ex} is a private org: it takes part only through act steps, never runs a flow",
            )
    for s in walk(d.steps):
        if isinstance(s, QueryStep) and catalog.is_private(s.query.provider):
            add(
                (*locs[s.id], "query", "provider"),
                f"{s.query.provider} is a private org: it answers no query (it takes part only"
                " through act steps, with what they send)",
            )


def check_acts(
    d: BpfDefinition,
    catalog: Catalog,
    whitelist: WhitelistIndex,
    day: dt.date,
    locs: Mapping[str, tuple[str | int, ...]],
    add: Add,
) -> None:
    order = [s.id for s in walk(d.steps)]
    steps = {s.id: s for s in walk(d.steps)}
    for s in walk(d.steps):
        if not isinstance(s, ActStep):
            continue
        loc = (*locs[s.id], "act")
        a = s.act
        action = catalog.actions.get(a.action)
        if action is None:
            add(
                (*loc, "action"),
                f"unknown action {a.action!r}{did_you_mean(a.action, catalog.actions)}",
            )
            continue
        literal = embedded(a.partner) is None
        if literal and role_of(a.partner) is not None:
            add(
                (*loc, "partner"),
                "a partner is one org (its id, or an expression giving it), not a role",
            )
            continue
        if literal and a.partner not in catalog.orgs:
            add(
                (*loc, "partner"),
                f"unknown org {a.partner!r}{did_you_mean(a.partner, catalog.orgs)}",
            )
            continue
        if literal and a.action not in catalog.orgs[a.partner].acts:
            doers = catalog.actors_of(a.action)
            add(
                (*loc, "partner"),
                f"{a.partner} does not carry out action {a.action!r}"
                f" ({'carried out by ' + ', '.join(doers) if doers else 'no org carries it out'})",
            )
            continue
        request = SCHEMAS.get(action.request, GenericRecord)
        kinds = field_kinds(request)
        for name in a.send:
            if name not in kinds:
                add(
                    (*loc, "send", name),
                    f"{a.action} does not take field {name!r}{did_you_mean(name, kinds)}: only"
                    f" what the action needs is sent ({', '.join(kinds) or 'nothing'})",
                )
        for name, (kind, required) in kinds.items():
            if required and name not in a.send:
                add((*loc, "send"), f"{a.action} needs field {name!r} ({kind}); send it")
        private = literal and catalog.is_private(a.partner)
        consent_ok = _check_consent(s, order, steps, loc, add)
        needs = private or _consent_rows(d, s, catalog, whitelist, day)
        if needs and a.consent is None:
            who = f"{a.partner} is a private org" if private else "its legal basis is consent"
            add(
                (*loc, "consent"),
                f"{who}: name the earlier wait step (by: citizen, a boolean field"
                f" {CONSENT_FIELD!r}) where the citizen consents to this act",
            )
        if literal and (consent_ok or a.consent is None):
            _conformance(d, s, catalog, whitelist, day, loc, add)
        elif not literal:
            add(
                (*loc, "partner"),
                "the partner is chosen at run time: whether it carries out the action and a"
                " partner row permits the act are checked when the act runs",
                "warning",
            )


def _check_consent(
    s: ActStep,
    order: list[str],
    steps: Mapping[str, object],
    loc: tuple[str | int, ...],
    add: Add,
) -> bool:
    name = s.act.consent
    if name is None:
        return False
    found = steps.get(name)
    if not isinstance(found, WaitStep) or order.index(name) > order.index(s.id):
        add((*loc, "consent"), f"consent names {name!r}, which is not an earlier wait step")
        return False
    if found.wait.by != "citizen":
        add(
            (*loc, "consent"),
            f"wait step {name} must say `by: citizen`: only the citizen's own answer, attested by"
            " their portal session, is their consent",
        )
        return False
    agree = found.wait.fields.get(CONSENT_FIELD)
    if agree is None or agree.type != "boolean":
        add(
            (*loc, "consent"),
            f"wait step {name} needs a boolean field {CONSENT_FIELD!r}: the citizen's yes or no",
        )
        return False
    return True


def _consent_rows(
    d: BpfDefinition, s: ActStep, catalog: Catalog, whitelist: WhitelistIndex, day: dt.date
) -> bool:
    """Whether a row in force for the act's task and action permits it only on consent."""
    return any(r.scope == "consent" for r in whitelist.permitting(d.task, s.act.action, day))


def _conformance(
    d: BpfDefinition,
    s: ActStep,
    catalog: Catalog,
    whitelist: WhitelistIndex,
    day: dt.date,
    loc: tuple[str | int, ...],
    add: Add,
) -> None:
    partner_roles = catalog.org_roles(s.act.partner)
    for ex in d.owners.executors:
        role = role_of(ex)
        roles = frozenset({role}) if role is not None else catalog.org_roles(ex)
        decision = whitelist.decide(
            roles,
            d.task,
            partner_roles,
            s.act.action,
            day,
            consented=s.act.consent is not None,
        )
        if not decision.allowed:
            hint = permitting_hint(whitelist, d.task, s.act.action, day)
            add(
                (*loc, "partner"),
                f"not permitted on {day.isoformat()}: executor {ex} asking {s.act.partner} to"
                f" carry out {s.act.action!r} under task {d.task!r}: {decision.reason}; {hint}",
            )
