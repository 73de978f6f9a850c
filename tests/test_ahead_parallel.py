"""Brokering ahead a run that starts with a parallel step: ``hub.resolve`` brokers every lane's
leading linkages (when every lane starts with a linkage nothing the flow computes decides), and
the lanes use the held answers instead of asking the hub for the group at the step.

Each guarantee of brokering ahead holds for the group as for a single step (tests/test_ahead.py):
decided and recorded for the requester and the hub as at the step, the gate deciding every
request it receives, a held permit good only for its own attempt, a denial failing the flow at
its lane's step, an attempt never asked told as ``not_asked`` (and the hub refusing that word for
an attempt it denied). Every test runs over both linkage transports: the providers' queues and
the direct channel.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import asyncpg
import pytest
from temporalio import workflow
from temporalio.client import Client, WorkflowFailureError
from temporalio.common import RawValue
from temporalio.exceptions import ApplicationError
from temporalio.plugin import SimplePlugin

from renkei.app.web.codec_server import add_operator
from renkei.bpf import registry
from renkei.bpf.cel.program import DeterministicFailure
from renkei.bpf.loader import parse_text
from renkei.bpf.models import QueryStep
from renkei.bpf.validation import validate
from renkei.contracts.messages import AttemptOutcomeReport, FlowResult, LinkageRequest
from renkei.kernel import records
from renkei.kernel.settings import Settings
from whitelist import controls_store, store
from whitelist.payloads import LocalTax, PensionBenefit
from workers.assembly import running_workers
from workflows.interpreter import BpfInterpreter

from .helpers import code, flow_outcomes, hub_calls, hub_key, pick, sdk, start, workers

BPF = "ahead-group-probe"
# Three lanes: two queries of city-shibuya's in the first, one in the second, the JPS's in the
# third. Every lane starts with a certain linkage: all four are brokered with the start.
LANES = {"a0": "city-shibuya", "a1": "city-shibuya", "b0": "city-shibuya", "c0": "jps"}
STEPS = [
    "  - id: all",
    "    parallel:",
    "      - [{id: a0, query: {info: local-tax, provider: city-shibuya}},"
    " {id: a1, query: {info: local-tax, provider: city-shibuya}}]",
    "      - [{id: b0, query: {info: local-tax, provider: city-shibuya}}]",
    "      - [{id: c0, query: {info: pension-benefit, provider: jps}}]",
]


@pytest.fixture(params=["queue", "direct"])
def transport(request: pytest.FixtureRequest, settings: Settings) -> Settings:
    """The suite's settings over the providers' queues, or over the direct channel."""
    return settings.model_copy(update={"linkage_transport": request.param})


async def _register(
    pool: asyncpg.Pool, catalog: Any, bpf: str = BPF, steps: Sequence[str] = tuple(STEPS)
) -> None:
    text = "\n".join(
        [
            f"bpf: {bpf}",
            "version: 1",
            f"title: {{ja: 並行照会の先行仲介, en: {bpf}}}",
            "task: child-allowance",
            "owners: {definer: mhlw, executors: [role:municipal-mayor]}",
            "triggers: [counter]",
            "steps:",
            *steps,
            "result: {income: b0.taxable_income}",
        ]
    )
    loaded = parse_text(text, f"{bpf}.yaml")
    errors = [
        i for i in validate(loaded, catalog, await store.load_index(pool)) if i.severity == "error"
    ]
    assert not errors, errors
    await registry.register(pool, loaded)


def _subject(settings: Settings) -> str:
    h = pick(settings, lambda h: h.municipality == "city-shibuya")
    return code(settings, "city-minato", h.members[0])


async def _tax(req: LinkageRequest) -> LocalTax:
    return LocalTax(fiscal_year=2025, taxable_income=1, municipal_tax=0, dependents=0)


async def _pension(req: LinkageRequest) -> PensionBenefit:
    return PensionBenefit(receives_pension=False, kind="none", annual_amount=0)


def _answering(seen: list[str]) -> dict[str, dict[str, Any]]:
    """city-shibuya's and the JPS's providers, noting each step they answer."""

    async def tax(req: LinkageRequest) -> LocalTax:
        seen.append(req.step)
        return await _tax(req)

    async def pension(req: LinkageRequest) -> PensionBenefit:
        seen.append(req.step)
        return await _pension(req)

    return {"city-shibuya": {"local-tax": tax}, "jps": {"pension-benefit": pension}}


async def _kept(pool: asyncpg.Pool, wid: str) -> dict[tuple[str, str], records.AccessRecord]:
    found = await records.query(pool, workflow_id=wid, limit=100_000)
    kept = {(r.keeper, r.step): r for r in found}
    assert len(kept) == len(found), "an attempt recorded twice by one party"
    return kept


async def test_a_flow_starting_with_a_parallel_group_asks_the_hub_once(
    client: Client, pool: asyncpg.Pool, transport: Settings, catalog, live_whitelist
) -> None:
    """Every lane's leading linkages are brokered with the start: no ``hub.broker-group`` (nor
    any other broker call) in the history, every linkage decided by the hub before any
    provider's gate decided one, one record per party per attempt, all provided."""
    settings = transport
    await _register(pool, catalog)
    seen: list[str] = []
    async with workers(client, pool, settings, catalog, live_whitelist, providers=_answering(seen)):
        handle = await sdk(client, settings).start(start(BPF, "city-minato", _subject(settings)))
        assert (await asyncio.wait_for(handle.result(), 60)).outcome == "completed"
    assert await hub_calls(handle) == ["hub.resolve"]  # all provided: nothing told either
    assert sorted(seen) == sorted(LANES)
    kept = await _kept(pool, handle.id)
    assert set(kept) == {
        (keeper, step)
        for step, provider in LANES.items()
        for keeper in ("city-minato", records.HUB, provider)
    }
    hub_decided = [kept[(records.HUB, s)].decided_at for s in LANES]
    gates_decided = [kept[(p, s)].decided_at for s, p in LANES.items()]
    assert max(hub_decided) < min(gates_decided)  # all with the start, before any provider
    assert await flow_outcomes(pool, handle.id) == dict.fromkeys(LANES, "provided")


