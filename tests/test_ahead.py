"""Brokering ahead: the hub brokers the linkages a flow will certainly ask for next, in the call
the flow makes anyway (its start's, or its broker request's).

Each is decided, recorded for the requester and the hub and permitted exactly as at its step;
the flow uses the held answer at the step (a denial fails that step, not an earlier one), brokers
the step again if the permit no longer lasts its whole budget, and tells the hub an attempt it
never asked as ``not_asked``. The provider's gate decides every request it receives as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any, ClassVar

import asyncpg
import pytest
from temporalio import workflow
from temporalio.client import Client, WorkflowFailureError
from temporalio.common import RawValue, RetryPolicy
from temporalio.exceptions import ApplicationError
from temporalio.plugin import SimplePlugin
from temporalio.worker import Worker

from activities.permits import MARGIN
from renkei.app.citizen import records_for_subject
from renkei.app.web.codec_server import add_operator
from renkei.bpf import registry
from renkei.bpf.cel.program import DeterministicFailure
from renkei.bpf.loader import parse_text
from renkei.bpf.models import QueryStep
from renkei.bpf.validation import validate
from renkei.contracts.messages import (
    AttemptOutcomeReport,
    Brokered,
    BrokerRequest,
    FlowResult,
    LinkageRequest,
    ResolvedRun,
    ResolveRequest,
    ahead_budget,
)
from renkei.contracts.names import hub_queue
from renkei.contracts.retries import BROKER_GROUP_LIMIT, MAX_BUDGET_SECONDS
from renkei.kernel import keys, records
from renkei.kernel.permits import AnswerReceipt, SignedPermit
from renkei.kernel.settings import Settings
from whitelist import controls_store, store
from whitelist.payloads import LocalTax
from workers.assembly import running_workers
from workers.plugin import party_client
from workflows.interpreter import BpfInterpreter

from .helpers import (
    code,
    flow_outcomes,
    hub_calls,
    hub_key,
    pick,
    register_fixture,
    run,
    sdk,
    start,
    workers,
)


async def _register(pool: asyncpg.Pool, catalog, bpf: str, steps: list[str], result: str) -> None:
    """Register a definition of the child-allowance task whose steps are ``steps`` (YAML
    lines, indented as list items of ``steps:``)."""
    text = "\n".join(
        [
            f"bpf: {bpf}",
            "version: 1",
            f"title: {{ja: 先行照会の確認, en: {bpf}}}",
            "task: child-allowance",
            "owners: {definer: mhlw, executors: [role:municipal-mayor]}",
            "triggers: [counter]",
            "inputs:",
            "  tax_office: {type: org, required: false}",
            "  spouse: {type: subject, required: false}",
            "steps:",
            *steps,
            f"result: {{income: {result}}}",
        ]
    )
    loaded = parse_text(text, f"{bpf}.yaml")
    errors = [
        i for i in validate(loaded, catalog, await store.load_index(pool)) if i.severity == "error"
    ]
    assert not errors, errors
    await registry.register(pool, loaded)


def _queries(n: int) -> list[str]:
    return [
        f"  - {{id: q{i}, query: {{info: local-tax, provider: city-shibuya}}}}" for i in range(n)
    ]


def _subject(settings: Settings) -> str:
    h = pick(settings, lambda h: h.municipality == "city-shibuya")
    return code(settings, "city-minato", h.members[0])


async def _one_record_each(pool: asyncpg.Pool, wid: str, steps: list[str]) -> None:
    kept = await records.query(pool, workflow_id=wid, limit=100_000)
    assert sorted((r.keeper, r.step) for r in kept) == sorted(
        (keeper, step) for keeper in ("city-minato", "hub", "city-shibuya") for step in steps
    )


async def test_a_sequence_of_three_is_brokered_with_its_start(
    client: Client, pool: asyncpg.Pool, settings: Settings, catalog, live_whitelist
) -> None:
    """All three linkages are decided when the run starts, before the first provider is asked;
    no broker call at any step; one record per party per attempt; all provided."""
    await register_fixture(pool, "sequence-probe.yaml")
    async with workers(client, pool, settings, catalog, live_whitelist):
        handle = await sdk(client, settings).start(
            start("sequence-probe", "city-minato", _subject(settings))
        )
        await asyncio.wait_for(handle.result(), 60)
    calls = await hub_calls(handle)
    assert calls == ["hub.resolve"]  # all provided: the hub collects them, nothing is told
    await _one_record_each(pool, handle.id, ["q1", "q2", "q3"])
    kept = {(r.keeper, r.step): r for r in await records.query(pool, workflow_id=handle.id)}
    # the hub decided q3 before city-shibuya's gate decided q1: brokered ahead, with the start
    assert kept[("hub", "q3")].decided_at < kept[("city-shibuya", "q1")].decided_at
    assert await flow_outcomes(pool, handle.id) == dict.fromkeys(("q1", "q2", "q3"), "provided")


async def test_ten_in_sequence_are_brokered_with_the_start_and_past_the_limit_in_one_call(
    client: Client, pool: asyncpg.Pool, settings: Settings, catalog, live_whitelist
) -> None:
    """Ten linkages in sequence: all brokered with the start. A sequence longer than one call
    takes (the limit, 50): the first 50 with the start, the rest in one call at the 51st."""
    n = BROKER_GROUP_LIMIT + 2
    await _register(pool, catalog, "ahead-ten-probe", _queries(10), "q9.taxable_income")
    await _register(pool, catalog, "ahead-long-probe", _queries(n), f"q{n - 1}.taxable_income")
    rc = sdk(client, settings)
    async with workers(client, pool, settings, catalog, live_whitelist):
        ten = await rc.start(start("ahead-ten-probe", "city-minato", _subject(settings)))
        long = await rc.start(start("ahead-long-probe", "city-minato", _subject(settings)))
        assert (await asyncio.wait_for(ten.result(), 120)).outcome == "completed"
        assert (await asyncio.wait_for(long.result(), 300)).outcome == "completed"
    calls = await hub_calls(ten)
    assert calls == ["hub.resolve"]  # all provided: the hub collects them, nothing is told
    await _one_record_each(pool, ten.id, [f"q{i}" for i in range(10)])
    calls = await hub_calls(long)
    assert calls.count("hub.resolve") == 1 and calls.count("hub.broker-group") == 1
    assert set(calls) == {"hub.resolve", "hub.broker-group"}
    await _one_record_each(pool, long.id, [f"q{i}" for i in range(n)])
    assert set((await flow_outcomes(pool, long.id)).values()) == {"provided"}


async def test_an_attempt_permitted_ahead_and_never_reached_is_not_asked(
    client: Client, pool: asyncpg.Pool, settings: Settings, catalog, live_whitelist
) -> None:
    """The second linkage fails at its provider: the third, permitted with the start, is never
    asked. The hub records it as not_asked; its provider has no record and no receipt of it,
    and nothing disagrees with the providers' receipts."""
    await register_fixture(pool, "sequence-probe.yaml")

    async def second_fails(req: LinkageRequest) -> LocalTax:
        if req.step == "q2":
            raise ApplicationError("the register is down", non_retryable=True)
        return LocalTax(fiscal_year=2025, taxable_income=1, municipal_tax=0, dependents=0)

    failing = {"city-shibuya": {"local-tax": second_fails}}
    async with workers(client, pool, settings, catalog, live_whitelist, providers=failing):
        handle = await sdk(client, settings).start(
            start("sequence-probe", "city-minato", _subject(settings))
        )
        with pytest.raises(WorkflowFailureError):
            await asyncio.wait_for(handle.result(), 60)
    assert await flow_outcomes(pool, handle.id) == {
        "q1": "provided",
        "q2": "failed",
        "q3": "not_asked",
    }
    kept = {(r.keeper, r.step): r.outcome for r in await records.query(pool, workflow_id=handle.id)}
    assert kept[("city-minato", "q3")] == kept[("hub", "q3")] == "allowed"
    assert ("city-shibuya", "q3") not in kept  # the provider never received it
    q3 = f"{handle.id}/{(await handle.describe()).run_id}/q3"
    assert q3 not in {r.attempt_key for r in await records.receipts(pool, "city-shibuya")}
    hub = keys.load(settings).signer().public_key()
    mismatches = await records.reconcile(pool, hub)
    assert not [m for m in mismatches if m.attempt_key.startswith(handle.id)]


