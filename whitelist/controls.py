"""Two checks beside the whitelist: the PIA gate and the emergency stop.

- **The PIA gate.** An org may take part in a linkage only under a specific personal information
  protection assessment (特定個人情報保護評価, 番号法第28条) of its own for the linkage's task, in
  force on the day of the linkage: approved, its next review not yet overdue, not withdrawn. The
  requester's and the provider's are both needed.
- **The emergency stop.** A platform operator may suspend at once an org (as requester, as
  provider, or both), a BPF version or a whitelist row; until it is lifted every linkage it
  touches is denied, with the suspension as the reason.

:class:`ControlsIndex` is immutable and answers with a few dict lookups, so the hub and every
provider's gate keep deciding in memory (:mod:`whitelist.controls_store` keeps one current in each
worker). :func:`screen` is the one hook the deciders call after the whitelist allowed a linkage.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from whitelist.decide import JST, Decision
from whitelist.models import ID_PATTERN, Catalog, WhitelistRow

PiaLevel = Literal["basic", "priority", "full"]
PiaStatus = Literal["active", "withdrawn"]
LEVEL_JA: dict[str, str] = {
    "basic": "基礎項目評価",
    "priority": "重点項目評価",
    "full": "全項目評価",
}

SuspensionKind = Literal["org", "bpf", "row"]
Side = Literal["requester", "provider", "both"]
# Free text an operator writes: one line, short, never a place for anything personal.
REASON_PATTERN = r"^[^\x00-\x1f\x7f-\x9f]+$"
REASON_MAX = 300


def stamp(at: dt.datetime, form: str, zone: dt.tzinfo) -> str:
    """``at`` in ``zone`` as ``form`` says; a time no zone can hold (the database's infinity,
    as a row appended past the hub may carry) as it is."""
    try:
        return at.astimezone(zone).strftime(form)
    except (OverflowError, ValueError):
        return str(at)


class Pia(BaseModel):
    """One org's PIA for one task, as its latest registry event says."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    org: str = Field(pattern=ID_PATTERN)
    task: str = Field(pattern=ID_PATTERN)
    level: PiaLevel
    approved_on: dt.date
    review_due: dt.date = Field(description="the day its next review is due; past it, lapsed")
    status: PiaStatus = "active"
    note: str = ""
    recorded_by: str = ""
    recorded_at: dt.datetime | None = None

    def lapse(self, day: dt.date) -> str | None:
        """Why this PIA does not stand on ``day``; ``None`` when it does."""
        if self.status == "withdrawn":
            when = f" on {stamp(self.recorded_at, '%Y-%m-%d', JST)}" if self.recorded_at else ""
            why = f": {self.note}" if self.note else ""
            return f"withdrawn{when}{why}"
        if day < self.approved_on:
            return f"not approved until {self.approved_on.isoformat()}"
        if day > self.review_due:
            return f"lapsed: its review was due on {self.review_due.isoformat()}"
        return None

    def describe(self, day: dt.date) -> str:
        """One line for people: level, dates, and whether it stands on ``day``."""
        lapse = self.lapse(day)
        return (
            f"{LEVEL_JA[self.level]} approved {self.approved_on.isoformat()}, review due"
            f" {self.review_due.isoformat()}" + (f" ({lapse})" if lapse else "")
        )


