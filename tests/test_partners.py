"""Partners that act (act steps) and the private partner, against the real servers: the
citizen's attested consent, what the private partner receives (no code), the records of every
side and the citizen's view, the hub refusing a consent that is not the citizen's for this run,
and a receipt the partner did not sign."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import uuid
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from temporalio import activity, workflow
from temporalio.client import WorkflowFailureError
from temporalio.common import RawValue, RetryPolicy
from temporalio.exceptions import ActivityError
from temporalio.worker import Worker

from renkei.app.citizen import records_for_subject
from renkei.bpf import registry
from renkei.contracts.failures import Failure
from renkei.contracts.messages import Brokered, BrokerRequest, ConsentProof, LinkageRequest
from renkei.contracts.names import agency_queue, hub_queue, workflow_id
from renkei.kernel import attest, keys, records
from whitelist.decide import JST
from whitelist.payloads import ActionReceipt, MoveNotice
from workers.plugin import party_client

from .helpers import (
    as_resolved,
    ask_hub,
    code,
    give_pias,
    hub_key,
    hub_public,
    pick,
    register_fixture,
    said,
    sdk,
    start,
    through_queues,
    workers,
)

BPF = "move-notice-electricity"
INPUTS = {"moved_on": "2026-12-01", "new_address": "東京都港区芝公園1-1-1"}
CONSENT = {"agree": True, "customer_number": "SD-0012345"}


async def _until_waiting(rc: Any, wid: str) -> None:
    for _ in range(400):  # the flow's state is remote: polled, as a portal would
        if await rc.waiting(wid):
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the flow never waited")


def _person(settings: Any) -> Any:
    return pick(settings, lambda h: h.municipality == "city-minato").members[0]


async def _as_citizen(rc: Any, settings: Any, handle: Any, payload: dict[str, Any]) -> None:
    """The citizen's own answer, as their portal session signs it (for this run)."""
    word = attest.citizen_response(
        keys.load(settings).signer(),
        handle.id,
        handle.result_run_id or "",
        "consent",
        payload,
        code(settings, "city-minato", _person(settings)),  # the flows here are about them
    )
    await rc.respond(handle.id, "consent", payload, by="citizen", attestation=word)


async def test_a_private_partner_acts_on_the_citizens_consent_and_gets_no_code(
    client, pool, settings, catalog, live_whitelist
) -> None:
    """With the citizen's attested consent, the sample electricity company carries out the
    move notice: its code gets exactly the three fields sent and no one's code; the requester,
    the hub and the partner keep a record; the citizen sees it as an action."""
    got: list[LinkageRequest] = []

    async def notice(req: LinkageRequest) -> ActionReceipt:
        got.append(req)
        MoveNotice.model_validate(req.send)
        return ActionReceipt(done=True, reference="SD-RECEIPT-1")

    slow = settings.model_copy(update={"test_time_scale": 1e-4})
    rc = sdk(client, slow)
    person = _person(settings)
    async with workers(
        client,
        pool,
        slow,
        catalog,
        live_whitelist,
        providers={"sample-denki": {"electricity-move-notice": notice}},
    ):
        handle = await rc.start(
            start(
                BPF,
                "city-minato",
                code(settings, "city-minato", person),
                trigger="portal",
                inputs=INPUTS,
            )
        )
        await _until_waiting(rc, handle.id)
        await _as_citizen(rc, settings, handle, CONSENT)
        result = await handle.result()
    assert result.outcome == "completed", result
    assert result.result == {"notified": True, "reference": "SD-RECEIPT-1"}
    assert [(x.step, x.provider, x.info, x.outcome) for x in result.linkages] == [
        ("notify", "sample-denki", "electricity-move-notice", "provided")
    ]
    [req] = got
    assert req.send == {
        "customer_number": "SD-0012345",
        "moved_on": "2026-12-01",
        "new_address": "東京都港区芝公園1-1-1",
    }
    assert req.subject == "" and req.sealed_subject is None and req.permit is None
    sent = req.model_dump_json()
    for org in catalog.orgs:  # no agency's code for the person, nor the hub's subject id
        if not catalog.is_private(org):
            assert code(settings, org, person) not in sent
    assert str(person.subject_id) not in sent
    kept = {r.keeper: r for r in await records.query(pool, workflow_id=handle.id)}
    assert set(kept) == {"city-minato", records.HUB, "sample-denki"}
    for r in kept.values():
        assert (r.step, r.info, r.outcome) == ("notify", "electricity-move-notice", "allowed")
        assert r.whitelist_row == "renkei-partners/1" and "第69条第2項第1号" in r.legal_reference
    seen = [
        r
        for r in await records_for_subject(
            pool, catalog, person.subject_id, hub=hub_public(settings)
        )
        if r.application == handle.id
    ]
    assert [(r.step, r.action, r.provider.id, r.info.id, r.vouched) for r in seen] == [
        ("notify", True, "sample-denki", "electricity-move-notice", True)
    ]
    assert "電気" in seen[0].info.ja


