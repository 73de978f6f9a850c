"""``renkei demo``: run the sample flows against the stack and show what happened."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import Callable
from typing import Any

import asyncpg
from temporalio.client import WorkflowFailureError

from activities.agencies import SAMPLE_AGENCIES
from activities.agencies.synthetic import Household, generate
from activities.agencies.synthetic import people as people_of
from renkei.app import billing
from renkei.app.client import RenkeiClient
from renkei.bpf.loader import BpfFileError, load_file
from renkei.bpf.validation import validate
from renkei.contracts.messages import StartFlow
from renkei.contracts.names import LIFE_EVENT_SCAN, control_queue, scan_workflow_id
from renkei.kernel import keys, records
from renkei.kernel.pseudonyms import derive_code
from renkei.kernel.settings import Settings
from whitelist import store
from whitelist.catalog import default_catalog
from whitelist.decide import JST


def _pick(households: list[Household], test: Callable[[Household], bool]) -> Household:
    return next(h for h in households if test(h))


def demo_cases(settings: Settings, run_tag: str) -> list[tuple[str, StartFlow]]:
    """The sample flows, with subjects picked from the synthetic residents."""
    hh = generate(settings.sample_residents)
    key = keys.load(settings).hub_key

    def code(org: str, subject: uuid.UUID) -> str:
        return derive_code(key, org, subject)

    couple = _pick(hh, lambda h: h.kind == "family" and h.municipality == "city-minato")
    single = _pick(hh, lambda h: h.kind == "single-parent" and h.municipality == "city-minato")
    insured = next(
        p for h in hh for p in h.members if h.municipality == "city-minato" and p.medical_payments
    )
    parent = _pick(hh, lambda h: h.kind == "family" and h.municipality == "city-shibuya")
    head, spouse = couple.members[0], couple.members[1]
    return [
        (
            "child-rearing allowance, applicant living with a spouse (both incomes counted)",
            StartFlow(
                bpf="child-rearing-allowance-income-check",
                executor="pref-tokyo",
                subject=code("pref-tokyo", head.subject_id),
                inputs={
                    "spouse": code("pref-tokyo", spouse.subject_id),
                    "municipality": "city-minato",
                },
                trigger="counter",
                case_ref=f"demo-{run_tag}-cra-1",
            ),
        ),
        (
            "child-rearing allowance, single parent (own income only)",
            StartFlow(
                bpf="child-rearing-allowance-income-check",
                executor="pref-tokyo",
                subject=code("pref-tokyo", single.members[0].subject_id),
                inputs={"municipality": "city-minato"},
                trigger="portal",
                case_ref=f"demo-{run_tag}-cra-2",
            ),
        ),
        (
            "vaccination relief: medical benefits already paid by the insurer",
            StartFlow(
                bpf="vaccination-relief-medical-check",
                executor="city-minato",
                subject=code("city-minato", insured.subject_id),
                inputs={"insurer": "kyokai-kenpo", "claimed_amount": 500000},
                trigger="counter",
                case_ref=f"demo-{run_tag}-vac-1",
            ),
        ),
        (
            "child allowance: previous municipality and pension body in parallel",
            StartFlow(
                bpf="child-allowance-check",
                executor="city-minato",
                subject=code("city-minato", parent.members[0].subject_id),
                inputs={"previous_municipality": "city-shibuya"},
                trigger="counter",
                case_ref=f"demo-{run_tag}-ca-1",
            ),
        ),
        (
            "runtime denial: the 'municipality' input names the pension body instead",
            StartFlow(
                bpf="child-rearing-allowance-income-check",
                executor="pref-tokyo",
                subject=code("pref-tokyo", single.members[0].subject_id),
                inputs={"municipality": "jps"},
                trigger="counter",
                case_ref=f"demo-{run_tag}-cra-denied",
            ),
        ),
    ]


async def run_demo(
    settings: Settings, pool: asyncpg.Pool, client: RenkeiClient, out: Callable[[str], Any] = print
) -> int:
    """Run every sample flow; return the number of flows whose outcome was unexpected."""
    tag = uuid.uuid4().hex[:8]
    unexpected = 0
    out("renkei demo — sample flows on the embedded stack\n")
    for title, start in demo_cases(settings, tag):
        out(f"▶ {title}")
        out(f"  BPF {start.bpf}, executor {start.executor}, trigger {start.trigger}")
        handle = await client.start(start)
        try:
            result = await handle.result()
            out(f"  outcome: {result.outcome}" + (f" ({result.reason})" if result.reason else ""))
            if result.result:
                out(f"  result: {result.result}")
            out(
                f"  definition: {result.pin.bpf} v{result.pin.version} {result.pin.content_hash[:19]}…"
            )
            unexpected += "denial" in title
        except WorkflowFailureError as err:
            cause = err.cause
            out(f"  outcome: FAILED — {getattr(cause, 'message', cause)}")
            unexpected += "denial" not in title
        recs = await records.query(pool, workflow_id=handle.id)
        out(f"  access records ({len(recs)}):")
        for r in recs:
            out(
                f"    {r.keeper:>13} #{r.chain_seq or '-'!s:<4} {r.outcome:7} {r.requester} → {r.provider}: {r.info} for {r.task}"
                f" [{r.legal_reference or 'no row'}] step {r.step}"
            )
        out(f"  Temporal UI: {settings.run_link(handle.id, handle.result_run_id)}\n")

    out("▶ static check: a definition outside the whitelist never registers")
    path = settings.definitions_dir / "nonconformant" / "child-allowance-medical-peek.yaml"
    try:
        loaded = load_file(path, display_name=f"definitions/nonconformant/{path.name}")
        issues = validate(loaded, default_catalog(), await store.load_index(pool))
    except BpfFileError as err:
        issues = err.issues
    errors = [i for i in issues if i.severity == "error"]
    for i in errors:
        out(f"  rejected: {i}")
    unexpected += not errors
    out("")
    unexpected += await _long_running(settings, pool, client, tag, out)
    unexpected += await _trust(settings, pool, client, f"demo-{tag}-cra-1", out)
    return unexpected


async def _long_running(
    settings: Settings,
    pool: asyncpg.Pool,
    client: RenkeiClient,
    tag: str,
    out: Callable[[str], Any],
) -> int:
    """A portal application waiting for the citizen's consent; a life-event scan; a notice."""
    from activities.agencies.synthetic import REFERENCE_DATE
    from renkei.app.notifications import Notification, publish
    from renkei.contracts.messages import ScanRequest, ScanResult
    from renkei.kernel.pseudonyms import Pseudonyms
    from whitelist.catalog import default_catalog

    unexpected = 0
    hh = generate(settings.sample_residents)
    key = keys.load(settings).hub_key
    parent = _pick(hh, lambda h: h.kind == "family" and h.municipality == "city-shibuya").members[0]

    out("▶ portal application: the citizen previews the data and consents before it is used")
    applicant = derive_code(key, "city-minato", parent.subject_id)
    handle = await client.start(
        StartFlow(
            bpf="child-allowance-portal-application",
            executor="city-minato",
            subject=applicant,
            inputs={"previous_municipality": "city-shibuya"},
            trigger="portal",
            case_ref=f"demo-{tag}-portal-1",
        )
    )
    waiting = []
    for _ in range(100):
        waiting = await client.waiting(handle.id)
        if waiting:
            break
        await asyncio.sleep(0.1)
    if not waiting:
        out("  the flow never waited for consent")
        return 1
    w = waiting[0]
    shown = w.preview.get("tax", {})
    out(
        f"  waiting for {w.for_} at step {w.step} until {w.deadline.astimezone(JST):%Y-%m-%d %H:%M} JST"
        f" (reminder {w.remind_at.astimezone(JST):%Y-%m-%d} if no answer)"
        if w.remind_at
        else f"  waiting for {w.for_} at step {w.step}"
    )
    out(
        f"  the citizen is shown: taxable income {shown.get('taxable_income')} (FY{shown.get('fiscal_year')})"
    )
    from renkei.app.citizen import answer

    portal = keys.load(settings).signer()  # the citizen answers in their own portal session
    try:
        await client.respond(handle.id, "consent", {"agree": True}, by="citizen")
    except Exception as err:
        out(f"  an agency's answer in the citizen's name is refused: {err}")
    try:  # the consent is the citizen's (`by: citizen`): the agency's own answer is not taken
        await client.respond(handle.id, "consent", {"agree": True})
        out("  the agency's own answer to the citizen's consent was taken")
        unexpected += 1
    except Exception as err:
        out(f"  the agency's own answer is refused too: {err}")
    try:
        await answer(client, portal, handle.id, "consent", {"agree": "yes"}, applicant)
    except Exception as err:
        out(f"  a malformed answer is refused, and the flow keeps waiting: {err}")
    await answer(client, portal, handle.id, "consent", {"agree": True}, applicant)
    result = await handle.result()
    out(f"  consent given → outcome {result.outcome}: {result.result}\n")
    unexpected += result.outcome != "completed"

    out("▶ life event: the daily scan for residents turning 20 (national pension enrolment notice)")
    turning = next(
        p
        for p in people_of(hh)
        if p.municipality == "city-minato" and 16 <= p.age(REFERENCE_DATE) <= 17
    )
    day = turning.birth_date.replace(year=turning.birth_date.year + 20)
    for attempt in ("first run", "run again (a retry or a backfill)"):
        scan: ScanResult = await client.client.execute_workflow(
            LIFE_EVENT_SCAN,
            ScanRequest(
                bpf="coming-of-age-pension-notice",
                executor="city-minato",
                age=20,
                on="birthday",
                day=day,
            ).attested(portal),  # run by hand, by the platform's operator
            id=scan_workflow_id(
                "coming-of-age-pension-notice", "city-minato", f"demo-{tag}-{attempt[:5].strip()}"
            ),
            task_queue=control_queue(settings.task_queue_prefix, "city-minato"),
            result_type=ScanResult,
        )
        out(
            f"  {attempt}: {day} → {scan.found} resident(s) found, {scan.started} flow(s) started,"
            f" {scan.already} already started"
        )
    unexpected += scan.started != 0
    schedules = [
        s.id async for s in await client.client.list_schedules() if s.id.startswith("life-event/")
    ]
    out(f"  schedules: {len(schedules)} life-event schedules (`renkei schedules sync`)\n")

    out("▶ change notification: a death notice, delivered twice, processed once")
    hub = Pseudonyms(pool, key)
    recipient = _pick(hh, lambda h: h.kind == "family" and h.municipality == "city-minato").members[
        0
    ]
    notice = Notification(
        publisher="city-minato",
        event_id=f"demo-{tag}-death-1",
        event="death",
        subject=derive_code(key, "city-minato", recipient.subject_id),
        occurred_on=REFERENCE_DATE,
    )
    for delivery in ("first delivery", "second delivery"):
        done = await publish(client.client, pool, settings, default_catalog(), hub, notice)
        out(f"  {delivery}: {'duplicate, ' if done.duplicate else ''}flows {done.started}")
    try:
        stopped = await client.result(done.started[0]) if done.started else None
    except WorkflowFailureError as err:
        out(f"  the flow failed: {getattr(err.cause, 'message', err.cause)}\n")
        return unexpected + 1
    out(f"  {stopped.result if stopped else 'no flow'}\n")
    unexpected += stopped is None
    return unexpected