async def test_a_step_whose_permit_no_longer_lasts_its_budget_is_brokered_again(
    client: Client, pool: asyncpg.Pool, settings: Settings, catalog, live_whitelist
) -> None:
    """q2's budget is a whole day (the longest a permit lasts): its permit from the start no
    longer covers it once q1 has run, so the flow brokers q2 again at its step (the hub's
    records of the attempt, written once, stay as they were); q3's permit still covers its
    budget and is used."""
    steps = _queries(3)
    steps[1] = (
        "  - {id: q1, query: {info: local-tax, provider: city-shibuya, timeout: 1h,"
        " retry: {max_attempts: 25}}}"
    )
    await _register(pool, catalog, "ahead-expiry-probe", steps, "q2.taxable_income")
    async with workers(client, pool, settings, catalog, live_whitelist):
        handle = await sdk(client, settings).start(
            start("ahead-expiry-probe", "city-minato", _subject(settings))
        )
        assert (await asyncio.wait_for(handle.result(), 60)).outcome == "completed"
    calls = await hub_calls(handle)
    assert calls.count("hub.resolve") == 1 and calls.count("hub.broker") == 1
    assert set(calls) == {"hub.resolve", "hub.broker"}
    await _one_record_each(pool, handle.id, ["q0", "q1", "q2"])
    assert await flow_outcomes(pool, handle.id) == dict.fromkeys(("q0", "q1", "q2"), "provided")