async def test_an_act_the_citizen_did_not_agree_to_is_denied_by_the_hub_and_recorded(
    client, pool, settings, catalog, live_whitelist
) -> None:
    """A flow that asks the partner to act though the citizen said no: the hub refuses (the
    row permits it only on consent), records the denial, and the partner's code never runs."""
    calls: list[LinkageRequest] = []

    async def notice(req: LinkageRequest) -> ActionReceipt:
        calls.append(req)
        return ActionReceipt(done=True, reference="x")

    await register_fixture(pool, "act-probe.yaml")
    slow = settings.model_copy(update={"test_time_scale": 1e-4})
    rc = sdk(client, slow)
    person = _person(settings)
    async with workers(
        client,
        pool,
        slow,
        catalog,
        live_whitelist,
        providers={"sample-denki": {"electricity-move-notice": notice}},
    ):
        handle = await rc.start(
            start(
                "act-probe",
                "city-minato",
                code(settings, "city-minato", person),
                trigger="portal",
                inputs=INPUTS,
            )
        )
        await _until_waiting(rc, handle.id)
        await _as_citizen(rc, settings, handle, {**CONSENT, "agree": False})
        with pytest.raises(WorkflowFailureError) as failure:
            await handle.result()
    assert Failure.LINKAGE_DENIED.caused(failure.value.cause)
    assert "only on the citizen's own consent" in str(failure.value.cause)
    assert calls == []
    kept = {r.keeper: r for r in await records.query(pool, workflow_id=handle.id)}
    assert set(kept) == {"city-minato", records.HUB}
    assert all(r.outcome == "denied" and "consent" in r.reason for r in kept.values())


# Named like the BPF: the hub takes only a flow of that BPF to ask for its act.
@workflow.defn(name=BPF, sandboxed=False)
class ForgeConsent:
    """An executor's own workflow (it runs its control worker, so it can): it asks the hub to
    broker the sample's act with a consent of its making, once the test gives it one."""

    def __init__(self) -> None:
        self._proof: ConsentProof | None = None

    @workflow.signal(name="proof")
    def proof(self, proof: ConsentProof) -> None:
        self._proof = proof

    @workflow.run
    async def run(self, queue: str, req: BrokerRequest) -> Brokered:
        await workflow.wait_condition(lambda: self._proof is not None)
        req = await as_resolved(queue, req, INPUTS)
        brokered: Brokered = await workflow.execute_activity(
            "hub.broker",
            req.model_copy(update={"consent": self._proof}),
            task_queue=queue,
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=RetryPolicy(maximum_attempts=1),
            result_type=Brokered,
        )
        return brokered


async def test_the_hub_takes_only_the_citizens_consent_for_this_run(
    client, pool, settings, catalog, live_whitelist
) -> None:
    """The executor itself forges the consent it hands the hub: an agency's answer (no
    attestation), one signed with the agency's own key, the portal's word for another run, the
    portal's word for this run given by another person (a run resolved about someone, whose
    accomplice the portal found to be the person: the executor wrote the start, or resolved
    the run again about them), and the portal's first form, which named no person. The hub
    denies each and records it; the portal's word for this very run and its person is taken
    (the control)."""
    found = await registry.fetch(pool, BPF, 1, "test")
    assert found is not None
    person = _person(settings)
    someone = pick(settings, lambda h: h.members[0].subject_id != person.subject_id).members[0]
    minato = party_client(client, settings, ["city-minato"])
    queue = f"{settings.task_queue_prefix}.attacker"
    hub = keys.load(settings).signer()
    agency = keys.load_org(settings, "city-minato").signer()
    outcomes: dict[str, Brokered] = {}
    ids: dict[str, str] = {}
    async with (
        workers(client, pool, settings, catalog, live_whitelist, agencies=()),
        Worker(minato, task_queue=queue, workflows=[ForgeConsent]),
    ):
        for case in (
            "agency's answer",
            "agency's key",
            "another run",
            "another person",
            "the run only",
            "this run",
        ):
            wid = workflow_id(BPF, "city-minato", f"forge-{uuid.uuid4().hex[:8]}")
            req = BrokerRequest(
                trigger="portal",
                requester="city-minato",
                provider="sample-denki",
                task="move-one-stop",
                info="electricity-move-notice",
                subject=code(settings, "city-minato", person),
                bpf=BPF,
                bpf_version=1,
                content_hash=found.content_hash,
                step="notify",
                workflow_id=wid,
                run_id="",
                send_fields=["customer_number", "moved_on", "new_address"],
            )
            handle = await minato.start_workflow(
                ForgeConsent.run,
                args=[hub_queue(settings.task_queue_prefix), req],
                id=wid,
                task_queue=queue,
            )
            run = handle.result_run_id or ""
            own = code(settings, "city-minato", person)
            signed_for = {
                "agency's answer": None,
                "agency's key": attest.citizen_response(agency, wid, run, "consent", CONSENT, own),
                "another run": attest.citizen_response(
                    hub, wid, "another-run", "consent", CONSENT, own
                ),
                # the portal's word for this run, but given by someone else signed in there
                "another person": attest.citizen_response(
                    hub, wid, run, "consent", CONSENT, code(settings, "city-minato", someone)
                ),
                # the first form, bound to the run only (from before answers named their person)
                "the run only": attest.sign(
                    hub, attest._citizen(wid, run, "consent", CONSENT, None)
                ),
                "this run": attest.citizen_response(hub, wid, run, "consent", CONSENT, own),
            }[case]
            await handle.signal(
                ForgeConsent.proof,
                ConsentProof(step="consent", payload=CONSENT, attestation=signed_for),
            )
            outcomes[case] = await handle.result()
            ids[case] = wid
    for case in (
        "agency's answer",
        "agency's key",
        "another run",
        "another person",
        "the run only",
    ):
        assert not outcomes[case].allowed, case
        assert "only on the citizen's own consent" in outcomes[case].reason
        kept = {r.keeper: r for r in await records.query(pool, workflow_id=ids[case])}
        assert set(kept) == {"city-minato", records.HUB}, case
        assert all(r.outcome == "denied" for r in kept.values())
    taken = outcomes["this run"]
    assert taken.allowed and taken.permit is not None
    # A private partner's permit seals no one's code to it.
    assert taken.sealed_subject is None and taken.permit.permit.subject_seal == "none"


