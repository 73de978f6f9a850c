"""The whitelist gate: no provider code runs unless the hub permitted this very attempt and
the law permits the linkage.

It wraps every activity of an agency worker. For a linkage (``query.*``) it

1. reads the request and verifies the hub's permit (:mod:`renkei.kernel.permits`) against the
   hub's public key pinned in this org's own key file: signed by the hub, for this org, for this
   attempt as Temporal reports it (workflow, run, step — a permit replayed elsewhere fails),
   matching every claim of the request, not expired, and binding the sealed subject code, which
   it then opens with this org's private sealing key. A request without a valid permit (a
   forged one from any process that reaches Temporal, one without keys, a replayed one) is
   refused, recorded as refused with the requester it claimed, counted and logged;
2. decides with the worker's live whitelist index: the requester's roles and this org's roles
   come from the catalog held by the worker, never from the request; the date is today in Japan;
3. writes the provider's access record for this attempt, under the provider's own code
   (idempotent on ``workflow/run/step``). If the records database cannot be reached, the gate
   waits for it within the attempt's own time, so an outage of the platform's database does not
   use up the step's retries meant for the provider; past that time the attempt fails and
   Temporal retries it. No provider code runs before the record is written;
4. on denial, raises a non-retryable ``WhitelistDenied`` (``LinkageRefused`` for a permit that
   does not hold) error carrying the reason; otherwise hands the admitted request — with this
   org's own code for the subject — to the provider, and nothing else can: the linkage activity
   serves only a request a gate admitted.

The hub has already decided the same question before handing out the provider's code (see
``activities.hub``); this second, independent check is the provider's own: the interpreter
workflow cannot bypass it, since the provider's code runs only in this worker.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import hmac
import json
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

import asyncpg
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from pydantic import ValidationError
from temporalio import activity
from temporalio.exceptions import ApplicationError
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
)

from activities.attempts import attempt_key, attempt_record
from activities.linkage import ADMITTED
from activities.permits import subject_context
from renkei.contracts import probe
from renkei.contracts.failures import UNREACHED, Failure
from renkei.contracts.messages import LinkageRequest
from renkei.contracts.names import (
    HUB,
    act_activity,
    executor_of,
    is_act_activity,
    is_query_activity,
    query_activity,
)
from renkei.kernel import attest, permits, records, telemetry
from renkei.kernel.codec import UNENCRYPTED
from renkei.kernel.keys import OrgKeys
from renkei.kernel.sealing import Sealed, SealError, open_sealed, seal
from whitelist.controls import screen
from whitelist.decide import JST, Decision, WhitelistIndex, decide_linkage
from whitelist.models import Catalog
from whitelist.payloads import SCHEMAS
from whitelist.store import LiveWhitelist

log = logging.getLogger(__name__)
T = TypeVar("T")

# What a lost or refused database connection raises; anything else is a real error.
UNREACHABLE: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
)
MARGIN = dt.timedelta(seconds=2)
# What an act's note keeps once an ask again was refused as cut off (begun, and never known to
# have ended): the refusal stands, and no answer of the act is kept after it.
CUT_OFF = {"cut_off": True}


async def patiently(
    write: Callable[[], Awaitable[T]], deadline: dt.datetime, *, first_pause: float = 0.25
) -> T:
    """Run ``write`` until it gets through to the database or ``deadline`` comes near."""
    pause = first_pause
    while True:
        try:
            return await write()
        except UNREACHABLE as err:
            left = (deadline - dt.datetime.now(dt.UTC) - MARGIN).total_seconds()
            if left <= 0:
                raise
            log.warning("records database unreachable (%s); retrying", type(err).__name__)
            if activity.in_activity():
                activity.heartbeat()
            await asyncio.sleep(min(pause, left))
            pause = min(pause * 2, 5.0)


@dataclass(frozen=True)
class Attempt:
    """The linkage attempt a request arrives as: its flow, run and step, and how long it may
    take. Through the provider's queue Temporal reports it (:meth:`from_activity`); over the
    direct channel (:mod:`activities.direct`) the executor's sealed request names it. Either
    way the hub's permit must be for exactly this attempt."""

    workflow_id: str
    run_id: str
    step: str
    limit: dt.timedelta

    @classmethod
    def from_activity(cls) -> Attempt:
        info = activity.info()
        return cls(
            info.workflow_id or "",
            info.workflow_run_id or "",
            info.activity_id,
            info.start_to_close_timeout or dt.timedelta(seconds=60),
        )

    @property
    def key(self) -> str:
        return attempt_key(self.workflow_id, self.run_id, self.step)