@pytest.mark.parametrize(
    ("shape", "middle", "asked"),
    [
        # q1's provider is an expression: asked at its step, with q2 (certain) in the same call
        (
            "expression",
            ['  - {id: q1, query: {info: local-tax, provider: "${ inputs.tax_office }"}}'],
            ["hub.broker-group"],
        ),
        # q1 is about someone the flow names at run time: the same
        (
            "about",
            [
                "  - {id: q1, query: {info: local-tax, provider: city-shibuya,"
                ' about: "${ inputs.spouse }"}}'
            ],
            ["hub.broker-group"],
        ),
        # q1 runs only if a condition holds: asked in its arm (nothing follows it there), and
        # q2, after the branch, at its own step
        (
            "branch",
            [
                "  - id: b",
                "    branch:",
                "      - when: inputs.tax_office == 'city-shibuya'",
                "        steps: [{id: q1, query: {info: local-tax, provider: city-shibuya}}]",
            ],
            ["hub.broker", "hub.broker"],
        ),
    ],
)
async def test_nothing_the_flow_computes_is_brokered_ahead_nor_past(
    client: Client,
    pool: asyncpg.Pool,
    settings: Settings,
    catalog,
    live_whitelist,
    shape: str,
    middle: list[str],
    asked: list[str],
) -> None:
    """Between q0 and q2 a step the flow computes (its provider, its subject, or whether it
    runs at all): the start brokers q0 only, and nothing is brokered ahead past that step."""
    q0, _, q2 = _queries(3)
    bpf = f"ahead-{shape}-probe"
    await _register(pool, catalog, bpf, [q0, *middle, q2], "q2.taxable_income")
    subject = _subject(settings)
    async with workers(client, pool, settings, catalog, live_whitelist):
        handle = await sdk(client, settings).start(
            start(
                bpf,
                "city-minato",
                subject,
                inputs={"tax_office": "city-shibuya", "spouse": subject},
            )
        )
        assert (await asyncio.wait_for(handle.result(), 60)).outcome == "completed"
    calls = await hub_calls(handle)
    assert [c for c in calls if c != "hub.outcomes"] == ["hub.resolve", *asked]
    kept = {(r.keeper, r.step): r for r in await records.query(pool, workflow_id=handle.id)}
    # q1 and q2 were decided only once q0 had been answered
    for step in ("q1", "q2"):
        assert kept[("hub", step)].decided_at > kept[("city-shibuya", "q0")].decided_at
    await _one_record_each(pool, handle.id, ["q0", "q1", "q2"])