async def test_a_receipt_the_partner_did_not_sign_is_refused(
    client, pool, settings, catalog, live_whitelist
) -> None:
    """A rogue worker on the partner's queue (no key of the partner's) answers the act with a
    made-up receipt: the flow does not take it. (Through the partner's queue, whatever the
    suite's transport: an impostor at an endpoint is tests/test_direct.py's.)"""
    taken: list[LinkageRequest] = []

    @activity.defn(dynamic=True)
    async def rogue(args: Sequence[RawValue]) -> dict[str, object]:
        taken.append(activity.payload_converter().from_payload(args[0].payload, LinkageRequest))
        made_up = ActionReceipt(done=True, reference="forged")
        return {"answer": made_up.model_dump(mode="json"), "signature": "Zm9yZ2Vk"}

    slow = through_queues(settings.model_copy(update={"test_time_scale": 1e-4}))
    rc = sdk(client, slow)
    person = _person(settings)
    async with (
        workers(client, pool, slow, catalog, live_whitelist, agencies=()),
        Worker(
            client,
            task_queue=agency_queue(settings.task_queue_prefix, "sample-denki"),
            activities=[rogue],
        ),
    ):
        handle = await rc.start(
            start(
                BPF,
                "city-minato",
                code(settings, "city-minato", person),
                trigger="portal",
                inputs=INPUTS,
            )
        )
        await _until_waiting(rc, handle.id)
        await _as_citizen(rc, settings, handle, CONSENT)
        with pytest.raises(WorkflowFailureError) as failure:
            await handle.result()
    assert "the receipt is not sample-denki's" in str(failure.value.cause)
    assert taken and taken[0].sealed_subject is None and taken[0].subject == ""


@workflow.defn(name=BPF, sandboxed=False)
class Oversend:
    """An executor's own workflow with a real permit for the act (the citizen consented), which
    then sends the partner more than the act declared to the hub."""

    def __init__(self) -> None:
        self._proof: ConsentProof | None = None

    @workflow.signal(name="proof")
    def proof(self, proof: ConsentProof) -> None:
        self._proof = proof

    @workflow.run
    async def run(
        self, hub: str, partner: str, req: BrokerRequest, send: dict[str, Any], subject: str = ""
    ) -> str:
        await workflow.wait_condition(lambda: self._proof is not None)
        req = await as_resolved(hub, req, INPUTS)
        try:
            brokered: Brokered = await ask_hub(
                hub, "hub.broker", req.model_copy(update={"consent": self._proof}), Brokered
            )
        except ActivityError as err:
            return said(err)
        if not brokered.allowed:
            return f"not brokered: {brokered.reason}"
        linkage = LinkageRequest(
            **req.model_dump(
                include=set(LinkageRequest.model_fields),
                exclude={"subject", "permit", "sealed_subject", "send"},
            ),
            subject=subject,
            permit=brokered.permit,
            send=send,
        )
        try:
            await workflow.execute_activity(
                "act.electricity-move-notice",
                linkage,
                task_queue=partner,
                activity_id=req.step,
                start_to_close_timeout=timedelta(seconds=10),
                retry_policy=RetryPolicy(maximum_attempts=1),
                result_type=dict,
            )
        except ActivityError as err:
            return said(err)
        return "acted"


