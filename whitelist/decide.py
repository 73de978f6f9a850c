"""The decision function: is this linkage permitted right now?

The index is a hash map keyed by (requester role, task, provider role, info item). A decision looks
up every pair of the requester's and the provider's roles, so its cost depends on how many roles
the two orgs hold, never on the size of the table.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict

from whitelist.models import Catalog, WhitelistRow

Key = tuple[str, str, str, str]


class Decision(BaseModel):
    """The outcome of one whitelist check, with the row that allowed it or the reason it did not."""

    model_config = ConfigDict(frozen=True)

    allowed: bool
    row: WhitelistRow | None = None
    reason: str

    @property
    def legal_reference(self) -> str:
        return self.row.legal_reference if self.row else ""

    @property
    def outcome(self) -> Literal["allowed", "denied"]:
        return "allowed" if self.allowed else "denied"


class WhitelistIndex:
    """An immutable in-memory index of whitelist rows."""

    def __init__(self, rows: Iterable[WhitelistRow], version: int = 0) -> None:
        self.version = version
        self._rows: dict[Key, list[WhitelistRow]] = {}
        self._by_purpose: dict[tuple[str, str], list[WhitelistRow]] = {}
        count = 0
        for row in rows:
            key = (row.requester_role, row.task, row.provider_role, row.info)
            self._rows.setdefault(key, []).append(row)
            self._by_purpose.setdefault((row.task, row.info), []).append(row)
            count += 1
        self._size = count
        self._tasks = {k[1] for k in self._rows}
        self._infos = {k[3] for k in self._rows}
        self._decisions: dict[tuple[str, str, str], Decision] = {}

    def _permitted(self, row: WhitelistRow, r: str, p: str) -> Decision:
        """The (immutable) decision a row in force gives; built once per row and role pair."""
        key = (row.id, r, p)
        found = self._decisions.get(key)
        if found is None:
            found = self._decisions[key] = Decision(
                allowed=True, row=row, reason=f"permitted by {row.legal_reference} ({r} → {p})"
            )
        return found

    def __len__(self) -> int:
        return self._size

    def rows(self) -> list[WhitelistRow]:
        return [r for rows in self._rows.values() for r in rows]

    def permitting(self, task: str, info: str, at: dt.date) -> list[WhitelistRow]:
        """The rows in force on ``at`` that let some requester obtain ``info`` for ``task``:
        what a denied linkage would need (another requester or provider role)."""
        return [r for r in self._by_purpose.get((task, info), ()) if r.valid_at(at)]

    def tasks_permitting(self, info: str, at: dt.date) -> list[str]:
        """The tasks under which some row in force on ``at`` lets ``info`` be obtained."""
        return sorted(
            {
                t
                for (t, i), rows in self._by_purpose.items()
                if i == info and any(r.valid_at(at) for r in rows)
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
        consented: bool = False,
    ) -> Decision:
        """Decide one linkage. Allowed only if a row valid on ``at`` matches all four ids and,
        for a row of a body's own use (``within-body``), requester and provider are one body;
        for a row of scope ``consent`` (a partner's act), the citizen's consent was verified."""
        req = tuple(requester_roles)
        prov = tuple(provider_roles)
        expired: WhitelistRow | None = None
        own_use: WhitelistRow | None = None
        unconsented: WhitelistRow | None = None
        for r in req:
            for p in prov:
                for row in self._rows.get((r, task, p, info), ()):
                    if row.scope == "within-body" and not same_body:
                        own_use = row
                    elif row.scope == "consent" and not consented:
                        unconsented = row
                    elif row.valid_at(at):
                        return self._permitted(row, r, p)
                    else:
                        expired = row
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
        elif expired is not None:
            reason = (
                f"{expired.legal_reference} matches but is not in force on {at.isoformat()}"
                f" (valid {expired.valid_from} to {expired.valid_to or 'open'})"
            )
        elif not req:
            reason = "the requester holds no role"
        elif not prov:
            reason = "the provider holds no role"
        elif task not in self._tasks:
            reason = f"no whitelist row names task {task!r}"
        elif info not in self._infos:
            reason = f"no whitelist row names info item {info!r}"
        else:
            reason = (
                f"no whitelist row permits requester roles {sorted(req)} to obtain {info!r}"
                f" for task {task!r} from provider roles {sorted(prov)}"
            )
        return Decision(allowed=False, reason=reason)


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
) -> Decision:
    """Decide one linkage between two orgs at ``at`` (the date in Japan counts).

    The orgs' roles come from the catalog, never from the request. ``consented``: the citizen's
    own consent to this act was verified (a row of scope ``consent`` needs it).
    """
    if requester not in catalog.orgs:
        return Decision(allowed=False, reason=f"unknown requester org {requester!r}")
    if provider not in catalog.orgs:
        return Decision(allowed=False, reason=f"unknown provider org {provider!r}")
    return index.decide(
        catalog.org_roles(requester),
        task,
        catalog.org_roles(provider),
        info,
        at.astimezone(JST).date(),
        same_body=requester == provider,
        consented=consented,
    )