async def test_a_suspension_after_the_ahead_decision_reaches_the_providers_gate(
    client: Client, pool: asyncpg.Pool, settings: Settings, catalog, live_whitelist
) -> None:
    """q2 and q3 are permitted with the start; while q1's provider works, city-shibuya is
    suspended as a provider (the emergency stop). q2 reaches city-shibuya's gate with its permit
    from the start: the gate applies the stop itself and refuses it before any provider code;
    the flow fails there and q3 is never asked."""
    await register_fixture(pool, "sequence-probe.yaml")
    entered, release = asyncio.Event(), asyncio.Event()
    answered: list[str] = []

    async def first_waits(req: LinkageRequest) -> LocalTax:
        if req.step == "q1":
            entered.set()
            await release.wait()
        answered.append(req.step)
        return LocalTax(fiscal_year=2025, taxable_income=1, municipal_tax=0, dependents=0)

    operator = f"stop-{uuid.uuid4().hex[:6]}"
    await add_operator(pool, operator)
    waiting = {"city-shibuya": {"local-tax": first_waits}}
    suspended = False
    try:
        async with workers(client, pool, settings, catalog, live_whitelist, providers=waiting):
            handle = await sdk(client, settings).start(
                start("sequence-probe", "city-minato", _subject(settings))
            )
            await asyncio.wait_for(entered.wait(), 30)
            _, version = await controls_store.suspend(
                pool,
                "org",
                "city-shibuya",
                "the provider's own stop",
                operator,
                side="provider",
                hub=hub_key(),
            )
            suspended = True
            await live_whitelist.controls.wait_for_version(version)
            release.set()
            with pytest.raises(WorkflowFailureError) as failure:
                await asyncio.wait_for(handle.result(), 60)
    finally:
        if suspended:
            _, version = await controls_store.lift(
                pool, "org", "city-shibuya", "drill over", operator, hub=hub_key()
            )
            await live_whitelist.controls.wait_for_version(version)
    assert "suspended: org city-shibuya (as provider)" in str(failure.value.cause)
    assert answered == ["q1"]  # q2's provider code never ran
    calls = await hub_calls(handle)
    assert "hub.broker" not in calls and "hub.broker-group" not in calls  # decided ahead only
    kept = {(r.keeper, r.step): r for r in await records.query(pool, workflow_id=handle.id)}
    assert kept[("hub", "q2")].outcome == "allowed"  # the hub permitted it with the start ...
    gates = kept[("city-shibuya", "q2")]
    assert gates.outcome == "denied"  # ... the provider's gate, after the stop, did not
    assert "suspended: org city-shibuya (as provider)" in gates.reason
    assert ("city-shibuya", "q3") not in kept
    assert await flow_outcomes(pool, handle.id) == {
        "q1": "provided",
        "q2": "denied",
        "q3": "not_asked",
    }


