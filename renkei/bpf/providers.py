"""Who a ``query`` step asks, and whether they serve what it asks for.

A step's provider is a literal org, the executor itself (``${ executor }``), an ``org`` input
(``${ inputs.x }``), or another expression. Where the definition bounds the orgs it can name — a
literal, the executor (the orgs its executors stand for), an ``org`` input with a ``role`` —
validation checks before anything runs that they serve the step's info item
(:func:`named_providers`); where only some do, a start that names one that does not is refused
with its reason (:func:`unserved_at_start`) instead of its linkage failing in operation with
"does not implement". An input without a role may name any org: the whitelist decides it when the
linkage runs, and the denial is recorded.

Domain code: imports no ``temporalio``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from renkei.bpf.cel.types import embedded
from renkei.bpf.models import BpfDefinition, QueryStep, walk
from whitelist.models import Catalog, role_ref

_INPUT = re.compile(r"^inputs\.([A-Za-z_][A-Za-z0-9_]*)$")


def provider_input(provider: str) -> str | None:
    """The input a provider names, for ``${ inputs.x }`` exactly; ``None`` otherwise."""
    expr = embedded(provider)
    m = _INPUT.match(expr) if expr is not None else None
    return m.group(1) if m else None


def is_executor(provider: str) -> bool:
    """Whether a provider is the executor itself (``${ executor }``: its own records)."""
    return embedded(provider) == "executor"


@dataclass(frozen=True)
class NamedProviders:
    """The orgs a step's provider can name, and how the definition names them.

    Attributes:
        label: The provider as the definition gives it (``jps``, ``${ executor }``, an input
            with its role).
        orgs: Every known org it can name.
        bounded_by: ``role:<id>`` for an input constrained by a role, ``executor`` for the
            executor, ``None`` for a literal org.
    """

    label: str
    orgs: list[str]
    bounded_by: str | None = None


def named_providers(d: BpfDefinition, step: QueryStep, catalog: Catalog) -> NamedProviders | None:
    """The orgs ``step``'s provider can name; ``None`` if the definition does not bound them."""
    provider = step.query.provider
    if embedded(provider) is None:
        return NamedProviders(provider, [provider] if provider in catalog.orgs else [])
    if is_executor(provider):
        orgs = sorted({o for e in d.owners.executors for o in catalog.orgs_of(e)})
        return NamedProviders(provider.strip(), orgs, "executor")
    name = provider_input(provider)
    spec = d.inputs.get(name) if name else None
    if spec is None or spec.type != "org" or spec.role is None:
        return None
    ref = role_ref(spec.role)
    return NamedProviders(f"inputs.{name} ({ref})", catalog.orgs_of(ref), ref)


def served_by(catalog: Catalog, info: str) -> str:
    """Which orgs serve ``info``, as a clause for a message."""
    servers = catalog.servers_of(info)
    return f"served by {', '.join(servers)}" if servers else "no org in the catalog serves it"


@dataclass(frozen=True)
class Unserved:
    """A provider a start names that does not serve what a step asks of it.

    Attributes:
        input: The input that names it; ``None`` when it is the executor itself.
        message: Why, naming the org, the item, the step and the orgs that do serve it.
    """

    input: str | None
    message: str


def unserved_at_start(
    d: BpfDefinition, executor: str, inputs: Mapping[str, Any], catalog: Catalog
) -> list[Unserved]:
    """Providers bounded by the definition (the executor, a role-constrained ``org`` input) that
    this start names and that do not serve the item a step asks of them."""
    out: dict[tuple[str | None, str], Unserved] = {}
    for step in walk(d.steps):
        if not isinstance(step, QueryStep):
            continue
        info = step.query.info
        name = provider_input(step.query.provider)
        spec = d.inputs.get(name) if name else None
        org: Any
        if is_executor(step.query.provider):
            via, org, who = None, executor, f"the executor {executor}"
        elif spec is not None and spec.type == "org" and spec.role is not None:
            via, org = name, inputs.get(name or "")
            who = f"{name}: {org}"
        else:
            continue
        if not isinstance(org, str) or org not in catalog.orgs or info in catalog.orgs[org].serves:
            continue
        out.setdefault(
            (via, info),
            Unserved(
                input=via,
                message=f"{who} does not serve info item {info!r}, which step {step.id} asks"
                f" of it ({served_by(catalog, info)})",
            ),
        )
    return list(out.values())