def provider_decision(
    org: str,
    catalog: Catalog,
    index: WhitelistIndex,
    req: LinkageRequest,
    at: dt.datetime,
    *,
    consented: bool = False,
) -> Decision:
    """``org``'s own whitelist decision on a request addressed to it (roles from the catalog).
    ``consented``: an act whose permit holds (the hub issues one only on the citizen's
    attested consent where the row needs it)."""
    if req.provider != org:
        return Decision(allowed=False, reason=f"request for {req.provider} reached {org}")
    return decide_linkage(
        catalog, index, req.requester, org, req.task, req.info, at, consented=consented
    )


def _act_context(attempt: Attempt) -> str:
    """What an act's kept answer is sealed for: this attempt's alone."""
    return f"renkei/act-answer/v1|{attempt.key}"


def _act_message(attempt: Attempt, answer: Mapping[str, object]) -> bytes:
    """What the partner signs of the answer it keeps of an attempt's act."""
    return f"renkei/act-kept/v1|{attempt.key}|{attest.answer_digest(dict(answer))}".encode()


def _act_tag(opener: X25519PrivateKey, attempt: Attempt, answer: Mapping[str, object]) -> str:
    """The partner's own tag on the answer it keeps of an attempt's act: keyed from its private
    sealing key, which no one else holds, so no other hand makes one (anyone can seal to its
    public key); and checked with its former sealing keys too, so a rotation of its keys
    between the act and an ask again leaves the kept answer its own."""
    key = HKDF(algorithm=SHA256(), length=32, salt=None, info=b"renkei/act-kept/v2").derive(
        opener.private_bytes_raw()
    )
    return hmac.new(key, _act_message(attempt, answer), hashlib.sha256).hexdigest()