@workflow.defn(dynamic=True, sandboxed=False, failure_exception_types=[DeterministicFailure])  # type: ignore[call-overload]
class Hostile(BpfInterpreter):
    """An executor's own, modified flow code: at q2 it misuses q3's permit from the start
    (``case``: for another step, at another provider, or its sealed code for q2's permit)."""

    case: str | None = "step"
    lie: frozenset[str] = frozenset()  # steps it reports as never asked, whatever they were
    stretch = False  # asks the hub for permits lasting a day, whatever the steps' budgets
    sent: ClassVar[dict[str, SignedPermit]] = {}  # the permit it sent at each step (stretch)

    async def _broker(self, req: BrokerRequest, ahead: Sequence[BrokerRequest] = ()) -> Brokered:
        if self.stretch:
            day = {"budget_seconds": MAX_BUDGET_SECONDS}
            req = req.model_copy(update=day)
            ahead = [a.model_copy(update=day) for a in ahead]
        return await super()._broker(req, ahead)

    def _report(self, step: str, outcome: str, receipt: AnswerReceipt | None = None) -> None:
        if step in self.lie:
            outcome, receipt = "not_asked", None
        super()._report(step, outcome, receipt)

    async def _linkage(  # type: ignore[override]
        self, step_id: str, provider: str, info: str, kind: str, request: LinkageRequest, **kw: Any
    ) -> None:
        if step_id in self.lie:
            # Told before it is asked, so ahead of the hub's collector (a flow no longer tells a
            # "provided": the hub collects it from the provider's receipt, and keeps the first
            # outcome it records).
            await self._outcomes(
                [AttemptOutcomeReport.model_validate({"step": step_id, "outcome": "not_asked"})]
            )
        if self.stretch and request.permit is not None:
            Hostile.sent[step_id] = request.permit
        if step_id == "q2" and self.case is not None:
            q3 = next(f.brokered for f in self._run.ahead if f.step == "q3")
            if self.case == "subject":
                request = request.model_copy(update={"sealed_subject": q3.sealed_subject})
            else:
                request = request.model_copy(
                    update={"permit": q3.permit, "sealed_subject": q3.sealed_subject}
                )
            if self.case == "provider":
                # to jps: its queue, or (the direct channel) its endpoint, which the request's
                # provider names
                provider = "jps"
                request = request.model_copy(update={"provider": "jps"})
        await super()._linkage(step_id, provider, info, kind, request, **kw)

    @workflow.run
    async def run(self, args: Sequence[RawValue]) -> FlowResult:
        return await super().run(args)


class _HostilePlugin(SimplePlugin):
    """A plugin type of its own (the SDK warns of two plugins of one type on a worker)."""


@contextlib.asynccontextmanager
async def _hostile_minato(
    client: Client, pool: asyncpg.Pool, settings: Settings, catalog, live_whitelist, provider: Any
) -> AsyncIterator[None]:
    """The hub's and the agencies' workers (city-shibuya's local tax by ``provider``), and
    city-minato's control worker running :class:`Hostile` in place of the interpreter (with
    everything else of its own control worker: its asks over the direct channel too)."""
    hostile = _HostilePlugin("renkei.tests.hostile-minato", workflows=lambda _: [Hostile])
    async with running_workers(
        client,
        pool,
        settings,
        catalog,
        live_whitelist,
        executors=["city-minato"],  # the hub's worker, and no one's control worker but this one
        providers={"city-shibuya": {"local-tax": provider}}.get,
        control_plugins=[hostile],
    ):
        yield


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("step", "for another attempt (replayed)"),
        ("provider", "the permit is for city-shibuya, not jps"),
        ("subject", "sealed subject code is not the one permitted"),
    ],
)
async def test_a_hostile_executor_cannot_use_a_permit_brokered_ahead_elsewhere(
    client: Client,
    pool: asyncpg.Pool,
    settings: Settings,
    catalog,
    live_whitelist,
    case: str,
    expected: str,
) -> None:
    """city-minato runs its own, modified flow code (its control worker is its own): at q2 it
    sends q3's permit from the start for q2 (another step), to jps (another provider), or q2's
    own permit with q3's sealed code (another attempt's subject code). The provider's gate
    refuses each before any provider code; every party keeps one record per attempt, and each
    attempt one outcome."""
    await register_fixture(pool, "sequence-probe.yaml")
    answered: list[str] = []

    async def spy(req: LinkageRequest) -> LocalTax:
        answered.append(req.step)
        return LocalTax(fiscal_year=2025, taxable_income=1, municipal_tax=0, dependents=0)

    Hostile.case, Hostile.lie = case, frozenset()
    async with _hostile_minato(client, pool, settings, catalog, live_whitelist, spy):
        handle = await sdk(client, settings).start(
            start("sequence-probe", "city-minato", _subject(settings))
        )
        with pytest.raises(WorkflowFailureError) as failure:
            await asyncio.wait_for(handle.result(), 60)
    assert expected in str(failure.value.cause), failure.value.cause
    assert answered == ["q1"]  # no provider code ran for the misused permit
    gate = "jps" if case == "provider" else "city-shibuya"
    found = await records.query(pool, workflow_id=handle.id)
    assert sorted((r.keeper, r.step) for r in found) == sorted(
        [(k, s) for k in ("city-minato", "hub") for s in ("q1", "q2", "q3")]
        + [("city-shibuya", "q1"), (gate, "q2")]
    )
    kept = {(r.keeper, r.step): r for r in found}
    assert kept[(gate, "q2")].outcome == "denied" and expected in kept[(gate, "q2")].reason
    assert await flow_outcomes(pool, handle.id) == {
        "q1": "provided",
        "q2": "denied",
        "q3": "not_asked",
    }
    rows = await pool.fetch(
        "SELECT attempt_key FROM records.attempt_outcomes WHERE attempt_key LIKE $1",
        f"{handle.id}/%",
    )
    assert len(rows) == 3  # one outcome per attempt