@pytest.mark.parametrize("permit_fields", [True, False], ids=["fields-named", "upgrading"])
async def test_a_partner_takes_nothing_beyond_what_the_action_takes(
    client, pool, settings, catalog, live_whitelist, permit_fields: bool
) -> None:
    """With a real permit (the citizen consented), an executor sends the partner a field more
    than the action takes (and than it declared to the hub): the partner's gate refuses it
    before the partner's code runs; declaring it to the hub is refused there. Sending its own
    code for the person in clear beside the lawful act: the partner is given no code.
    ``upgrading``: a hub whose permits name no fields (``RENKEI_PERMIT_FIELDS`` off during a
    rolling upgrade): the gate takes the lawful act and checks what it sends against the
    action's request alone."""
    settings = settings.model_copy(update={"permit_fields": permit_fields})
    found = await registry.fetch(pool, BPF, 1, "test")
    assert found is not None
    calls: list[LinkageRequest] = []

    async def notice(req: LinkageRequest) -> ActionReceipt:
        calls.append(req)
        return ActionReceipt(done=True, reference="x")

    person = _person(settings)
    minato = party_client(client, settings, ["city-minato"])
    queue = f"{settings.task_queue_prefix}.attacker"
    hub = keys.load(settings).signer()
    fields = ["customer_number", "moved_on", "new_address"]
    sent = {**INPUTS, "customer_number": "SD-0012345"}
    outcomes: dict[str, str] = {}
    ids: dict[str, str] = {}
    async with (
        workers(
            client,
            pool,
            settings,
            catalog,
            live_whitelist,
            agencies=("sample-denki",),
            providers={"sample-denki": {"electricity-move-notice": notice}},
        ),
        Worker(minato, task_queue=queue, workflows=[Oversend]),
    ):
        for case, declared, extra, clear in (
            ("hidden", fields, {"birth_date": "1980-01-01"}, ""),
            ("declared", [*fields, "birth_date"], {"birth_date": "1980-01-01"}, ""),
            # the act as declared, the executor's own code for the person beside it in clear
            ("code in clear", fields, {}, code(settings, "city-minato", person)),
        ):
            wid = workflow_id(BPF, "city-minato", f"oversend-{uuid.uuid4().hex[:8]}")
            req = BrokerRequest(
                trigger="portal",
                requester="city-minato",
                provider="sample-denki",
                task="move-one-stop",
                info="electricity-move-notice",
                subject=code(settings, "city-minato", person),
                bpf=BPF,
                bpf_version=1,
                content_hash=found.content_hash,
                step="notify",
                workflow_id=wid,
                run_id="",
                send_fields=declared,
            )
            handle = await minato.start_workflow(
                Oversend.run,
                args=[
                    hub_queue(settings.task_queue_prefix),
                    agency_queue(settings.task_queue_prefix, "sample-denki"),
                    req,
                    {**sent, **extra},
                    clear,
                ],
                id=wid,
                task_queue=queue,
            )
            run = handle.result_run_id or ""
            word = attest.citizen_response(
                hub, wid, run, "consent", CONSENT, code(settings, "city-minato", person)
            )
            await handle.signal(
                Oversend.proof, ConsentProof(step="consent", payload=CONSENT, attestation=word)
            )
            outcomes[case] = await handle.result()
            ids[case] = wid
    assert outcomes["hidden"].startswith("LinkageRefused") and "birth_date" in outcomes["hidden"]
    # declared to the hub beyond what the registered definition sends: refused, unrecorded
    assert (
        outcomes["declared"].startswith("LinkageRefused") and "birth_date" in outcomes["declared"]
    )
    assert [r for r in await records.query(pool, workflow_id=ids["declared"])] == []
    # the partner's code ran for the lawful act alone, and was given no one's code: a permit
    # with no sealed code gives none, whatever the executor puts in clear
    assert outcomes["code in clear"] == "acted"
    assert [c.subject for c in calls] == [""]
    # The partner recorded the attempt as refused, naming the field, never its value.
    wid = ids["hidden"]
    [kept] = [r for r in await records.query(pool, workflow_id=wid) if r.keeper == "sample-denki"]
    assert kept.outcome == "denied" and "birth_date" in kept.reason
    assert "1980" not in kept.reason