async def test_a_lanes_permit_that_no_longer_lasts_its_budget_is_brokered_again(
    client: Client, pool: asyncpg.Pool, transport: Settings, catalog, live_whitelist
) -> None:
    """b0's and a1's budgets are a whole day (the longest a permit lasts): their permits from
    the start no longer cover them at their steps (b0's: time has passed since the hub
    decided it; a1's: a0 has run), so each is brokered again at its step, alone (the hub's
    records of the attempt, written once, stay as they were); a0's and c0's permits are used."""
    settings = transport
    day = ", timeout: 1h, retry: {max_attempts: 25}"
    steps = [
        "  - id: all",
        "    parallel:",
        "      - [{id: a0, query: {info: local-tax, provider: city-shibuya}},"
        f" {{id: a1, query: {{info: local-tax, provider: city-shibuya{day}}}}}]",
        f"      - [{{id: b0, query: {{info: local-tax, provider: city-shibuya{day}}}}}]",
        "      - [{id: c0, query: {info: pension-benefit, provider: jps}}]",
    ]
    bpf = "ahead-group-expiry-probe"
    await _register(pool, catalog, bpf, steps)
    seen: list[str] = []
    async with workers(client, pool, settings, catalog, live_whitelist, providers=_answering(seen)):
        handle = await sdk(client, settings).start(start(bpf, "city-minato", _subject(settings)))
        assert (await asyncio.wait_for(handle.result(), 60)).outcome == "completed"
    assert await hub_calls(handle) == ["hub.resolve", "hub.broker", "hub.broker"]
    assert sorted(seen) == sorted(LANES)
    kept = await _kept(pool, handle.id)
    assert set(kept) == {
        (keeper, step)
        for step, provider in LANES.items()
        for keeper in ("city-minato", records.HUB, provider)
    }
    assert await flow_outcomes(pool, handle.id) == dict.fromkeys(LANES, "provided")


@contextlib.asynccontextmanager
async def _suspended(pool: asyncpg.Pool, live_whitelist: Any, org: str) -> AsyncIterator[None]:
    """``org`` stopped as a provider (the emergency stop) while the block runs."""
    operator = f"stop-{uuid.uuid4().hex[:6]}"
    await add_operator(pool, operator)
    _, version = await controls_store.suspend(
        pool, "org", org, "the provider's own stop", operator, side="provider", hub=hub_key()
    )
    await live_whitelist.controls.wait_for_version(version)
    try:
        yield
    finally:
        _, version = await controls_store.lift(
            pool, "org", org, "drill over", operator, hub=hub_key()
        )
        await live_whitelist.controls.wait_for_version(version)