class Suspension(BaseModel):
    """A suspension in force: what, by whom, when, why."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: SuspensionKind
    target: str
    version: int | None = None
    side: Side | None = None
    reason: str
    operator: str
    at: dt.datetime

    @property
    def what(self) -> str:
        if self.kind == "org":
            sides = "as requester and provider" if self.side == "both" else f"as {self.side}"
            return f"org {self.target} ({sides})"
        if self.kind == "bpf":
            return f"BPF {self.target} v{self.version}"
        return f"whitelist row {self.target}"

    def describe(self) -> str:
        at = stamp(self.at, "%Y-%m-%d %H:%M:%SZ", dt.UTC)
        return f"{self.what} suspended by {self.operator} at {at}: {self.reason}"


class ControlsIndex:
    """The PIAs in force and the suspensions, keyed for dict lookups."""

    def __init__(
        self,
        pias: Iterable[Pia] = (),
        suspensions: Iterable[Suspension] = (),
        version: int = 0,
    ) -> None:
        self.version = version
        self._pias: dict[tuple[str, str], Pia] = {(p.org, p.task): p for p in pias}
        # (org, task) → (first day, last day) of each active PIA: a decision's one lookup.
        self._standing: dict[tuple[str, str], tuple[dt.date, dt.date]] = {
            k: (p.approved_on, p.review_due) for k, p in self._pias.items() if p.status == "active"
        }
        self._as_requester: dict[str, Suspension] = {}
        self._as_provider: dict[str, Suspension] = {}
        self._bpfs: dict[tuple[str, int], Suspension] = {}
        self._rows: dict[str, Suspension] = {}
        for s in suspensions:
            if s.kind == "org":
                if s.side in ("requester", "both"):
                    self._as_requester[s.target] = s
                if s.side in ("provider", "both"):
                    self._as_provider[s.target] = s
            elif s.kind == "bpf" and s.version is not None:
                self._bpfs[(s.target, s.version)] = s
            elif s.kind == "row":
                self._rows[s.target] = s
        self._any_suspended = bool(self._as_requester or self._as_provider or self._bpfs)
        self._any_suspended = self._any_suspended or bool(self._rows)

    def pia(self, org: str, task: str) -> Pia | None:
        return self._pias.get((org, task))

    def pias(self) -> list[Pia]:
        return sorted(self._pias.values(), key=lambda p: (p.org, p.task))

    def suspensions(self) -> list[Suspension]:
        found = {
            id(s): s
            for s in (
                *self._as_requester.values(),
                *self._as_provider.values(),
                *self._bpfs.values(),
                *self._rows.values(),
            )
        }
        return sorted(found.values(), key=lambda s: s.at)

    def org_suspension(self, org: str) -> Suspension | None:
        """The suspension of ``org`` on either side, if any."""
        return self._as_requester.get(org) or self._as_provider.get(org)

    def requester_suspension(self, org: str) -> Suspension | None:
        """The suspension that stops ``org``'s own flows (as requester), if any."""
        return self._as_requester.get(org)

    def bpf_suspension(self, bpf: str, version: int) -> Suspension | None:
        return self._bpfs.get((bpf, version))

    def pia_problem(self, org: str, task: str, day: dt.date) -> str | None:
        """Why ``org`` has no PIA standing for ``task`` on ``day``; ``None`` when it has."""
        found = self._pias.get((org, task))
        if found is None:
            return f"{org} has no PIA (特定個人情報保護評価) for task {task!r}"
        lapse = found.lapse(day)
        return f"{org}'s PIA for task {task!r} is {lapse}" if lapse else None

    def refusal(
        self,
        requester: str,
        provider: str,
        task: str,
        bpf: str,
        bpf_version: int,
        row: str | None,
        day: dt.date,
    ) -> str | None:
        """Why this linkage may not go ahead although the whitelist permits it; ``None`` if it
        may. Suspensions come first (they are the operator's word of the moment), then the
        requester's PIA, then the provider's."""
        if self._any_suspended:
            for found in (
                self._as_requester.get(requester),
                self._as_provider.get(provider),
                self._bpfs.get((bpf, bpf_version)),
                self._rows.get(row) if row is not None else None,
            ):
                if found is not None:
                    return f"suspended: {found.describe()}"
        standing = self._standing
        for org in (requester, provider):
            span = standing.get((org, task))
            if span is None or not span[0] <= day <= span[1]:
                problem = self.pia_problem(org, task, day)
                return f"no PIA in force: {problem} (番号法第28条)"
        return None


_JST_OFFSET = dt.timedelta(hours=9)


def japan_day(at: dt.datetime) -> dt.date:
    """The date in Japan at ``at`` (Japan keeps +09:00 all year: a UTC time needs no zone
    lookup, which is most of a decision's cost otherwise)."""
    if at.tzinfo is dt.UTC:
        return (at + _JST_OFFSET).date()
    return at.astimezone(JST).date()


def screen(
    decision: Decision,
    controls: ControlsIndex,
    *,
    requester: str,
    provider: str,
    task: str,
    bpf: str,
    bpf_version: int,
    at: dt.datetime,
) -> Decision:
    """``decision`` as it stands once the PIA gate and the emergency stop have had their say: a
    denial as it was, an allowed linkage denied with their reason (and no row, so no record or
    permit names a legal basis for it)."""
    if not decision.allowed:
        return decision
    reason = controls.refusal(
        requester,
        provider,
        task,
        bpf,
        bpf_version,
        decision.row.id if decision.row else None,
        japan_day(at),
    )
    if reason is None:
        return decision
    return Decision(allowed=False, reason=reason)


def parties_needing_pias(catalog: Catalog, rows: Iterable[WhitelistRow]) -> list[tuple[str, str]]:
    """Every (org, task) a whitelist row lets take part in a linkage: the PIAs an installation's
    orgs need for everything the law lets them do."""
    return sorted(
        {
            (org.id, row.task)
            for row in rows
            for role in (row.requester_role, row.provider_role)
            for org in catalog.orgs_with_role(role)
        }
    )


# The PIA rules ask a full assessment to be reviewed within five years (特定個人情報保護評価に関する
# 規則): the samples' PIAs run that long from the day they are recorded.
SAMPLE_REVIEW_YEARS = 5


def sample_pias(catalog: Catalog, rows: Iterable[WhitelistRow], day: dt.date) -> list[Pia]:
    """Full PIAs approved on ``day`` for every (org, task) the rows need: the samples'."""
    due = dt.date(day.year + SAMPLE_REVIEW_YEARS, day.month, min(day.day, 28))
    return [
        Pia(org=org, task=task, level="full", approved_on=day, review_due=due, note="sample")
        for org, task in parties_needing_pias(catalog, rows)
    ]