async def test_a_public_partner_under_a_law_gets_its_own_code_sealed_and_no_consent_is_asked(
    client, pool, settings, catalog, live_whitelist
) -> None:
    """An act to a public partner under a row of scope between-bodies (a test row and a test
    action: the shipped catalog has none): the hub permits it without consent and seals the
    partner's own code for the subject to it, which the partner's gate opens; the executor's
    code never reaches the partner."""
    from renkei.bpf.loader import load_file
    from whitelist import orgs, store
    from whitelist.models import Acting, Action, WhitelistRow

    action = Action(
        id="payment-stop-probe", ja="支給停止（試験）", en="Stop (probe)", request="GenericRecord"
    )
    test_catalog = catalog.model_copy(update={"actions": {**catalog.actions, action.id: action}})
    # jps carries out the test action: the org registry says so (whitelist.org_acts), as an
    # operator would (`renkei orgs add-act`); the running workers take it from there.
    basis = "試験用の根拠（法律の規定を想定）"
    await live_whitelist.wait_for_version(
        await orgs.add_act(
            pool,
            test_catalog,
            "jps",
            Acting(id=action.id, basis=basis),
            "test",
            "platform-operator",
            hub=hub_key(),
        )
    )
    row = WhitelistRow(
        id="test-partners/1",
        source="test-partners",
        item="試験用の根拠（法律の規定を想定）",
        requester_role="municipal-mayor",
        task="move-one-stop",
        provider_role="japan-pension-service",
        info=action.id,
        legal_text="試験用",
        valid_from=dt.date(2024, 4, 1),
    )
    await registry.register(
        pool, load_file(Path(__file__).parent / "definitions" / "public-act-probe.yaml")
    )
    got: list[LinkageRequest] = []

    async def stop(req: LinkageRequest) -> ActionReceipt:
        got.append(req)
        return ActionReceipt(done=True, reference="JPS-1")

    person = pick(settings, lambda h: h.municipality == "city-minato").members[0]
    await live_whitelist.wait_for_version(
        await store.upsert_rows(pool, [row], hub=keys.load(settings).signer())
    )
    # Both parties' PIAs for the task (the PIA gate): the samples' are for the shipped rows.
    await give_pias(pool, live_whitelist, test_catalog, [row], on=dt.date.today())
    try:
        async with workers(
            client,
            pool,
            settings,
            test_catalog,
            live_whitelist,
            agencies=("jps",),
            providers={"jps": {action.id: stop}},
        ):
            handle = await sdk(client, settings).start(
                start("public-act-probe", "city-minato", code(settings, "city-minato", person))
            )
            result = await handle.result()
    finally:
        await live_whitelist.wait_for_version(
            await store.delete_rows(pool, [row.id], hub=keys.load(settings).signer())
        )
        today = dt.datetime.now(JST).date()
        await live_whitelist.wait_for_version(
            await orgs.end_act(
                pool, "jps", action.id, today, "test", "platform-operator", hub=hub_key()
            )
        )
    assert result.outcome == "completed" and result.result == {"done": True}
    [req] = got
    assert req.subject == code(settings, "jps", person)  # its own code, opened from the seal
    assert req.send == {"attributes": {"reason": "probe"}}
    assert code(settings, "city-minato", person) not in req.model_dump_json()
    kept = {r.keeper: r for r in await records.query(pool, workflow_id=handle.id)}
    assert set(kept) == {"city-minato", records.HUB, "jps"}
    assert kept["jps"].subject_code == code(settings, "jps", person)
    assert all(r.whitelist_row == "test-partners/1" for r in kept.values())


async def test_a_long_flow_does_not_continue_as_new_between_the_consent_and_its_act(
    client, pool, settings, catalog, live_whitelist
) -> None:
    """The portal attests a consent for one run: a flow whose history grows long after the
    citizen consented keeps to that run until the act that needs the consent has run."""
    # (below the settings' floor of 20, as only a test may: every boundary is one to continue at)
    short = settings.model_copy(update={"history_limit": 5, "test_time_scale": 1e-4})
    rc = sdk(client, short)
    person = _person(settings)
    async with workers(client, pool, short, catalog, live_whitelist):
        handle = await rc.start(
            start(
                BPF,
                "city-minato",
                code(settings, "city-minato", person),
                trigger="portal",
                inputs=INPUTS,
            )
        )
        await _until_waiting(rc, handle.id)
        await _as_citizen(rc, settings, handle, CONSENT)
        result = await handle.result()
        runs = [
            e
            for e in (await handle.fetch_history()).events
            if e.HasField("workflow_execution_continued_as_new_event_attributes")
        ]
    assert result.outcome == "completed" and result.result["notified"] is True, result
    assert runs == []


@workflow.defn(name=BPF, sandboxed=False)
class ActAgain:
    """An executor's own workflow with a real permit for the act (the citizen consented), which
    asks the partner to carry it out again and again under that one permit (the same attempt)."""

    def __init__(self) -> None:
        self._proof: ConsentProof | None = None

    @workflow.signal(name="proof")
    def proof(self, proof: ConsentProof) -> None:
        self._proof = proof

    @workflow.run
    async def run(
        self,
        hub: str,
        partner: str,
        req: BrokerRequest,
        send: dict[str, Any],
        times: int,
        seconds: float = 10,
        pause: float = 0,
    ) -> list[str]:
        await workflow.wait_condition(lambda: self._proof is not None)
        req = await as_resolved(hub, req, INPUTS)
        try:
            brokered: Brokered = await ask_hub(
                hub, "hub.broker", req.model_copy(update={"consent": self._proof}), Brokered
            )
        except ActivityError as err:
            return said(err)
        assert brokered.allowed, brokered.reason
        linkage = LinkageRequest(
            **req.model_dump(
                include=set(LinkageRequest.model_fields),
                exclude={"subject", "permit", "sealed_subject", "send"},
            ),
            subject="",
            permit=brokered.permit,
            send=send,
        )
        out = []
        for n in range(times):
            if n and pause:
                await workflow.sleep(pause)
            try:
                got = await workflow.execute_activity(
                    "act.electricity-move-notice",
                    linkage,
                    task_queue=partner,
                    activity_id=req.step,  # the same attempt each time
                    start_to_close_timeout=timedelta(seconds=seconds),
                    retry_policy=RetryPolicy(maximum_attempts=1),
                    result_type=dict,
                )
                out.append(f"answered {got['answer']['reference']}")
            except ActivityError as err:
                out.append(said(err))
        return out


