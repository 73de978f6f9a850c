"""Typed models of the catalog and the whitelist rows."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

ID_PATTERN = r"^[a-z0-9]+(-[a-z0-9]+)*$"


class _Named(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(pattern=ID_PATTERN)
    ja: str
    en: str


class Role(_Named):
    """A class of organisations named by the law (e.g. 市町村長, every municipality's mayor)."""


class _Dated(_Named):
    """A catalog entry in force over a period (``valid_to`` exclusive; none: open)."""

    valid_from: dt.date | None = Field(
        default=None, description="the first day it is in force (none: since before any linkage)"
    )
    valid_to: dt.date | None = Field(
        default=None, description="the day it is no longer in force (exclusive; none: open)"
    )

    @model_validator(mode="after")
    def _ordered(self) -> _Dated:
        if self.valid_from and self.valid_to and self.valid_to <= self.valid_from:
            raise ValueError(f"valid_to {self.valid_to} is not after valid_from {self.valid_from}")
        return self

    def held(self) -> Held | None:
        """Its period, when it has one."""
        if self.valid_from is None and self.valid_to is None:
            return None
        return Held(id=self.id, valid_from=self.valid_from, valid_to=self.valid_to)


class Task(_Dated):
    """An administrative task (事務): the legal purpose every query names."""

    includes: list[str] = Field(
        default_factory=list,
        description="tasks this one encompasses (a one-stop procedure whose legal basis covers"
        " them): a flow of this task may call a child flow of those; none by default",
    )


class InfoItem(_Dated):
    """A category of specific personal information (特定個人情報).

    ``schema_name`` names the pydantic model of its payload in :mod:`whitelist.payloads`; ``ja``
    is the statutory definition the category comes from.
    """

    schema_name: str = "GenericRecord"
    parent: str | None = Field(
        default=None,
        description="for an ordinance-level item (主務省令で定める情報), the statutory category it"
        " falls under: a row of the whole category permits it too",
    )


# What kind of body an org is. ``private`` is reserved for later partner steps (a business that
# helps an applicant): a private org is never a whitelist requester nor provider.
OrgKind = Literal["national", "prefectural", "municipal", "public-body", "private"]
ORG_KINDS: tuple[OrgKind, ...] = ("national", "prefectural", "municipal", "public-body", "private")

# Onboarding: registered -> contract-tested -> certified -> active -> suspended / retired. Only an
# active org may ask or answer.
OrgStatus = Literal["registered", "contract-tested", "certified", "active", "suspended", "retired"]
ORG_STATUSES: tuple[OrgStatus, ...] = (
    "registered",
    "contract-tested",
    "certified",
    "active",
    "suspended",
    "retired",
)


class Held(BaseModel):
    """A role an org holds, or an info item it serves, over a period (``valid_to`` exclusive,
    ``None`` open; ``valid_from`` ``None``: since before any linkage)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(pattern=ID_PATTERN)
    valid_from: dt.date | None = None
    valid_to: dt.date | None = None

    def valid_at(self, day: dt.date) -> bool:
        return (self.valid_from is None or self.valid_from <= day) and (
            self.valid_to is None or day < self.valid_to
        )


class Acting(Held):
    """An action an org carries out (``id``: an action of ``actions.yaml``), on a ``basis``
    — the provision, contract or terms under which it does — over a period."""

    basis: str = Field(min_length=1, max_length=300, pattern=r"^[^\r\n]+$")


class Action(_Named):
    """A step a partner org carries out at a flow's request (an ``act`` step): stop a payment,
    take note of a move. ``request`` names the payload model of exactly what may be sent to the
    partner, ``result`` the model of the receipt it signs (both in :mod:`whitelist.payloads`)."""

    request: str
    result: str = "ActionReceipt"


class Org(BaseModel):
    """A concrete organisation: it holds one or more roles and may serve info items.

    ``roles`` and ``serves`` are what it holds today; ``held`` and ``serving``, when the org
    registry gives them, the same with their periods (a decision counts the roles held on the
    linkage's date, see :meth:`roles_at`).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(pattern=ID_PATTERN)
    ja: str
    en: str
    kind: OrgKind = "public-body"
    roles: tuple[str, ...]
    serves: tuple[str, ...] = ()
    status: OrgStatus = "active"
    held: tuple[Held, ...] = ()
    serving: tuple[Held, ...] = ()
    successor: str | None = None
    merged_on: dt.date | None = None

    def roles_at(self, day: dt.date | None) -> frozenset[str]:
        """The roles held on ``day`` (today's when ``day`` is None or no periods are known)."""
        if day is None or not self.held:
            return frozenset(self.roles)
        return frozenset(h.id for h in self.held if h.valid_at(day))

    acts: tuple[str, ...] = Field(
        default=(), description="actions it carries out today (act steps)"
    )
    acting: tuple[Acting, ...] = Field(
        default=(), description="the actions it carries out, each with its basis and period"
    )

    @model_validator(mode="before")
    @classmethod
    def _acts_from_acting(cls, data: Any) -> Any:
        """In ``orgs.yaml`` an org lists ``acting`` (each action with its basis) only: its
        ``acts`` are those, open-ended there."""
        if isinstance(data, dict) and "acts" not in data and data.get("acting"):
            data = {
                **data,
                "acts": tuple(
                    a["id"] if isinstance(a, dict) else a.id
                    for a in data["acting"]
                    if (a.get("valid_to") if isinstance(a, dict) else a.valid_to) is None
                ),
            }
        return data

    def acts_at(self, day: dt.date | None) -> frozenset[str]:
        """The actions carried out on ``day`` (today's when ``day`` is None or no periods are
        known)."""
        if day is None or not self.acting:
            return frozenset(self.acts)
        return frozenset(a.id for a in self.acting if a.valid_at(day))


# What a period of the catalog is of: a task (事務) or an info item (特定個人情報).
PeriodKind = Literal["task", "info"]

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
    sub_task: str | None = Field(
        default=None,
        description="the ordinance-level task (主務省令で定める事務) under the statutory ``task``;"
        " none when the row covers the whole statutory task",
    )
    sub_info: str | None = Field(
        default=None,
        description="the ordinance-level information (主務省令で定める情報) under ``info``;"
        " none when the row covers the whole category",
    )
    body: str | None = Field(
        default=None,
        description="for a row of a local government's own ordinance (独自利用事務, 番号法第9条"
        "第2項), that body (an org id): the row permits that body's use of its own records"
        " only, never another body's; none for a row of national law",
    )
    citation: str | None = Field(
        default=None,
        description="how a decision on a given date cites the row (its source's citation form,"
        " marked when the source stands in for a newer one); set by the index, never stored",
    )
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
        """Short citation: the law and the item, as the source in force cites it."""
        return self.citation or self.item


# The separator of a statutory info item and its ordinance-level item in a query's ``info``
# (``local-tax/income-amount``) and in the key of an index.
SUB_SEPARATOR = "/"


def split_info(info: str) -> tuple[str, str | None]:
    """(statutory info item, ordinance-level item or None) of a query's ``info``."""
    base, sep, sub = info.partition(SUB_SEPARATOR)
    return base, (sub if sep else None)


class Source(BaseModel):
    """A legal source of whitelist rows: a table or an ordinance, in force for a period.

    ``citation`` is how a row of it is cited, a template with ``{item}`` (``番号法別表第二
    {item}項``, ``番号法第十九条第八号に基づく命令 第{item}条``). A *stand-in* is a source cited on
    dates from ``stand_in_from`` on although the law in force there is a newer one that is not
    loaded (the 2015 table after 2024-05-27); its citations say so (``stand_in_note``).
    ``valid_to`` is exclusive; ``None`` means open-ended. Rows of a source are in force only
    while the source is.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(pattern=ID_PATTERN)
    title: str = Field(min_length=1)
    citation: str = Field(min_length=1)
    valid_from: dt.date
    valid_to: dt.date | None = None
    stand_in_from: dt.date | None = None
    stand_in_note: str | None = None
    supersedes: str | None = None
    body: str | None = Field(
        default=None,
        pattern=ID_PATTERN,
        description="the local government whose own ordinance (条例) this is (番号法第9条第2項):"
        " its rows permit that body only, and only that body loads it; none for national law",
    )
    content_hash: str = ""
    loaded_by: str = ""
    loaded_at: dt.datetime | None = None

    @model_validator(mode="after")
    def _coherent(self) -> Source:
        if self.valid_to is not None and self.valid_to <= self.valid_from:
            raise ValueError(f"valid_to {self.valid_to} is not after valid_from {self.valid_from}")
        if self.supersedes == self.id:
            raise ValueError("a source cannot supersede itself")
        return self

    def valid_at(self, day: dt.date) -> bool:
        return self.valid_from <= day and (self.valid_to is None or day < self.valid_to)

    def stands_in_at(self, day: dt.date) -> bool:
        return self.stand_in_from is not None and day >= self.stand_in_from

    def cite(self, item: str) -> str:
        """The citation of ``item`` in this source's own form."""
        return self.citation.replace("{item}", item)

    def marked(self, citation: str) -> str:
        """``citation`` marked as a stand-in's."""
        note = self.stand_in_note or "a stand-in: the source in force is not loaded"
        return f"{citation} ({note})"

    def period(self) -> str:
        return f"{self.valid_from} to {self.valid_to or 'open'}"


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
    orgs: Mapping[str, Org] = Field(
        description="by id; a worker's catalog holds the org registry's live view (see"
        " :mod:`whitelist.orgs`), which changes without a restart"
    )
    actions: dict[str, Action] = Field(default_factory=dict)

    def periods(self) -> dict[tuple[PeriodKind, str], Held]:
        """The periods of the tasks and info items that have one (``("task", id)``,
        ``("info", id)``)."""
        out: dict[tuple[PeriodKind, str], Held] = {}
        for t in self.tasks.values():
            if (held := t.held()) is not None:
                out[("task", t.id)] = held
        for i in self.info_items.values():
            if (held := i.held()) is not None:
                out[("info", i.id)] = held
        return out

    def parents(self) -> dict[str, str]:
        """Each ordinance-level info item's statutory category."""
        return {i.id: i.parent for i in self.info_items.values() if i.parent is not None}

    def org_roles(self, org: str, at: dt.date | None = None) -> frozenset[str]:
        """The roles an org holds (on ``at``, when given); empty for an unknown org."""
        found = self.orgs.get(org)
        return found.roles_at(at) if found else frozenset()

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
