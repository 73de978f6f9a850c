"""The decision function: is this linkage permitted right now?

The index is a hash map keyed by (requester role, task, provider role, info item). A decision looks
up every pair of the requester's and the provider's roles, so its cost depends on how many roles
the two orgs hold, never on the size of the table.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict

from whitelist.catalog import default_catalog
from whitelist.models import Catalog, Held, PeriodKind, Source, WhitelistRow

Key = tuple[str, str, str, str]


class Decision(BaseModel):
    """The outcome of one whitelist check, with the row that allowed it or the reason it did not."""

    model_config = ConfigDict(frozen=True)

    allowed: bool
    row: WhitelistRow | None = None
    reason: str
    sub_task: str | None = None  # the ordinance-level task the query named, if any

    @property
    def legal_reference(self) -> str:
        return self.row.legal_reference if self.row else ""

    @property
    def outcome(self) -> Literal["allowed", "denied"]:
        return "allowed" if self.allowed else "denied"


# Decisions an index keeps, by their question (roles, task, info, day, body, consent, sub-task):
# a day's questions are few (the catalog's roles and the rows' tasks and items), and past this
# many all are forgotten at once, so memory stays bounded whatever is asked. A plain dict, not
# the cachetools LRUCache the project's other caches use: a kept decision is one dict look-up
# (0.1 µs here against the LRUCache's 0.45, which moves the key on every read), and the memo is
# there for the decision's speed alone; what it loses at the bound is one round of decisions.
DECISIONS_KEPT = 8192


class WhitelistIndex:
    """An immutable in-memory index of whitelist rows."""

    def __init__(
        self,
        rows: Iterable[WhitelistRow],
        version: int = 0,
        sources: Iterable[Source] = (),
        parents: Mapping[str, str] | None = None,
        periods: Mapping[tuple[PeriodKind, str], Held] | None = None,
    ) -> None:
        self.version = version
        self.sources: dict[str, Source] = {s.id: s for s in sources}
        # The periods of tasks and info items (the catalog's, by default; the store's registry
        # over them, see whitelist.store.load_index): outside one, nothing of it is permitted.
        self.periods: dict[tuple[PeriodKind, str], Held] = dict(
            periods if periods is not None else default_catalog().periods()
        )
        # An ordinance-level info item's statutory category (the catalog's, by default).
        self._parents = dict(parents) if parents is not None else default_catalog().parents()
        self._rows: dict[Key, list[WhitelistRow]] = {}
        self._by_purpose: dict[tuple[str, str], list[WhitelistRow]] = {}
        count = 0
        for row in rows:
            # A row naming an ordinance-level item permits that item only; a row of the whole
            # category permits the category and each of its items (see decide).
            info = row.sub_info or row.info
            key = (row.requester_role, row.task, row.provider_role, info)
            self._rows.setdefault(key, []).append(row)
            self._by_purpose.setdefault((row.task, info), []).append(row)
            count += 1
        self._size = count
        self._tasks = {k[1] for k in self._rows}
        self._infos = {k[3] for k in self._rows}
        self._decisions: dict[tuple[str, str, str, str, str], Decision] = {}
        self._answered: dict[tuple[object, ...], Decision] = {}

    def _levels(self, info: str) -> tuple[str, ...]:
        """The keys a query for ``info`` may match: the item itself and, for an ordinance-level
        item, its statutory category."""
        parent = self._parents.get(info)
        return (info,) if parent is None else (info, parent)

    def parent_of(self, info: str) -> str | None:
        """The statutory category of an ordinance-level info item."""
        return self._parents.get(info)

    def sub_tasks(self, task: str) -> set[str]:
        """The ordinance-level tasks rows name under ``task``."""
        return {r.sub_task for r in self.rows() if r.task == task and r.sub_task}

    def out_of_period(self, task: str, info: str, at: dt.date) -> str | None:
        """Why nothing of ``task`` or ``info`` (or its statutory category) is permitted on
        ``at``: the first of them not in force then, with its period; None when all are."""
        if not self.periods:
            return None
        checks: list[tuple[PeriodKind, str]] = [("task", task)]
        checks += [("info", level) for level in self._levels(info)]
        for kind, ident in checks:
            held = self.periods.get((kind, ident))
            if held is not None and not held.valid_at(at):
                what = "task" if kind == "task" else "info item"
                when = (
                    f"it ended on {held.valid_to}"
                    if held.valid_to is not None and at >= held.valid_to
                    else f"it begins on {held.valid_from}"
                )
                return (
                    f"{what} {ident!r} is not in force on {at.isoformat()}: {when}"
                    f" (in force {held.valid_from or 'from the start'} to {held.valid_to or 'open'})"
                )
        return None

    def in_force(self, row: WhitelistRow, day: dt.date) -> bool:
        """Whether ``row`` is in force on ``day``: its own period, bounded by its source's."""
        source = self.sources.get(row.source)
        return row.valid_at(day) and (source is None or source.valid_at(day))

    def cite(self, row: WhitelistRow, day: dt.date) -> str:
        """How a linkage on ``day`` cites ``row``: its source's form, marked as a stand-in's
        when the source stands in on that day for a newer one that is not loaded."""
        source = self.sources.get(row.source)
        if source is not None and source.stands_in_at(day):
            return source.marked(row.item)
        return row.item

    def _permitted(
        self, row: WhitelistRow, r: str, p: str, day: dt.date, sub_task: str | None = None
    ) -> Decision:
        """The (immutable) decision a row in force gives; built once per row, role pair,
        citation (a stand-in's rows are cited as such from the day it stands in) and sub-task
        asked."""
        citation = self.cite(row, day)
        key = (row.id, r, p, citation, sub_task or "")
        found = self._decisions.get(key)
        if found is None:
            cited = row if citation == row.item else row.model_copy(update={"citation": citation})
            level = f" [{row.task} › {sub_task}]" if sub_task else ""
            level += f" [{row.info} › {row.sub_info}]" if row.sub_info else ""
            found = self._decisions[key] = Decision(
                allowed=True,
                row=cited,
                reason=f"permitted by {citation}{level} ({r} → {p})",
                sub_task=sub_task,
            )
        return found

    def __len__(self) -> int:
        return self._size

    def rows(self) -> list[WhitelistRow]:
        return [r for rows in self._rows.values() for r in rows]

    def permitting(self, task: str, info: str, at: dt.date) -> list[WhitelistRow]:
        """The rows in force on ``at`` that let some requester obtain ``info`` for ``task``:
        what a denied linkage would need (another requester or provider role)."""
        return [
            r
            for level in self._levels(info)
            for r in self._by_purpose.get((task, level), ())
            if self.in_force(r, at)
        ]

    def tasks_permitting(self, info: str, at: dt.date) -> list[str]:
        """The tasks under which some row in force on ``at`` lets ``info`` be obtained."""
        return sorted(
            {
                t
                for (t, i), rows in self._by_purpose.items()
                if i in self._levels(info) and any(self.in_force(r, at) for r in rows)
            }
        )

    def decide(
        self,
        requester_roles: Iterable[str],
        task: str,
        provider_roles: Iterable[str],
        info: str,
        at: dt.date,
        *,
        same_body: bool = False,
        body: str | None = None,
        consented: bool = False,
        sub_task: str | None = None,
    ) -> Decision:
        """Decide one linkage (see :meth:`_decide`). The index is immutable and a decision a
        function of its question alone, so the same question on the same day is answered from
        the decisions already made (at most :data:`DECISIONS_KEPT`, forgotten all at once)."""
        req = requester_roles if type(requester_roles) is tuple else tuple(requester_roles)
        prov = provider_roles if type(provider_roles) is tuple else tuple(provider_roles)
        key = (req, task, prov, info, at, same_body, body, consented, sub_task)
        found = self._answered.get(key)
        if found is None:
            if len(self._answered) >= DECISIONS_KEPT:
                self._answered.clear()
            found = self._answered[key] = self._decide(
                req,
                task,
                prov,
                info,
                at,
                same_body=same_body,
                body=body,
                consented=consented,
                sub_task=sub_task,
            )
        return found

    def _decide(
        self,
        req: tuple[str, ...],
        task: str,
        prov: tuple[str, ...],
        info: str,
        at: dt.date,
        *,
        same_body: bool,
        body: str | None,
        consented: bool,
        sub_task: str | None,
    ) -> Decision:
        """Decide one linkage. Allowed only if a row valid on ``at`` matches all four ids and,
        for a row of a body's own use (``within-body``), requester and provider are one body
        (``body``, the org, when known) — for a row of a body's own ordinance, that very body;
        for a row of scope ``consent`` (a partner's act), the citizen's consent was verified.
        ``body`` None with ``same_body`` is a check for every body of a role (a BPF's role
        executor): a body's ordinance row counts then, and the run decides for its own org.
        ``sub_task``: the ordinance-level task the query names under ``task``; a row naming
        another sub-task does not permit it, a row of the whole task does."""
        lapsed = self.out_of_period(task, info, at)
        if lapsed is not None:
            return Decision(allowed=False, reason=lapsed)
        expired: WhitelistRow | None = None
        own_use: WhitelistRow | None = None
        levels = self._levels(info)
        rows = self._rows
        unconsented: WhitelistRow | None = None
        foreign: WhitelistRow | None = None
        other_sub: set[str] = set()
        for r in req:
            for p in prov:
                found = (
                    rows.get((r, task, p, info), ())
                    if len(levels) == 1
                    else [x for lv in levels for x in rows.get((r, task, p, lv), ())]
                )
                for row in found:
                    if sub_task is not None and row.sub_task not in (None, sub_task):
                        other_sub.add(row.sub_task or "")  # another ordinance-level task's
                    elif row.scope == "within-body" and not same_body:
                        own_use = row
                    elif row.body is not None and body is not None and row.body != body:
                        foreign = row  # another body's ordinance: never this body's
                    elif row.scope == "consent" and not consented:
                        unconsented = row
                    elif self.in_force(row, at):
                        return self._permitted(row, r, p, at, sub_task)
                    elif expired is None or self._ended(row) > self._ended(expired):
                        expired = row  # the one whose period ended last says most
        if unconsented is not None:
            reason = (
                f"{unconsented.legal_reference} permits this only on the citizen's own consent,"
                " and the flow passed none the portal attested for this run"
            )
        elif own_use is not None:
            reason = (
                f"{own_use.legal_reference} permits a body's use of its own records only:"
                " the requester and the provider are different bodies"
            )
        elif foreign is not None:
            reason = (
                f"{self.cite(foreign, at)} is {foreign.body}'s own ordinance (番号法第9条第2項):"
                f" it permits {foreign.body}'s use of its own records only, not {body}'s"
            )
        elif expired is not None:
            reason = self._not_in_force(expired, at)
        elif other_sub:
            reason = (
                f"no whitelist row permits sub-task {sub_task!r} of task {task!r}: the rows for"
                f" {info!r} name {', '.join(repr(s) for s in sorted(other_sub))} only"
            )
        elif not req:
            reason = "the requester holds no role"
        elif not prov:
            reason = "the provider holds no role"
        elif task not in self._tasks:
            reason = f"no whitelist row names task {task!r}"
        elif not any(lv in self._infos for lv in levels):
            reason = f"no whitelist row names info item {info!r}"
        else:
            reason = (
                f"no whitelist row permits requester roles {sorted(req)} to obtain {info!r}"
                f" for task {task!r} from provider roles {sorted(prov)}"
            )
        return Decision(allowed=False, reason=reason)

    def _ended(self, row: WhitelistRow) -> dt.date:
        """When a row's period, bounded by its source's, ends (``date.max``: open)."""
        source = self.sources.get(row.source)
        ends = [d for d in (row.valid_to, source.valid_to if source else None) if d is not None]
        return min(ends, default=dt.date.max)

    def _not_in_force(self, row: WhitelistRow, at: dt.date) -> str:
        source = self.sources.get(row.source)
        if source is not None and not source.valid_at(at):
            when = (
                f"it ended on {source.valid_to}"
                if source.valid_to is not None and at >= source.valid_to
                else f"it begins on {source.valid_from}"
            )
            return (
                f"{row.item} matches, but its source {source.id} ({source.title}) is not in force"
                f" on {at.isoformat()}: {when}"
            )
        return (
            f"{row.legal_reference} matches but is not in force on {at.isoformat()}"
            f" (valid {row.valid_from} to {row.valid_to or 'open'})"
        )