async def test_an_act_asked_again_under_one_permit_is_carried_out_once(
    client, pool, settings, catalog, live_whitelist
) -> None:
    """A permit is for one act. The executor asks the partner to carry out the consented move
    notice again and again under its one permit: the partner's code runs once, and each time
    after, the partner answers what it answered then (a retry after a lost reply gets its
    answer, and no second notice goes out). The partner's code failing (it did not carry the
    act out) leaves the attempt to be asked again. An act begun before whose end the partner
    does not know (its worker was killed mid-act) is not carried out again: refused; one that
    may still be under way (within the time of the attempt that began it, whatever time the ask
    again names) is asked again later. An act that outlives its time (the attempt's, within the
    partner's least and most) is cut off at it, so that asked again past that time it is
    refused, and never completes after that refusal; a requester naming a time shorter than the
    partner's least does not cut the act short: it is carried out, and asked again, answered.
    An answer the platform's database role plants for the attempt (sealed to the
    partner's public key, as anyone can) is not served as the partner's: refused, and nothing
    carried out."""
    from activities.attempts import attempt_key
    from renkei.kernel.sealing import seal

    partner = keys.load_org(settings, "sample-denki").public("sample-denki")

    found = await registry.fetch(pool, BPF, 1, "test")
    assert found is not None
    carried_out: list[str] = []
    failing = [True]
    slow: dict[str, Any] = {"now": False, "release": asyncio.Event(), "cut off": False}
    takes = [0.0]  # how long the partner's system takes to carry the act out

    async def notice(req: LinkageRequest) -> ActionReceipt:
        if failing.pop() if failing else False:
            raise RuntimeError("the partner's system is down: nothing was carried out")
        if slow["now"]:  # a partner's system that answers only once the test lets it
            try:
                await slow["release"].wait()
            except asyncio.CancelledError:
                slow["cut off"] = True
                raise
        await asyncio.sleep(takes[0])
        carried_out.append(req.step)
        return ActionReceipt(done=True, reference=f"SD-{len(carried_out)}")

    person = _person(settings)
    minato = party_client(client, settings, ["city-minato"])
    queue = f"{settings.task_queue_prefix}.act-again"
    hub = keys.load(settings).signer()
    sent = {**INPUTS, "customer_number": "SD-0012345"}
    outcomes: dict[str, list[str]] = {}
    async with (
        workers(
            client,
            pool,
            # the partner gives an act at least 6 s, whatever its attempt's time
            settings.model_copy(update={"act_seconds_min": 6.0}),
            catalog,
            live_whitelist,
            agencies=("sample-denki",),
            providers={"sample-denki": {"electricity-move-notice": notice}},
        ),
        Worker(minato, task_queue=queue, workflows=[ActAgain]),
    ):
        for case, times in (
            ("again", 4),
            ("cut off", 1),
            ("under way", 1),
            ("begun for longer", 1),
            ("planted", 1),
            ("outlives", 2),
            ("short", 2),
        ):
            slow["now"] = case == "outlives"
            takes[0] = 2.0 if case == "short" else 0.0
            seconds, pause = {
                # a 2 s attempt, given 6 s by the partner, asked again 8 s after it timed out
                # (well past its time and margin, however late its note was written)
                "outlives": (2.0, 8.0),
                # a 1 s attempt for an act that takes 2 s, asked again 6 s after it timed out
                # (past the 1 s and its margin, but the partner gave the act its 6 s: 4 s to
                # spare for a busy machine, which would otherwise see the act cut off)
                "short": (1.0, 6.0),
                # begun a moment before it is asked again, with a minute's time: under way
                # however busy the machine (with 10 s, a busy one asked past the note's time)
                "under way": (60.0, 0.0),
            }.get(case, (10.0, 0.0))
            wid = workflow_id(BPF, "city-minato", f"again-{uuid.uuid4().hex[:8]}")
            req = BrokerRequest(
                trigger="portal",
                requester="city-minato",
                provider="sample-denki",
                task="move-one-stop",
                info="electricity-move-notice",
                subject=code(settings, "city-minato", person),
                bpf=BPF,
                bpf_version=1,
                content_hash=found.content_hash,
                step="notify",
                workflow_id=wid,
                run_id="",
                send_fields=["customer_number", "moved_on", "new_address"],
            )
            handle = await minato.start_workflow(
                ActAgain.run,
                args=[
                    hub_queue(settings.task_queue_prefix),
                    agency_queue(settings.task_queue_prefix, "sample-denki"),
                    req,
                    sent,
                    times,
                    seconds,
                    pause,
                ],
                id=wid,
                task_queue=queue,
            )
            run = handle.result_run_id or ""
            key = attempt_key(wid, run, "notify")
            if case == "cut off":  # the partner's note of an act whose end it never saw
                await pool.execute(
                    "INSERT INTO records.act_runs (keeper, attempt_key, begun_at)"
                    " VALUES ($1, $2, now() - interval '1 day')",
                    "sample-denki",
                    key,
                )
            elif case == "under way":  # begun a moment ago, by an ask still running
                await pool.execute(
                    "INSERT INTO records.act_runs (keeper, attempt_key) VALUES ($1, $2)",
                    "sample-denki",
                    key,
                )
            elif case == "begun for longer":  # begun 30 s ago by an ask with an hour's time:
                # asked again with less (10 s), it is still under way, not refused while it runs
                await pool.execute(
                    "INSERT INTO records.act_runs (keeper, attempt_key, begun_at, deadline)"
                    " VALUES ($1, $2, now() - interval '30 seconds', now() + interval '1 hour')",
                    "sample-denki",
                    key,
                )
            elif case == "planted":  # the platform's role plants an answer sealed to the partner
                planted = seal(
                    partner.sealer(),
                    partner.sealing_id,
                    b'{"done": true, "reference": "PLANTED"}',
                    f"renkei/act-answer/v1|{key}",
                )
                await pool.execute(
                    "INSERT INTO records.act_runs (keeper, attempt_key, answer)"
                    " VALUES ($1, $2, $3)",
                    "sample-denki",
                    key,
                    {"sealed": planted.model_dump(), "signature": ""},
                )
            word = attest.citizen_response(
                hub, wid, run, "consent", CONSENT, code(settings, "city-minato", person)
            )
            await handle.signal(
                ActAgain.proof, ConsentProof(step="consent", payload=CONSENT, attestation=word)
            )
            outcomes[case] = await handle.result()
            if case == "outlives":  # the partner's system would answer now: too late
                slow["release"].set()
                await asyncio.sleep(0.5)
    first, *again = outcomes["again"]
    assert "down" in first, first
    assert again == ["answered SD-1"] * 3, again
    [refused] = outcomes["cut off"]
    assert refused.startswith("LinkageRefused") and "at most once" in refused, refused
    [later] = outcomes["under way"]  # not the provider's refusal: the step asks again
    assert later.startswith("ProviderError") and "under way" in later, later
    [longer] = outcomes["begun for longer"]  # judged by the time it was begun with
    assert longer.startswith("ProviderError") and "under way" in longer, longer
    [planted] = outcomes["planted"]
    assert planted.startswith("LinkageRefused") and "not its own" in planted, planted
    _, asked_later = outcomes["outlives"]
    assert asked_later.startswith("LinkageRefused") and "at most once" in asked_later, outcomes
    assert slow["cut off"]  # its code was stopped at the attempt's time, not left to finish
    timed_out, answered = outcomes["short"]  # the requester's attempt ended, the act did not
    assert "answered" not in timed_out, outcomes
    assert answered == "answered SD-2", outcomes
    assert len(carried_out) == 2  # the one notice of the first case, and the short one's