async def test_a_lane_denied_with_the_start_fails_the_flow_at_its_step(
    client: Client, pool: asyncpg.Pool, transport: Settings, catalog, live_whitelist
) -> None:
    """The JPS is stopped as a provider before the run starts: the hub denies c0 with the
    start (recorded as denied for the requester and the hub) and permits the other lanes'. The
    flow fails as denied at c0, asking the hub nothing more; no provider is asked for anything;
    the lanes' permitted attempts end cancelled (a0, b0: their lanes were stopped as they
    started) or not asked (a1, never reached)."""
    settings = transport
    await _register(pool, catalog)
    seen: list[str] = []
    async with _suspended(pool, live_whitelist, "jps"):
        async with workers(
            client, pool, settings, catalog, live_whitelist, providers=_answering(seen)
        ):
            handle = await sdk(client, settings).start(
                start(BPF, "city-minato", _subject(settings))
            )
            with pytest.raises(WorkflowFailureError) as failure:
                await asyncio.wait_for(handle.result(), 60)
    cause = failure.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == "LinkageDenied", cause
    assert "step c0" in str(cause) and "suspended: org jps (as provider)" in str(cause)
    calls = await hub_calls(handle)
    assert not [c for c in calls if c.startswith("hub.broker")], calls
    assert seen == []
    kept = await _kept(pool, handle.id)
    assert set(kept) == {(k, s) for k in ("city-minato", records.HUB) for s in LANES}
    assert kept[("city-minato", "c0")].outcome == kept[(records.HUB, "c0")].outcome == "denied"
    assert await flow_outcomes(pool, handle.id) == {
        "a0": "cancelled",
        "b0": "cancelled",
        "a1": "not_asked",
    }


# -- an executor running its own, modified flow code ----------------------------------------------


@workflow.defn(dynamic=True, sandboxed=False, failure_exception_types=[DeterministicFailure])  # type: ignore[call-overload]
class HostileLanes(BpfInterpreter):
    """city-minato's own flow code. ``swap``: at b0 it sends another permit held from the start
    (a0's: another lane's; a1's: an attempt its own lane has not reached) or b0's permit with
    a0's sealed code. ``lie``: steps it tells the hub were never asked, before the step."""

    swap: str | None = None
    lie: frozenset[str] = frozenset()

    async def _query(self, step: QueryStep) -> None:
        if step.id in self.lie:
            await self._outcomes(
                [AttemptOutcomeReport.model_validate({"step": step.id, "outcome": "not_asked"})]
            )
        await super()._query(step)

    async def _linkage(  # type: ignore[override]
        self, step_id: str, provider: str, info: str, kind: str, request: LinkageRequest, **kw: Any
    ) -> None:
        if step_id == "b0" and self.swap is not None:
            other = next(f.brokered for f in self._run.ahead if f.step == self.swap.split(":")[0])
            if self.swap.endswith(":subject"):
                request = request.model_copy(update={"sealed_subject": other.sealed_subject})
            else:
                request = request.model_copy(
                    update={"permit": other.permit, "sealed_subject": other.sealed_subject}
                )
        await super()._linkage(step_id, provider, info, kind, request, **kw)

    @workflow.run
    async def run(self, args: Sequence[RawValue]) -> FlowResult:
        return await super().run(args)


class _Hostile(SimplePlugin):
    """city-minato's control worker runs :class:`HostileLanes` instead of the project's flow."""

    def __init__(self) -> None:
        super().__init__(
            "hostile-lanes",
            workflows=lambda ws: [HostileLanes if w is BpfInterpreter else w for w in ws or []],
        )


@contextlib.asynccontextmanager
async def _hostile_minato(
    client: Client,
    pool: asyncpg.Pool,
    settings: Settings,
    catalog: Any,
    live_whitelist: Any,
    seen: list[str],
) -> AsyncIterator[None]:
    """The project's workers, city-minato's control worker running :class:`HostileLanes` (with
    its direct-channel activity, over the direct channel)."""
    async with running_workers(
        client,
        pool,
        settings,
        catalog,
        live_whitelist,
        executors=["city-minato"],
        providers=_answering(seen).get,
        control_plugins=[_Hostile()],
    ):
        yield