def permitting_hint(
    index: WhitelistIndex, task: str, info: str, at: dt.date, limit: int = 6
) -> str:
    """What would permit a denied linkage, in a sentence: the rows for ``info`` under ``task``
    (requester role → provider role), or the tasks under which ``info`` may be obtained."""
    rows = index.permitting(task, info, at)
    if rows:
        seen = sorted(
            {
                f"{r.requester_role} → {r.provider_role}"
                + (" (one body's own records)" if r.scope == "within-body" else "")
                + (" (on the citizen's consent)" if r.scope == "consent" else "")
                + f" [{r.legal_reference}]"
                for r in rows
            }
        )
        more = f", and {len(seen) - limit} more" if len(seen) > limit else ""
        return f"rows that permit {info!r} under task {task!r}: {'; '.join(seen[:limit])}{more}"
    tasks = index.tasks_permitting(info, at)
    if not tasks:
        return f"no row in force permits {info!r} under any task"
    more = f", and {len(tasks) - limit} more" if len(tasks) > limit else ""
    return (
        f"no row permits {info!r} under task {task!r}; rows permit it under: "
        f"{', '.join(tasks[:limit])}{more}"
    )


JST = ZoneInfo("Asia/Tokyo")


def japan_today() -> dt.date:
    """Today in Japan: the day the law, the PIAs and the periods are reckoned on (the
    machine's own date differs from it nine hours a day)."""
    return dt.datetime.now(JST).date()