async def test_an_acts_kept_answer_stays_the_partners_own_across_a_rotation_of_its_keys(
    pool, settings, catalog, live_whitelist
) -> None:
    """The partner keeps the answer of an act it carried out, tagged under its own sealing key,
    so that asked again it answers that and carries nothing out. Its keys rotated between the
    act and the ask again (a new signing key, a new sealing key, the old one kept as former),
    the kept answer is still its own: answered, not refused. An answer tagged under a key that
    is not the partner's (the platform's role planting one, sealed to the partner's public key
    as anyone can) is refused."""
    import base64

    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
    from temporalio.exceptions import ApplicationError

    from activities.gate import Attempt, WhitelistGate, _act_message, _act_tag
    from renkei.kernel.sealing import seal

    def gate(org_keys: keys.OrgKeys) -> WhitelistGate:
        return WhitelistGate("sample-denki", catalog, live_whitelist, pool, org_keys)

    def fresh_x25519() -> str:
        return base64.b64encode(X25519PrivateKey.generate().private_bytes_raw()).decode()

    before = keys.load_org(settings, "sample-denki")
    rotated = before.model_copy(
        update={
            "signing_key": base64.b64encode(os.urandom(32)).decode(),
            "sealing_key": fresh_x25519(),
            "former_sealing_keys": [before.sealing_key, *before.former_sealing_keys],
        }
    )
    answer = {"done": True, "reference": "SD-ROTATED"}
    attempt = Attempt(
        f"move-one-stop/city-minato/rot-{uuid.uuid4().hex[:8]}",
        "r",
        "notify",
        timedelta(seconds=10),
    )
    first, token = gate(before), uuid.uuid4()
    assert not isinstance(await first._begin_act(attempt, first.act_time(attempt), token), dict)
    assert await first._end_act(attempt, answer, token)
    after = gate(rotated)
    assert await after._begin_act(attempt, after.act_time(attempt), uuid.uuid4()) == answer
    # a gate of the release before checks the signature the answer also carries
    kept = await pool.fetchval(
        "SELECT answer FROM records.act_runs WHERE keeper = $1 AND attempt_key = $2",
        "sample-denki",
        attempt.key,
    )
    assert attest.holds(
        before.signer().public_key(), kept["signature"], _act_message(attempt, answer)
    )
    # planted: sealed to the partner, tagged under a key of the planter's own
    planted_at = Attempt(attempt.workflow_id, "r2", "notify", timedelta(seconds=10))
    partner = rotated.public("sample-denki")
    planted = {"done": True, "reference": "PLANTED"}
    sealed = seal(
        partner.sealer(),
        partner.sealing_id,
        b'{"done": true, "reference": "PLANTED"}',
        f"renkei/act-answer/v1|{planted_at.key}",
    )
    stranger = X25519PrivateKey.generate()
    await pool.execute(
        "INSERT INTO records.act_runs (keeper, attempt_key, answer) VALUES ($1, $2, $3)",
        "sample-denki",
        planted_at.key,
        {"sealed": sealed.model_dump(), "tag": _act_tag(stranger, planted_at, planted)},
    )
    with pytest.raises(ApplicationError, match="not its own") as refused:
        await after._begin_act(planted_at, after.act_time(planted_at), uuid.uuid4())
    assert refused.value.type == "LinkageRefused"
    # planted: JSON's null, which is no note still open (asked again later, for ever)
    nulled = _act_attempt("null")
    await pool.execute(
        "INSERT INTO records.act_runs (keeper, attempt_key, answer) VALUES ($1, $2, 'null')",
        "sample-denki",
        nulled.key,
    )
    with pytest.raises(ApplicationError, match="not its own"):
        await after._begin_act(nulled, after.act_time(nulled), uuid.uuid4())