@pytest.mark.parametrize(
    ("swap", "expected"),
    [
        ("a0", "the permit is for another attempt (replayed)"),  # another lane's
        ("a1", "the permit is for another attempt (replayed)"),  # another, later attempt
        ("a0:subject", "the sealed subject code is not the one permitted"),
    ],
)
async def test_a_hostile_executor_cannot_use_a_group_permit_for_another_lane_or_attempt(
    client: Client,
    pool: asyncpg.Pool,
    transport: Settings,
    catalog,
    live_whitelist,
    swap: str,
    expected: str,
) -> None:
    """At b0 city-minato's own flow code sends another permit the start brokered for the group
    (a0's, of another lane; a1's, an attempt not reached yet) or b0's own permit with a0's
    sealed code. city-shibuya's gate refuses it before any provider code and records its
    refusal of b0; the flow fails; every party keeps one record per attempt, and each attempt
    the hub permitted has one outcome."""
    settings = transport
    await _register(pool, catalog)
    seen: list[str] = []
    HostileLanes.swap, HostileLanes.lie = swap, frozenset()
    try:
        async with _hostile_minato(client, pool, settings, catalog, live_whitelist, seen):
            handle = await sdk(client, settings).start(
                start(BPF, "city-minato", _subject(settings))
            )
            with pytest.raises(WorkflowFailureError) as failure:
                await asyncio.wait_for(handle.result(), 60)
    finally:
        HostileLanes.swap = None
    assert expected in str(failure.value.cause), failure.value.cause
    assert "b0" not in seen  # no provider code ran for the misused permit
    kept = await _kept(pool, handle.id)
    assert kept[("city-shibuya", "b0")].outcome == "denied"
    assert expected in kept[("city-shibuya", "b0")].reason
    # the swapped permit's own attempt: its gate decided it only as its own lane asked it
    for step in ("a0", "a1", "c0"):
        if (LANES[step], step) in kept:
            assert kept[(LANES[step], step)].outcome == "allowed"
    outcomes = await flow_outcomes(pool, handle.id)
    assert set(outcomes) == set(LANES)
    assert outcomes["b0"] == "denied"
    rows = await pool.fetch(
        "SELECT attempt_key FROM records.attempt_outcomes WHERE attempt_key LIKE $1",
        f"{handle.id}/%",
    )
    assert len(rows) == len(LANES)  # one outcome per attempt


async def test_an_executor_telling_a_lane_the_hub_denied_as_not_asked_is_refused(
    client: Client, pool: asyncpg.Pool, transport: Settings, catalog, live_whitelist
) -> None:
    """The JPS is stopped before the run: the hub denies c0 with the start. city-minato's own
    flow code tells the hub c0 was never asked (a word for a permitted attempt only): the hub
    refuses it, and c0 keeps no outcome but its denial; the flow fails at c0 as denied."""
    settings = transport
    await _register(pool, catalog)
    seen: list[str] = []
    HostileLanes.swap, HostileLanes.lie = None, frozenset({"c0"})
    try:
        async with _suspended(pool, live_whitelist, "jps"):
            async with _hostile_minato(client, pool, settings, catalog, live_whitelist, seen):
                handle = await sdk(client, settings).start(
                    start(BPF, "city-minato", _subject(settings))
                )
                with pytest.raises(WorkflowFailureError) as failure:
                    await asyncio.wait_for(handle.result(), 60)
    finally:
        HostileLanes.lie = frozenset()
    cause = failure.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == "LinkageDenied", cause
    assert "hub.outcomes" in await hub_calls(handle)  # the lie was told ...
    kept = await _kept(pool, handle.id)
    assert kept[(records.HUB, "c0")].outcome == "denied"
    await flow_outcomes(pool, handle.id)  # every permitted attempt has its outcome: then
    rows = await pool.fetch(
        "SELECT attempt_key FROM records.attempt_outcomes WHERE attempt_key = $1",
        kept[(records.HUB, "c0")].attempt_key,
    )
    assert rows == []  # ... and refused: the hub denied c0