class WhitelistGate:
    """Check the permit, decide and record one linkage attempt, as the provider."""

    def __init__(
        self,
        org: str,
        catalog: Catalog,
        whitelist: LiveWhitelist,
        pool: asyncpg.Pool,
        keys: OrgKeys,
        *,
        accept_unpermitted: bool = False,
        deferred_records: bool = False,
        operation: bool = True,
        act_seconds: tuple[float, float] = (60.0, 3600.0),
    ) -> None:
        """``operation``: the gate of a provider in operation (unless told otherwise: the kit's
        stubs and test mode): it refuses a permit a hub in test mode issued (the conformance
        kit's, for drafts), which only the kit's stubs take. ``act_seconds``: the least and the
        most time this org gives an act once begun, whatever time the requester's attempt names
        (``RENKEI_ACT_SECONDS_MIN``, ``RENKEI_ACT_SECONDS_MAX``)."""
        if keys.org != org:
            raise ValueError(f"the key file given to {org}'s gate is {keys.org}'s")
        self.org = org
        self.catalog = catalog
        self.whitelist = whitelist
        self.pool = pool
        self._hub = keys.hub_verifier()
        self._hub_key_id = keys.hub_key_id
        self._opener = keys.opener()
        self._openers = keys.openers()  # this org's sealing keys, the former ones after it
        self._sealing_id = keys.public(org).sealing_id
        self._acting: set[asyncio.Future[object]] = set()  # acts carried out, shielded
        least, most = act_seconds
        if not 0 < least <= most:
            raise ValueError(f"an act's time must be 0 < least <= most, not {act_seconds}")
        self._act_least = dt.timedelta(seconds=least)
        self._act_most = dt.timedelta(seconds=most)
        self.signer = keys.signer()
        self._recorder = records.RecordSigner(org, self.signer)
        self._accept_unpermitted = accept_unpermitted
        self._operation = operation
        # Deferred chaining: concurrent linkages' records go together in one commit.
        self._group = records.GroupWriter(pool) if deferred_records else None
        # Concurrent answers' receipts go together in one statement.
        self._receipts = records.ReceiptGroup(pool)

    def decide(self, req: LinkageRequest, at: dt.datetime, *, consented: bool = False) -> Decision:
        decision = provider_decision(
            self.org, self.catalog, self.whitelist.index, req, at, consented=consented
        )
        # The PIA gate and the emergency stop, as the hub applies them: a suspension (of this
        # org, say) reaches the gate of a linkage the hub permitted a moment before.
        return screen(
            decision,
            self.whitelist.controls.index,
            requester=req.requester,
            provider=self.org,
            task=req.task,
            bpf=req.bpf,
            bpf_version=req.bpf_version,
            at=at,
        )

    def unfit_send(self, req: LinkageRequest) -> str | None:
        """Why what an act sends does not fit its action's request (a field more, one missing,
        one of another type), naming the fields only; ``None`` if it fits or is no act."""
        action = self.catalog.actions.get(req.info)
        if action is None:
            return None
        try:
            SCHEMAS[action.request].model_validate(req.send)
        except ValidationError as err:
            fields = sorted({str(e["loc"][0]) for e in err.errors() if e["loc"]})
            return f"what was sent does not fit {req.info}'s request ({', '.join(fields)})"
        return None

    def not_carried_out(self, req: LinkageRequest, now: dt.datetime) -> str | None:
        """Why this org does not carry out the act asked (by its own view of the org registry,
        on the day, Japan time); ``None`` if it does, or this is no act."""
        if req.info not in self.catalog.actions:
            return None
        found = self.catalog.orgs.get(self.org)
        if found is not None and req.info in found.acts_at(now.astimezone(JST).date()):
            return None
        return f"{self.org} does not carry out action {req.info!r}"

    def check_permit(
        self, req: LinkageRequest, attempt: Attempt, now: dt.datetime
    ) -> LinkageRequest:
        """The request as the provider may see it (its own code opened), if the hub's permit
        holds for exactly this attempt; else :class:`~renkei.kernel.permits.PermitRefused`."""
        if req.permit is None and self._accept_unpermitted:  # the explicit migration switch
            # a run from before permits sent nothing beside its query, and asked no other org
            # with parameters
            if req.send or (req.params and req.requester != self.org):
                raise permits.PermitRefused(
                    "no permit: a request without one sends nothing beside its query"
                )
            return req
        permit = permits.verify(req.permit, self._hub, self._hub_key_id)
        if permit.kit and self._operation:
            raise permits.PermitRefused(
                "a conformance kit's permit (a hub in test mode): no provider in operation takes it"
            )
        if permit.provider != self.org:
            raise permits.PermitRefused(f"the permit is for {permit.provider}, not {self.org}")
        if (permit.workflow_id, permit.run_id, permit.step) != (
            attempt.workflow_id,
            attempt.run_id,
            attempt.step,
        ):
            raise permits.PermitRefused("the permit is for another attempt (replayed)")
        if permit.requester != executor_of(attempt.workflow_id):
            # The answer is sealed to the executor the workflow id names: it must be the
            # requester the hub permitted.
            raise permits.PermitRefused(
                f"the permit is for {permit.requester}'s flow, not this one"
            )
        claimed = (req.requester, req.task, req.info, req.bpf, req.bpf_version, req.content_hash)
        if claimed != (
            permit.requester,
            permit.task,
            permit.info,
            permit.bpf,
            permit.bpf_version,
            permit.content_hash,
        ):
            raise permits.PermitRefused("the request differs from its permit")
        # What a request sends is named by its permit (an act's fields, as the registered
        # definition sends them): not a field more, even one the action would take. A query's
        # permit names none. An act's permit from a hub that names no fields (a rolling upgrade,
        # RENKEI_PERMIT_FIELDS off) leaves them to the action's request (unfit_send).
        action = self.catalog.actions.get(permit.info)
        if permit.fields is not None or action is None:
            beyond = sorted(set(req.send) - set(permit.fields or ()))
            if beyond:
                raise permits.PermitRefused(
                    f"the request sends fields its permit does not name: {', '.join(beyond[:5])}"
                )
        # Parameters name a cohort: an org scanning its own register (requester and provider
        # one org) and the hub's contract probe send them; no query to another party does.
        if req.params and not (permit.probe or permit.requester == permit.provider):
            raise permits.PermitRefused(
                "the request sends parameters: only a scan of an org's own register takes them"
            )
        if now >= permit.expires_at:
            raise permits.PermitRefused(f"the permit expired: at {permit.expires_at.isoformat()}")
        if permits.seal_digest(req.sealed_subject) != permit.subject_seal:
            raise permits.PermitRefused("the sealed subject code is not the one permitted")
        # A permit with no sealed code gives another party no code at all, not the executor's
        # word in clear (a private partner's act: it has no code space of its own); an
        # executor's own scan of its own register (requester and provider one org) and the
        # hub's contract probe name no person.
        code = req.subject if permit.probe or permit.requester == permit.provider else ""
        if req.sealed_subject is not None:
            context = subject_context(permit.workflow_id, permit.run_id, permit.step, self.org)
            try:
                code = open_sealed(self._opener, req.sealed_subject, context).decode()
            except SealError as err:
                raise permits.PermitRefused(str(err)) from None
        if permit.probe:
            self._check_probe(permit, code, now)
        return req.model_copy(update={"subject": code, "permit": None, "sealed_subject": None})

    def _check_probe(self, permit: permits.Permit, code: str, now: dt.datetime) -> None:
        """A contract probe's permit holds only in a probe run, from the hub, for an item this
        org serves (or an action it carries out) on the day, and for a probe subject: never a
        real flow, nor a person's code (:mod:`renkei.contracts.probe`)."""
        if not probe.is_probe_run(permit.workflow_id) or permit.task != probe.PROBE_TASK:
            raise permits.PermitRefused("a contract probe's permit outside a contract probe")
        if permit.requester != HUB:
            raise permits.PermitRefused("a contract probe is the hub's")
        found = self.catalog.orgs.get(self.org)
        day = now.astimezone(JST).date()
        serves = (
            {h.id for h in found.serving if h.valid_at(day)}
            if found is not None and found.serving
            else set(found.serves if found is not None else ())
        )
        offered = serves | (found.acts_at(day) if found is not None else frozenset())
        if permit.info not in offered:
            raise permits.PermitRefused(
                f"a contract probe of {permit.info!r}, which {self.org} neither serves nor"
                " carries out"
            )
        if code and not probe.is_probe_code(code):
            raise permits.PermitRefused("a contract probe may name a probe subject only")

    async def decide_and_record(
        self, req: LinkageRequest, attempt: Attempt
    ) -> tuple[LinkageRequest, Decision]:
        """(the admitted request, the decision), with the provider's record of the attempt
        written; a request whose permit does not hold is recorded as refused."""
        now = dt.datetime.now(dt.UTC)
        try:
            admitted = self.check_permit(req, attempt, now)
        except permits.PermitRefused as refused:
            admitted = req
            decision = Decision(allowed=False, reason=f"refused: {refused}")
            telemetry.refused(self.org, str(refused))
            log.warning(
                "%s refused a linkage request: %s (claimed requester %s, workflow %s)",
                self.org,
                refused,
                req.requester,
                attempt.workflow_id,
            )
        else:
            # A partner's act: the hub's permit, verified above, is its word that the citizen
            # consented where the row needs it (the partner sees nothing of the consent itself).
            acting = req.permit is not None and req.info in self.catalog.actions
            decision = (
                # a contract probe's permit held above: no law is asked of a probe, it names no one
                Decision(allowed=True, reason="contract probe")
                if req.permit is not None and req.permit.permit.probe
                else telemetry.decided(
                    "provider",
                    self.org,
                    admitted,
                    lambda: self.decide(admitted, now, consented=acting),
                )
            )
            unfit = self.unfit_send(admitted) if decision.allowed else None
            if decision.allowed and unfit is None:
                unfit = self.not_carried_out(admitted, now)
            if unfit is not None:  # recorded as refused: the partner's code does not run
                decision = Decision(allowed=False, reason=f"refused: {unfit}")
            elif req.permit is not None and req.permit.permit.sub_task is not None:
                # The ordinance-level task the hub's signed permit names: this gate decides on
                # the statutory task and the item, and its record keeps both levels, as the hub's.
                decision = decision.model_copy(update={"sub_task": req.permit.permit.sub_task})
        limit = attempt.limit
        if probe.is_probe_run(attempt.workflow_id):
            # A probe (or a request claiming to be one) is kept apart: never in the org's chain
            # of access records, so nothing of it is billed, counted or shown to a citizen.
            await patiently(
                lambda: self._write_probe(attempt, admitted, decision, now), now + limit
            )
            return admitted, decision
        with telemetry.tracer().start_as_current_span(
            "renkei.whitelist.decide",
            attributes=telemetry.linkage_attributes(admitted, "provider", decision.outcome),
        ):
            await patiently(lambda: self._write(attempt, admitted, decision, now), now + limit)
        return admitted, decision

    async def keep_receipt(
        self,
        permit: permits.SignedPermit,
        answer: dict[str, object],
        signature: str,
        attempt: Attempt,
    ) -> None:
        """Keep this org's receipt of the attempt it answers, with the hub's permit it answered
        (one per attempt; the hub collects ``provided`` from it, and
        :func:`renkei.kernel.records.reconcile` compares it with the hub's outcomes), waiting
        for the records database as :meth:`decide_and_record` does."""
        now = dt.datetime.now(dt.UTC)
        receipt = records.ProviderReceipt(
            keeper=self.org,
            attempt_key=attempt.key,
            answer_digest=attest.answer_digest(answer),
            permit_signature=permit.signature,
            signature=signature,
            answered_at=now,
            permit=permit,
        )
        if await patiently(lambda: self._receipts.keep(receipt), now + attempt.limit):
            return
        # Asked again for an attempt answered before (a retry, or an executor asking under one
        # permit again and again): the answer leaves only if it is the one the receipt kept. A
        # permit is for one answer; a changed one is not a second look at the person's data.
        kept = await self._for_attempt(
            attempt,
            now + attempt.limit,
            "SELECT answer_digest FROM records.answer_receipts"
            " WHERE keeper = $1 AND attempt_key = $2",
        )
        if kept != receipt.answer_digest:
            raise Failure.LINKAGE_REFUSED.error(
                f"linkage refused: step {attempt.step} was answered before, with another answer:"
                " a permit is for one answer",
                {"requester": permit.permit.requester, "provider": self.org},
            )

    def _kept_by_this_org(
        self, attempt: Attempt, kept: Mapping[str, object], answer: Mapping[str, object]
    ) -> bool:
        """Whether this org kept ``answer`` of the attempt's act: its tag under one of its
        sealing keys, current or former (:func:`_act_tag`), or (kept before tags) its current
        signing key's signature."""
        tag = kept.get("tag")
        if isinstance(tag, str):
            return any(
                hmac.compare_digest(tag, _act_tag(opener, attempt, answer))
                for opener in self._openers
            )
        return attest.holds(
            self.signer.public_key(),
            str(kept.get("signature") or ""),
            _act_message(attempt, answer),
        )

    async def _for_attempt(
        self, attempt: Attempt, limit: dt.datetime, sql: str, *args: object
    ) -> object:
        """One statement about this org's record of the attempt (``$1`` this org, ``$2`` the
        attempt's key, then ``args``): its value, asked again while the database is out of reach
        until ``limit``."""
        return await patiently(lambda: self.pool.fetchval(sql, self.org, attempt.key, *args), limit)

    def act_time(self, attempt: Attempt) -> dt.timedelta:
        """How long this org gives the attempt's act once begun: the attempt's time, which the
        requester names, but no less than this org's least (a requester naming a short time
        does not cut the act short, half done) and no more than its most."""
        return min(max(attempt.limit, self._act_least), self._act_most)

    async def _begin_act(
        self, attempt: Attempt, act_time: dt.timedelta, token: uuid.UUID
    ) -> float | dict[str, object]:
        """Note that this org begins the attempt's act, before its code runs, with the moment it
        is cut off (``act_time`` from now) and this run's ``token``; the first time (or a note
        with this token already: a try whose reply was lost wrote it), answer that moment on
        the event loop's clock (from when the first try was sent, so no later than the note's).
        Asked again: the
        answer this org kept when it carried the act out, which is then not carried out again;
        while the act may still be under way (until the moment its note keeps), an endpoint out
        of reach, asked again; past that, with no answer kept, refused (it ended no one knows
        how: migration 0063)."""
        limit = dt.datetime.now(dt.UTC) + attempt.limit
        loop = asyncio.get_running_loop()
        first = sent = loop.time()

        def note() -> Awaitable[bool | None]:
            nonlocal sent
            sent = loop.time()  # of the try that gets through: the note's now() is later
            return self.pool.fetchval(
                "INSERT INTO records.act_runs (keeper, attempt_key, deadline, run_token)"
                " VALUES ($1, $2, now() + $3::interval, $4) ON CONFLICT DO NOTHING"
                " RETURNING true",
                self.org,
                attempt.key,
                act_time,
                token,
            )

        if await patiently(note, limit):
            return sent + act_time.total_seconds()
        row = await patiently(
            lambda: self.pool.fetchrow(
                "SELECT answer, answer IS NULL AS open, begun_at, deadline, run_token,"
                " now() AS now FROM records.act_runs WHERE keeper = $1 AND attempt_key = $2",
                self.org,
                attempt.key,
            ),
            limit,
        )
        if row is not None and row["run_token"] == token and row["open"]:
            # this run's own note, written by a try whose reply was lost: its act is to run
            return first + act_time.total_seconds()
        if row is None:  # its note was taken back meanwhile (the run failed): ask again
            raise Failure.PROVIDER_ERROR.error(
                f"step {attempt.step}'s act: its earlier run just failed",
                UNREACHED,
                non_retryable=False,
            )
        kept = row["answer"]  # (JSON's null reads as None too: "open" tells SQL's apart)
        if row["open"]:
            # Until the moment its run is cut off (kept with its note, as this org bounded the
            # attempt that began it; not this ask's time, which the requester names), it may
            # still be under way; after it, it ended, answered or not.
            deadline = row["deadline"] or row["begun_at"] + act_time
            if row["now"] < deadline + MARGIN:
                raise Failure.PROVIDER_ERROR.error(
                    f"step {attempt.step}'s act is under way at {self.org}: asked again later",
                    UNREACHED,
                    non_retryable=False,
                )
            # The refusal is written before it is given: an answer of the act kept after it
            # (its run's keeping, late) finds the note refused and is not kept, so the refusal
            # stays the act's last word whatever the clocks of the two say (the row's lock
            # orders the two writes).
            refused = await self._for_attempt(
                attempt,
                limit,
                "UPDATE records.act_runs SET answer = $3 WHERE keeper = $1 AND attempt_key = $2"
                " AND answer IS NULL AND run_token IS NOT DISTINCT FROM $4 RETURNING true",
                CUT_OFF,
                row["run_token"],  # the note just read, not one written since
            )
            if not refused:  # kept, or taken back, just now: asked again, it is told which
                raise Failure.PROVIDER_ERROR.error(
                    f"step {attempt.step}'s act at {self.org} just ended: asked again later",
                    UNREACHED,
                    non_retryable=False,
                )
            kept = CUT_OFF
        if kept == CUT_OFF:
            raise Failure.LINKAGE_REFUSED.error(
                f"linkage refused: step {attempt.step}'s act was begun before and {self.org} does"
                " not know it ended: an act is carried out at most once",
                {"provider": self.org},
            )
        found: object = None
        if isinstance(kept, dict) and isinstance(kept.get("sealed"), dict):
            for opener in self._openers:  # kept under a key since rotated: a former one opens
                try:
                    found = json.loads(
                        open_sealed(
                            opener, Sealed.model_validate(kept["sealed"]), _act_context(attempt)
                        )
                    )
                    break
                except (SealError, ValidationError, ValueError):
                    continue
        if not isinstance(found, dict) or not self._kept_by_this_org(attempt, kept, found):
            raise Failure.LINKAGE_REFUSED.error(
                f"linkage refused: step {attempt.step}'s act was carried out before and what"
                f" {self.org} kept of it is not its own: it is not carried out again",
                {"provider": self.org},
            )
        return found

    async def _end_act(self, attempt: Attempt, answer: object, token: uuid.UUID) -> bool:
        """Keep the act's answer, sealed to this org for the attempt and tagged by it (a run
        that failed removes its note instead: the partner's code says it did not carry the act
        out): this run's note, the one with its ``token``. ``False``: not kept, nor the note
        removed, since an ask again was refused meanwhile (the note says so, or the database:
        migration 0065): the refusal stands."""
        limit = dt.datetime.now(dt.UTC) + attempt.limit
        if not isinstance(answer, dict):
            try:
                removed = await self._for_attempt(
                    attempt,
                    limit,
                    "DELETE FROM records.act_runs WHERE keeper = $1 AND attempt_key = $2"
                    " AND answer IS NULL AND run_token = $3 RETURNING true",
                    token,
                )
            except asyncpg.InsufficientPrivilegeError:  # past its cut-off: the note stays
                return False
            return bool(removed)
        sealed = seal(
            self._opener.public_key(),
            self._sealing_id,
            json.dumps(answer, sort_keys=True, default=str).encode(),
            _act_context(attempt),
        )
        kept = {
            "sealed": sealed.model_dump(),
            "tag": _act_tag(self._opener, attempt, answer),
            # what a gate from before checks (a partner's workers upgraded one by one)
            "signature": attest.sign(self.signer, _act_message(attempt, answer)),
        }
        try:
            done = await self._for_attempt(
                attempt,
                limit,
                "UPDATE records.act_runs SET answer = $3 WHERE keeper = $1 AND attempt_key = $2"
                " AND answer IS NULL AND run_token = $4 RETURNING true",
                kept,
                token,
            )
        except asyncpg.InsufficientPrivilegeError:  # past its cut-off: no answer is kept
            return False
        if done:
            return True
        # Not kept now: refused meanwhile, or kept by an earlier try whose reply was lost.
        found = await self._for_attempt(
            attempt,
            limit,
            "SELECT answer FROM records.act_runs WHERE keeper = $1 AND attempt_key = $2",
        )
        return isinstance(found, dict) and found.get("tag") == kept["tag"]

    async def _act_once(
        self,
        attempt: Attempt,
        admitted: LinkageRequest,
        run: Callable[[LinkageRequest], Awaitable[object]],
    ) -> object:
        """The attempt's act: its note, then the partner's code carrying it out and its answer
        kept (or, asked again, what was kept). Shielded from a cancellation (a caller gone, a
        connection cut) as one, so that a note is never left without its act run, and once
        begun, the act's answer is kept whatever the caller does, and an ask again gets it.
        Bounded by its time (:meth:`act_time`) from when its note was written: an ask again past
        that time (and the margin) is refused, and the refusal is written to the note first, so
        an answer the act's run would keep after it is not kept: the refusal is the act's last
        word."""

        token = uuid.uuid4()  # this run's, on its note

        async def carried_out() -> object:
            begun = await self._begin_act(attempt, self.act_time(attempt), token)
            if isinstance(begun, dict):  # carried out before: its answer
                return begun
            # its time counts from its note, however long the database took to take it
            bound = asyncio.timeout_at(begun)
            answer: object = None
            failed: Exception | None = None
            try:
                async with bound:
                    answer = await run(admitted)
            except Exception as err:  # the timeout's, or the partner's code's own
                failed = err
            if bound.expired():
                # Cut off mid-act (or its code went on past the moment, whatever it then said):
                # whether it took effect no one knows, so its note stays, no answer is kept,
                # and the act is not carried out again.
                raise Failure.LINKAGE_REFUSED.error(
                    f"linkage refused: step {attempt.step}'s act ran past its time at"
                    f" {self.org} and was cut off: an act is carried out at most once",
                    {"provider": self.org},
                ) from None
            if failed is not None:  # the partner's code says it did not carry the act out
                await self._end_act(attempt, None, token)
                raise failed
            if not await self._end_act(attempt, answer, token):  # refused meanwhile
                log.warning(
                    "an act at %s ended after an ask again was refused as cut off: its answer"
                    " is not kept",
                    self.org,
                )
                raise Failure.LINKAGE_REFUSED.error(
                    f"linkage refused: step {attempt.step}'s act ended at {self.org} after an"
                    " ask again was refused: an act is carried out at most once",
                    {"provider": self.org},
                )
            return answer

        task = asyncio.ensure_future(carried_out())
        self._acting.add(task)
        task.add_done_callback(self._act_ended)
        return await asyncio.shield(task)

    def _act_ended(self, task: asyncio.Future[object]) -> None:
        """A shielded act ended: forget it, and take its failure if its caller had gone (no one
        else awaits it), so that it is logged as what it is, not as never retrieved."""
        self._acting.discard(task)
        if not task.cancelled() and (failed := task.exception()) is not None:
            # a refusal or the partner's own failure, said; anything else is a defect to see
            level = logging.INFO if isinstance(failed, ApplicationError) else logging.WARNING
            log.log(level, "an act at %s ended in failure: %s", self.org, type(failed).__name__)

    async def serve(
        self,
        kind: str,
        req: LinkageRequest,
        attempt: Attempt,
        run: Callable[[LinkageRequest], Awaitable[object]],
    ) -> object:
        """One linkage as this provider serves it, however it arrived: the request checked
        against its activity type, the permit and the law decided and recorded, then ``run``
        (the provider's code) handed the admitted request, and its answer signed for the permit
        and kept as this org's receipt before it leaves. A denial or a refusal raises the
        non-retryable failure the flow reads."""
        acts = req.info in self.catalog.actions
        if kind != (act_activity(req.info) if acts else query_activity(req.info)):
            raise Failure.MALFORMED_LINKAGE.error("activity type and requested info item differ")
        admitted, decision = await self.decide_and_record(req, attempt)
        if not decision.allowed:
            refused = decision.reason.startswith("refused: ")
            raise (Failure.LINKAGE_REFUSED if refused else Failure.WHITELIST_DENIED).error(
                f"linkage {'refused' if refused else 'denied by the whitelist'}:"
                f" {decision.reason.removeprefix('refused: ')}",
                {
                    "requester": req.requester,
                    "provider": self.org,
                    "task": req.task,
                    "info": req.info,
                },
            )
        # An act has an effect besides its answer: carried out at most once per attempt, and
        # asked again, answered with what it answered (a contract probe's acts nothing real).
        once = acts and req.permit is not None and not req.permit.permit.probe
        answer: object
        if once:
            answer = await self._act_once(attempt, admitted, run)
        else:
            answer = await run(admitted)
        if req.permit is None or not isinstance(answer, dict):  # the migration switch's path
            return answer
        # Signed with this org's own key, for this permit: a worker without the key (a rogue on
        # this queue) cannot make an answer the flow accepts. The signature is also the
        # provider's receipt, which it keeps before the answer leaves.
        signed = attest.signed_answer(self.signer, req.permit.signature, answer)
        if not req.permit.permit.probe:  # a contract probe is no exchange: it leaves no receipt
            await self.keep_receipt(req.permit, answer, signed["signature"], attempt)
        return signed

    async def _write_probe(
        self, attempt: Attempt, req: LinkageRequest, decision: Decision, now: dt.datetime
    ) -> None:
        await self.pool.execute(
            "INSERT INTO records.contract_probes (org, workflow_id, run_id, step, info, outcome,"
            " reason, decided_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
            " ON CONFLICT (workflow_id, run_id, step) DO NOTHING",
            self.org,
            attempt.workflow_id,
            attempt.run_id,
            attempt.step,
            req.info,
            decision.outcome,
            decision.reason[:300],
            now,
        )

    async def _write(
        self, attempt: Attempt, req: LinkageRequest, decision: Decision, now: dt.datetime
    ) -> list[records.AccessRecord]:
        mine = attempt_record(
            keeper=self.org,
            # A refused request may carry no code the provider could read.
            subject_code=req.subject or "unknown",
            # The provider's own record names itself, whatever the request claimed.
            req=req.model_copy(update={"provider": self.org}),
            decision=decision,
            decided_at=now,
            workflow_id=attempt.workflow_id,
            run_id=attempt.run_id,
            key=attempt.key,
        )
        if self._group is not None:
            return await self._group.write(mine, signer=self._recorder)
        return await records.write(self.pool, mine, signer=self._recorder)