async def _trust(
    settings: Settings,
    pool: asyncpg.Pool,
    client: RenkeiClient,
    case: str,
    out: Callable[[str], Any],
) -> int:
    """Show the trust layer on the first flow: history encrypted, citizen's view, chains intact."""
    from temporalio.api.common.v1 import WorkflowExecution
    from temporalio.api.workflowservice.v1 import GetWorkflowExecutionHistoryRequest

    from renkei.app.citizen import records_of
    from renkei.kernel.channels import CHANNEL, ENCODING
    from renkei.kernel.pseudonyms import PORTAL, Pseudonyms

    unexpected = 0
    k = keys.load(settings)
    head = _pick(
        generate(settings.sample_residents),
        lambda h: h.kind == "family" and h.municipality == "city-minato",
    ).members[0]
    wid = f"child-rearing-allowance-income-check/pref-tokyo/{case}"

    out("▶ encrypted history: the run's start input, as Temporal stores it")
    history = await client.client.workflow_service.get_workflow_execution_history(
        GetWorkflowExecutionHistoryRequest(
            namespace=settings.namespace, execution=WorkflowExecution(workflow_id=wid)
        )
    )
    first = history.history.events[0].workflow_execution_started_event_attributes.input.payloads[0]
    raw = history.history.SerializeToString()
    leaked = derive_code(k.hub_key, "pref-tokyo", head.subject_id).encode() in raw
    out(
        f"  encoding {first.metadata['encoding'].decode()}, sealed between"
        f" {' and '.join(sorted(set(first.metadata[CHANNEL].decode().split(',')[::2])))},"
        f" {len(first.data)} bytes of ciphertext; subject code in the raw history:"
        f" {'YES' if leaked else 'no'}"
    )
    unexpected += leaked or first.metadata["encoding"] != ENCODING
    out(f"  operators decrypt through the codec server: {settings.codec_endpoint}\n")

    out("▶ the citizen's view: what the applicant of the first flow sees (portal code sign-in)")
    portal_code = derive_code(k.hub_key, PORTAL, head.subject_id)
    mine = await records_of(
        pool,
        Pseudonyms(pool, k.hub_key),
        default_catalog(),
        portal_code,
        hub=k.signer().public_key(),
    )
    for r in mine[:5]:
        out(
            f"  {r.at.astimezone(JST):%Y-%m-%d %H:%M} JST {r.outcome:7} {r.requester.ja} ← {r.provider.ja}:"
            f" {r.info.ja} [{r.legal_reference or '—'}]"
        )
    out(f"  ({len(mine)} records in all; `renkei records mine` or {settings.web_base}/citizen)\n")
    unexpected += not mine

    out("▶ tamper evidence: every party witnesses the others' chain heads, then verify")
    made = await records.checkpoint(pool, k.signer())  # the hub witnesses every org's chain
    for org in SAMPLE_AGENCIES:  # each org, with its own key, the hub's chain and its own
        own = keys.load_org(settings, org)
        made += await records.checkpoint(pool, records.RecordSigner(org, own.signer()))
    result = await records.verify(pool, k.signer().public_key())
    out(
        f"  {len(made)} witness signatures; {result.records} signed records in"
        f" {result.keepers} chains: {'intact' if result.ok else 'BROKEN'}"
    )
    for b in result.breaks:
        out(f"  BROKEN {b.keeper} at {b.chain_seq}: {b.problem}")
    unexpected += not result.ok
    out("")

    out("▶ billing: this month's invoices under the billing model (renkei billing report)")
    month = dt.datetime.now(JST).strftime("%Y-%m")
    model = billing.load_model(settings.tariff_file)
    bills = await billing.compute(pool, month, model)
    for org, bill in bills.items():
        charged = sum(x.charged for x in bill.lines)
        out(f"  {org:14} {bill.total:>8,} {bill.currency}  ({charged} charged)")
    out(
        f"  payee {model.payee}; counted from"
        f" {len({c.keeper for b in bills.values() for c in b.chains})} chains\n"
    )
    return unexpected


async def _main() -> None:  # pragma: no cover - used by `python -m renkei.demo`
    raise SystemExit("use `renkei demo`")


if __name__ == "__main__":  # pragma: no cover
    asyncio.run(_main())