def _act_attempt(case: str) -> Any:
    """A fresh attempt at the move notice's act, as its partner's gate sees one."""
    from activities.gate import Attempt

    return Attempt(
        f"move-one-stop/city-minato/{case}-{uuid.uuid4().hex[:8]}",
        "r",
        "notify",
        timedelta(seconds=10),
    )


async def test_an_act_that_ends_after_an_ask_again_was_refused_keeps_no_answer(
    pool, settings, catalog, live_whitelist
) -> None:
    """An act asked again past its time (and the margin) is refused as cut off: whether it
    took effect no one knows. Its run, ending only then (code that blocked past its cut-off, a
    database out of reach until then), keeps no answer: the refusal is the act's last word, and
    an ask again after it is refused as well, never answered. Its note cannot be taken back
    either (a failure reported late). The database holds to it too, whatever release of the
    gate writes (migration 0065): past the cut-off and its margin, no answer but the refusal is
    written to the note, and the note is not removed."""
    from temporalio.exceptions import ApplicationError

    from activities.gate import MARGIN, WhitelistGate

    gate = WhitelistGate(
        "sample-denki",
        catalog,
        live_whitelist,
        pool,
        keys.load_org(settings, "sample-denki"),
        act_seconds=(0.5, 0.5),
    )
    for late in ("answer", "failure", "a gate from before"):
        attempt = _act_attempt("late")
        token = uuid.uuid4()
        assert not isinstance(await gate._begin_act(attempt, gate.act_time(attempt), token), dict)
        await asyncio.sleep(0.5 + MARGIN.total_seconds() + 0.5)
        if late == "a gate from before":  # it writes no refusal, and keeps with no condition
            for statement in (
                "UPDATE records.act_runs SET answer = '{\"sealed\": {}}'"
                " WHERE keeper = $1 AND attempt_key = $2",
                "DELETE FROM records.act_runs WHERE keeper = $1 AND attempt_key = $2",
            ):
                with pytest.raises(asyncpg.InsufficientPrivilegeError, match="cut off"):
                    await pool.execute(statement, "sample-denki", attempt.key)
            continue
        for _ in range(2):  # refused as cut off, before the run ends and after
            with pytest.raises(ApplicationError, match="at most once") as refused:
                await gate._begin_act(attempt, gate.act_time(attempt), uuid.uuid4())
            assert refused.value.type == "LinkageRefused"
            if late == "answer":  # the run ends now, with its answer: not kept
                assert not await gate._end_act(attempt, {"done": True, "reference": "L"}, token)
            else:  # the run ends now, failing: its note is not taken back
                assert not await gate._end_act(attempt, None, token)


async def test_a_lost_reply_from_the_database_neither_orphans_an_act_nor_runs_it_twice(
    pool, settings, catalog, live_whitelist
) -> None:
    """The gate asks the database again when a reply is lost. Its note written by a try whose
    reply was lost is its own (the run's token): the act runs, rather than being told "under
    way" and later refused with nothing carried out. A run whose failure removed its note, and
    whose removal is asked again after a lost reply, does not remove the note another run wrote
    meanwhile: that act is not carried out a second time."""
    from activities.gate import WhitelistGate

    gate = WhitelistGate(
        "sample-denki", catalog, live_whitelist, pool, keys.load_org(settings, "sample-denki")
    )
    attempt = _act_attempt("lost")
    mine = uuid.uuid4()
    # the first try's note committed, its reply lost: the try again finds it
    await pool.execute(
        "INSERT INTO records.act_runs (keeper, attempt_key, deadline, run_token)"
        " VALUES ($1, $2, now() + interval '60 seconds', $3)",
        "sample-denki",
        attempt.key,
        mine,
    )
    begun = await gate._begin_act(attempt, gate.act_time(attempt), mine)
    assert isinstance(begun, float)  # its act runs (another run's ask is "under way")
    # its code fails: the note is removed; the removal's reply lost, another run writes its note
    assert await gate._end_act(attempt, None, mine)
    other = uuid.uuid4()
    assert isinstance(await gate._begin_act(attempt, gate.act_time(attempt), other), float)
    assert not await gate._end_act(attempt, None, mine)  # the removal asked again
    token = await pool.fetchval(
        "SELECT run_token FROM records.act_runs WHERE keeper = $1 AND attempt_key = $2",
        "sample-denki",
        attempt.key,
    )
    assert token == other  # the other run's note stands, and its act runs once