async def test_a_hostile_executor_gets_no_permit_longer_than_its_steps_budget(
    client: Client, pool: asyncpg.Pool, settings: Settings, catalog, live_whitelist
) -> None:
    """city-minato's own flow code asks the hub for permits lasting a day, at q1 (its provider
    an expression, so asked at its step) and for q2 asked ahead with it. The hub gives each
    permit the budget the registered definition gives its step (q2's lasting q1 too), never
    the day asked: the budget is the definition's word, not the request's."""
    q0, _, q2 = _queries(3)
    bpf = "ahead-budget-probe"
    q1 = '  - {id: q1, query: {info: local-tax, provider: "${ inputs.tax_office }"}}'
    await _register(pool, catalog, bpf, [q0, q1, q2], "q2.taxable_income")
    found = await registry.fetch(pool, bpf)
    assert found is not None
    steps = {s.id: s for s in found.definition.steps if isinstance(s, QueryStep)}
    longest = {
        "q1": ahead_budget(steps["q1"]),
        "q2": ahead_budget(steps["q2"], [steps["q1"]]),
    }

    async def answer(req: LinkageRequest) -> LocalTax:
        return LocalTax(fiscal_year=2025, taxable_income=1, municipal_tax=0, dependents=0)

    Hostile.case, Hostile.lie, Hostile.stretch = None, frozenset(), True
    Hostile.sent.clear()
    try:
        async with _hostile_minato(client, pool, settings, catalog, live_whitelist, answer):
            handle = await sdk(client, settings).start(
                start(bpf, "city-minato", _subject(settings), inputs={"tax_office": "city-shibuya"})
            )
            assert (await asyncio.wait_for(handle.result(), 60)).outcome == "completed"
    finally:
        Hostile.stretch = False
    sent = dict(Hostile.sent)
    assert set(sent) == {"q0", "q1", "q2"}
    assert "hub.broker-group" in await hub_calls(handle)  # q1 asked at its step, q2 with it
    decided = {
        r.step: r.decided_at
        for r in await records.query(pool, workflow_id=handle.id)
        if r.keeper == "hub"
    }
    for step, most in longest.items():
        lasts = sent[step].permit.expires_at - decided[step]  # the hub's one clock, both
        assert lasts <= dt.timedelta(seconds=most) + MARGIN, (step, lasts)
    assert await flow_outcomes(pool, handle.id) == dict.fromkeys(("q0", "q1", "q2"), "provided")