def decide_linkage(
    catalog: Catalog,
    index: WhitelistIndex,
    requester: str,
    provider: str,
    task: str,
    info: str,
    at: dt.datetime,
    *,
    consented: bool = False,
    sub_task: str | None = None,
) -> Decision:
    """Decide one linkage between two orgs at ``at`` (the date in Japan counts).

    The orgs' roles come from the catalog, never from the request: the roles each holds on that
    date (an org that succeeded another in a merger holds its roles from the merger's date).
    ``consented``: the citizen's own consent to this act was verified (a row of scope
    ``consent`` needs it).
    """
    for side, org in (("requester", requester), ("provider", provider)):
        found = catalog.orgs.get(org)
        if found is None:
            return Decision(allowed=False, reason=f"unknown {side} org {org!r}")
        if found.kind == "private" and not (side == "provider" and info in catalog.actions):
            # A private org takes part only as a partner carrying out an action (an act step).
            return Decision(
                allowed=False,
                reason=f"{side} org {org!r} is a private body: the whitelist names public bodies"
                " only",
            )
    day = at.astimezone(JST).date()
    return index.decide(
        catalog.org_roles(requester, day),
        task,
        catalog.org_roles(provider, day),
        info,
        day,
        same_body=requester == provider,
        body=requester if requester == provider else None,
        consented=consented,
        sub_task=sub_task,
    )