class WhitelistInterceptor(Interceptor):
    """Worker interceptor installing :class:`WhitelistGate` in front of every linkage."""

    def __init__(self, gate: WhitelistGate) -> None:
        self.gate = gate

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _Inbound(next, self.gate)


class _Inbound(ActivityInboundInterceptor):
    def __init__(self, next: ActivityInboundInterceptor, gate: WhitelistGate) -> None:
        super().__init__(next)
        self.gate = gate

    async def execute_activity(self, input: ExecuteActivityInput) -> object:
        kind = activity.info().activity_type
        if not (is_query_activity(kind) or is_act_activity(kind)):
            return await super().execute_activity(input)
        raw = input.args[0] if input.args else None
        if isinstance(raw, list | tuple) and raw:  # a dynamic activity receives raw values
            raw = raw[0]
        payload = getattr(raw, "payload", None)
        if payload is not None and payload.metadata.get("encoding") == UNENCRYPTED:
            telemetry.refused(self.gate.org, "an unencrypted payload")
            raise Failure.LINKAGE_REFUSED.error(
                "linkage refused: an unencrypted payload (written without the payload ring)"
            )
        try:
            req = (
                activity.payload_converter().from_payload(payload, LinkageRequest)
                if payload is not None
                else LinkageRequest.model_validate(raw)
            )
        except Exception:  # no request a gate reads (a name past its bound): nothing recorded
            telemetry.refused(self.gate.org, "a malformed request")
            raise Failure.MALFORMED_LINKAGE.error("malformed linkage request") from None

        async def run(admitted: LinkageRequest) -> object:
            # Only the request this gate admitted reaches the provider (activities.linkage).
            token = ADMITTED.set(admitted)
            try:
                return await super(_Inbound, self).execute_activity(input)
            finally:
                ADMITTED.reset(token)

        return await self.gate.serve(kind, req, Attempt.from_activity(), run)