async def test_an_executor_reporting_an_answered_attempt_as_not_asked_is_caught(
    client: Client, pool: asyncpg.Pool, settings: Settings, catalog, live_whitelist, cli
) -> None:
    """city-minato's own flow code reports q3 as never asked (permitted ahead, the flow ended
    before asking), and then asks it — told first, so ahead of the hub's collector: the hub
    records the executor's word, but city-shibuya kept its
    receipt; the reconciliation lists the attempt and the citizen sees it as provided, on the
    provider's own record."""
    await register_fixture(pool, "sequence-probe.yaml")
    Hostile.case, Hostile.lie = None, frozenset({"q3"})

    async def honest(req: LinkageRequest) -> LocalTax:
        return LocalTax(fiscal_year=2025, taxable_income=1, municipal_tax=0, dependents=0)

    async with _hostile_minato(client, pool, settings, catalog, live_whitelist, honest):
        handle = await sdk(client, settings).start(
            start("sequence-probe", "city-minato", _subject(settings))
        )
        assert (await asyncio.wait_for(handle.result(), 60)).outcome == "completed"
    assert await flow_outcomes(pool, handle.id) == {
        "q1": "provided",
        "q2": "provided",
        "q3": "not_asked",
    }
    kept = {(r.keeper, r.step): r for r in await records.query(pool, workflow_id=handle.id)}
    q3 = kept[("hub", "q3")]
    hub = keys.load(settings).signer().public_key()
    found = {m.attempt_key: m for m in await records.reconcile(pool, hub)}
    assert set(found) & {r.attempt_key for r in kept.values()} == {q3.attempt_key}
    assert found[q3.attempt_key].problem == (
        "the executor reported it as not asked, and the provider answered it"
    )
    assert found[q3.attempt_key].reported == "not_asked"
    [seen] = [
        r
        for r in await records_for_subject(pool, catalog, uuid.UUID(q3.subject_code), hub=hub)
        if r.application == handle.id and r.step == "q3"
    ]
    assert (seen.exchange, seen.provided_per) == ("provided", "provider")
    status, out = await asyncio.to_thread(
        run, cli, "records", "reconcile", "--provider", "city-shibuya", "--settled", "0"
    )
    assert status == 1 and q3.attempt_key in out, out


async def test_an_executor_reporting_an_attempt_its_provider_refused_as_not_asked_is_caught(
    client: Client, pool: asyncpg.Pool, settings: Settings, catalog, live_whitelist
) -> None:
    """city-minato's own flow code sends q2 with q3's sealed code (city-shibuya's gate refuses
    it) and reports q2 as never asked: the provider's gate kept its record of the request, so
    the reconciliation lists it."""
    await register_fixture(pool, "sequence-probe.yaml")
    Hostile.case, Hostile.lie = "subject", frozenset({"q2"})

    async def honest(req: LinkageRequest) -> LocalTax:
        return LocalTax(fiscal_year=2025, taxable_income=1, municipal_tax=0, dependents=0)

    async with _hostile_minato(client, pool, settings, catalog, live_whitelist, honest):
        handle = await sdk(client, settings).start(
            start("sequence-probe", "city-minato", _subject(settings))
        )
        with pytest.raises(WorkflowFailureError):
            await asyncio.wait_for(handle.result(), 60)
    assert await flow_outcomes(pool, handle.id) == {
        "q1": "provided",
        "q2": "not_asked",
        "q3": "not_asked",
    }
    kept = {(r.keeper, r.step): r for r in await records.query(pool, workflow_id=handle.id)}
    assert kept[("city-shibuya", "q2")].outcome == "denied"
    hub = keys.load(settings).signer().public_key()
    found = {m.attempt_key: m for m in await records.reconcile(pool, hub)}
    q2 = kept[("hub", "q2")].attempt_key
    # q3 was truly never asked: only q2 disagrees
    assert set(found) & {r.attempt_key for r in kept.values()} == {q2}
    assert found[q2].problem == (
        "the executor reported it as not asked, and the provider's gate decided it"
    )


