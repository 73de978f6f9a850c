"""What a drawing says about a query: who provides it, and under which legal references.

The provider is a literal org, the executor's own records, an input naming the org, or another
expression; the legal references are those of the whitelist rows that permit the query for
any of the definition's executors, from any org that could be its provider.

Domain code: imports no ``temporalio``.
"""

from __future__ import annotations

import datetime as dt
import re

from renkei.bpf.cel.types import embedded
from renkei.bpf.models import ActStep, BpfDefinition, QueryStep
from whitelist.decide import WhitelistIndex
from whitelist.models import Catalog, role_of


def legal_references(
    d: BpfDefinition, q: QueryStep, catalog: Catalog, index: WhitelistIndex, at: dt.date
) -> list[str]:
    """The legal references under which the whitelist permits this query, for any executor.

    Args:
        d: The definition the query is a step of.
        q: The query step.
        catalog: The organisations (their roles, the info items each serves).
        index: The whitelist.
        at: The day the whitelist is read for.

    Returns:
        The references, sorted; empty if no row permits the query.
    """
    requesters: list[set[str]] = []
    for e in d.owners.executors:
        role = role_of(e)
        requesters.append({role} if role is not None else set(catalog.org_roles(e)))
    expr = embedded(q.query.provider)
    if expr is None:
        providers = [q.query.provider]
    elif expr == "executor":
        providers = [o.id for o in catalog.orgs.values() if q.query.info in o.serves]
    else:
        m = re.fullmatch(r"inputs\.(\w+)", expr)
        spec = d.inputs.get(m.group(1)) if m else None
        providers = [
            o.id
            for o in catalog.orgs.values()
            if (spec is None or spec.role is None or spec.role in o.roles)
            and q.query.info in o.serves
        ] or list(catalog.orgs)
    found: set[str] = set()
    for roles in requesters:
        for org in providers:
            if org not in catalog.orgs:
                continue
            # The executor's own records: one body with itself (a 9(2) row may apply, of that
            # body's own ordinance: each body's is listed).
            decision = index.decide(
                roles,
                d.task,
                catalog.org_roles(org),
                q.query.info,
                at,
                same_body=expr == "executor",
                body=org if expr == "executor" else None,
                sub_task=q.query.sub_task,
            )
            if decision.allowed:
                found.add(decision.legal_reference)
    return sorted(found)


def act_references(
    d: BpfDefinition, a: ActStep, catalog: Catalog, index: WhitelistIndex, at: dt.date
) -> list[str]:
    """The legal references of the partner rows under which an act may run, for any executor
    (a row of scope consent marked so: it permits the act only on the citizen's consent).

    Args:
        d: The definition the act is a step of.
        a: The act step.
        catalog: The organisations.
        index: The whitelist.
        at: The day the whitelist is read for.

    Returns:
        The references, sorted; empty if no row permits the act.
    """
    partner = a.act.partner
    roles = catalog.org_roles(partner) if embedded(partner) is None else None
    return sorted(
        {
            r.legal_reference + (" (本人同意 / consent)" if r.scope == "consent" else "")
            for r in index.permitting(d.task, a.act.action, at)
            if roles is None or r.provider_role in roles
        }
    )


def partner_label(a: ActStep) -> str:
    """How a drawing names an act's partner: the org, or the expression giving it."""
    expr = embedded(a.act.partner)
    if expr is None:
        return a.act.partner
    m = re.fullmatch(r"inputs\.(\w+)", expr)
    return f"(input {m.group(1)})" if m else f"(${{{expr}}})"


def provider_label(d: BpfDefinition, q: QueryStep) -> str:
    """How a drawing names a query's provider.

    Args:
        d: The definition the query is a step of.
        q: The query step.

    Returns:
        The org for a literal provider, ``(its own records)`` for the executor,
        ``(input NAME)`` for an input, else the expression itself in ``${…}``.
    """
    expr = embedded(q.query.provider)
    if expr is None:
        return q.query.provider
    if expr == "executor":
        return "(its own records)"
    m = re.fullmatch(r"inputs\.(\w+)", expr)
    return f"(input {m.group(1)})" if m else f"(${{{expr}}})"
