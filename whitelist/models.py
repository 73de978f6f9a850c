"""Typed models of the catalog and the whitelist rows."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

ID_PATTERN = r"^[a-z0-9]+(-[a-z0-9]+)*$"


class _Named(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(pattern=ID_PATTERN)
    ja: str
    en: str


class Role(_Named):
    """A class of organisations named by the law (e.g. 市町村長, every municipality's mayor)."""


class Task(_Named):
    """An administrative task (事務): the legal purpose every query names."""

    includes: list[str] = Field(
        default_factory=list,
        description="tasks this one encompasses (a one-stop procedure whose legal basis covers"
        " them): a flow of this task may call a child flow of those; none by default",
    )


class InfoItem(_Named):
    """A category of specific personal information (特定個人情報).

    ``schema_name`` names the pydantic model of its payload in :mod:`whitelist.payloads`; ``ja``
    is the statutory definition the category comes from.
    """

    schema_name: str = "GenericRecord"


class Action(_Named):
    """A step a partner org carries out at a flow's request (an ``act`` step): stop a payment,
    take note of a move. ``request`` names the payload model of exactly what may be sent to the
    partner, ``result`` the model of the receipt it signs (both in :mod:`whitelist.payloads`)."""

    request: str
    result: str = "ActionReceipt"


class Org(BaseModel):
    """A concrete organisation: it holds one or more roles and may serve info items."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(pattern=ID_PATTERN)
    ja: str
    en: str
    roles: tuple[str, ...]
    serves: tuple[str, ...] = ()
    acts: tuple[str, ...] = Field(default=(), description="actions it carries out (act steps)")
    kind: Literal["public", "private"] = "public"  # private: a partner in act steps only


# Whom a row lets exchange: two bodies, or one body with itself.
Scope = Literal["between-bodies", "within-body", "consent"]


class WhitelistRow(BaseModel):
    """One structured whitelist entry.

    A row of the statute that names several roles or info categories becomes several entries that
    share ``item`` and ``legal_text``. ``valid_to`` is exclusive; ``None`` means open-ended.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    source: str
    item: str
    requester_role: str
    task: str
    provider_role: str
    info: str
    legal_text: str
    valid_from: dt.date
    valid_to: dt.date | None = None
    scope: Scope = Field(
        default="between-bodies",
        description="between-bodies: a linkage from one body to another (Annex Table 2);"
        " within-body: a body's use of its own records under its own ordinance (番号法第9条第2項),"
        " which permits nothing between two bodies; consent: an act a partner carries out on"
        " the citizen's own recorded consent (whitelist/data/partners), permitted only with it",
    )

    def valid_at(self, day: dt.date) -> bool:
        """Whether the row is in force on ``day``."""
        return self.valid_from <= day and (self.valid_to is None or day < self.valid_to)

    @property
    def legal_reference(self) -> str:
        """Short citation: the law and the item number of the table."""
        return self.item


ROLE_PREFIX = "role:"

# The info item a life-event scan asks the executor's own resident register for (who reaches the
# event); a task has a *cohort rule* when a whitelist row permits it under that task.
COHORT_INFO = "resident-cohort"


def role_of(ref: str) -> str | None:
    """The role of a party reference ``role:<id>``; None when ``ref`` names an org."""
    return ref[len(ROLE_PREFIX) :] if ref.startswith(ROLE_PREFIX) else None


def role_ref(role: str) -> str:
    """The party reference for every org that holds ``role``."""
    return f"{ROLE_PREFIX}{role}"


class Catalog(BaseModel):
    """Everything the whitelist and the BPF validator refer to, by id."""

    model_config = ConfigDict(frozen=True)

    roles: dict[str, Role]
    tasks: dict[str, Task]
    info_items: dict[str, InfoItem]
    orgs: dict[str, Org]
    actions: dict[str, Action] = Field(default_factory=dict)

    def org_roles(self, org: str) -> frozenset[str]:
        """The roles an org holds; empty for an unknown org."""
        found = self.orgs.get(org)
        return frozenset(found.roles) if found else frozenset()

    def orgs_with_role(self, role: str) -> list[Org]:
        """Every org that holds ``role``."""
        return [o for o in self.orgs.values() if role in o.roles]

    def is_private(self, org: str) -> bool:
        """Whether ``org`` is a private-sector partner (it takes part through act steps only)."""
        found = self.orgs.get(org)
        return found is not None and found.kind == "private"

    def actors_of(self, action: str) -> list[str]:
        """Every org that carries out ``action`` from its own worker."""
        return sorted(o.id for o in self.orgs.values() if action in o.acts)

    def servers_of(self, info: str) -> list[str]:
        """Every org that serves info item ``info`` from its own worker."""
        return sorted(o.id for o in self.orgs.values() if info in o.serves)

    def serves_purpose(self, parent_task: str, child_task: str) -> bool:
        """Whether a child flow of ``child_task`` may serve a parent of ``parent_task``: the
        same task, or one the parent's task is recorded to encompass."""
        if parent_task == child_task:
            return True
        parent = self.tasks.get(parent_task)
        return parent is not None and child_task in parent.includes

    def refers_to(self, ref: str, org: str) -> bool:
        """Whether ``org`` is the party ``ref`` names: that org, or an org holding its role."""
        role = role_of(ref)
        return org == ref if role is None else role in self.org_roles(org)

    def orgs_of(self, ref: str) -> list[str]:
        """The known orgs ``ref`` (an org id or ``role:<id>``) stands for."""
        role = role_of(ref)
        if role is None:
            return [ref] if ref in self.orgs else []
        return sorted(o.id for o in self.orgs_with_role(role))