async def test_a_flow_cancelled_before_its_linkages_ahead_tells_them_not_asked(
    client: Client, pool: asyncpg.Pool, settings: Settings, catalog, live_whitelist
) -> None:
    """Cancelled while q1's provider works: q1 is cancelled, q2 and q3 (permitted with the
    start) were never asked, and no provider holds a record of them."""
    await register_fixture(pool, "sequence-probe.yaml")
    entered = asyncio.Event()

    async def stall(req: LinkageRequest) -> LocalTax:
        entered.set()
        await asyncio.Event().wait()  # until the worker stops
        raise AssertionError("not reached")

    stalling = {"city-shibuya": {"local-tax": stall}}
    async with workers(client, pool, settings, catalog, live_whitelist, providers=stalling):
        handle = await sdk(client, settings).start(
            start("sequence-probe", "city-minato", _subject(settings))
        )
        await asyncio.wait_for(entered.wait(), 30)
        await handle.cancel()
        with pytest.raises(WorkflowFailureError):
            await asyncio.wait_for(handle.result(), 30)
    assert await flow_outcomes(pool, handle.id) == {
        "q1": "cancelled",
        "q2": "not_asked",
        "q3": "not_asked",
    }
    kept = {(r.keeper, r.step) for r in await records.query(pool, workflow_id=handle.id)}
    assert ("city-shibuya", "q2") not in kept and ("city-shibuya", "q3") not in kept


@workflow.defn(dynamic=True, sandboxed=False)
class OlderExecutor:
    """An executor whose control worker is older than the hub: it asks ``hub.resolve`` to broker
    the run's first linkage only (``broker_first``), as flows did before brokering ahead."""

    @workflow.run
    async def run(self, args: Sequence[RawValue]) -> dict[str, Any]:
        req = workflow.payload_converter().from_payload(args[0].payload, ResolveRequest)
        run: ResolvedRun = await workflow.execute_activity(
            "hub.resolve",
            req,
            task_queue=hub_queue(str(workflow.memo_value("prefix", type_hint=str))),
            result_type=ResolvedRun,
            start_to_close_timeout=dt.timedelta(seconds=30),
            retry_policy=RetryPolicy(maximum_attempts=1),
        )
        first = run.first
        return {
            "first": first.step if first else None,
            "allowed": first.brokered.allowed if first else None,
            "ahead": [f.step for f in run.ahead],
        }


async def test_an_older_executors_run_has_only_its_first_linkage_brokered_with_its_start(
    client: Client, pool: asyncpg.Pool, settings: Settings, catalog, live_whitelist
) -> None:
    """A control worker from before brokering ahead asks the hub for the first linkage only: the
    hub brokers q1 with the start (permitted, recorded once for requester and hub) and nothing
    ahead of it (q2 and q3 have no record yet: the older flow asks for them at their steps)."""
    await register_fixture(pool, "sequence-probe.yaml")
    found = await registry.fetch(pool, "sequence-probe")
    assert found is not None
    own = party_client(client, settings, ["city-minato"], legacy_ring=False)
    queue = f"{settings.task_queue_prefix}.older-executor"
    wid = f"sequence-probe/city-minato/older-{uuid.uuid4().hex[:8]}"
    req = ResolveRequest(
        bpf="sequence-probe",
        version=found.definition.version,
        executor="city-minato",
        subject=_subject(settings),
        inputs={},
        broker_first=True,
    )
    async with (
        running_workers(client, pool, settings, catalog, live_whitelist, executors=[]),
        Worker(own, task_queue=queue, workflows=[OlderExecutor]),
    ):
        handle = await own.start_workflow(
            "sequence-probe",
            req,
            id=wid,
            task_queue=queue,
            memo={"prefix": settings.task_queue_prefix},
            result_type=dict,
        )
        out = await asyncio.wait_for(handle.result(), 60)
    assert out == {"first": "q1", "allowed": True, "ahead": []}
    kept = sorted((r.keeper, r.step) for r in await records.query(pool, workflow_id=wid))
    assert kept == [("city-minato", "q1"), ("hub", "q1")]
