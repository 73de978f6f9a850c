"""The conformance kit: a BPF version, or a provider, checked before anything runs for real.

**Scenarios** (``definitions/conformance/<bpf>.yaml``, or ``--scenarios DIR``) give a BPF's
executor, symbolic subjects, inputs, each provider's behaviour (an answer, no match, a failure,
a delay) and the expected outcome and linkages. The kit runs every scenario through the real
interpreter, the real hub and the real whitelist interceptors, in test mode on task queues of
its own, with stub providers; and checks the outcome, the result, the exact linkages, that every
party kept its record, that nothing outside the whitelist was attempted, and that every answer
matches its info item's schema. The report (JSON) is hashed; a passing report is stored with the
version, and ``renkei bpf submit`` requires one for exactly the version's content.

**Provider contracts**: :func:`check_provider` runs an org's own provider implementations against
the contract of each info item it serves: answers validate against the item's schema, a subject
the provider does not hold is a non-retryable ``NoMatch`` (or an answer that says so within the
schema, such as "not insured"), and the whitelist gate refuses a request no row permits before
the provider's code runs.

Symbolic subjects: ``"@name"`` in inputs stands for that subject's code at the executor; in a stub
answer, for its code at the answering provider.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import json
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Literal

import asyncpg
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from temporalio.client import Client, WorkflowFailureError
from temporalio.exceptions import ApplicationError

from activities.linkage import Provider
from renkei.app.client import RenkeiClient
from renkei.bpf import registry
from renkei.bpf.models import BpfDefinition, Duration
from renkei.contracts.messages import FlowResult, LinkageRequest, StartFlow
from renkei.contracts.provider import NoMatch
from renkei.kernel import keys, records
from renkei.kernel.pseudonyms import Pseudonyms, derive_code
from renkei.kernel.settings import PACKAGE_DIR, Settings
from whitelist.models import Catalog
from whitelist.payloads import SCHEMAS, GenericRecord
from whitelist.store import LiveWhitelist
from workers.assembly import running_workers
from workflows.life_events import cohort_for

KIT_VERSION = "1"
KIT_TIME_SCALE = 1e-6
# Scenarios that answer a wait run slower: the answer ends the wait, and the deadline stays far
# enough away (a 30-day wait: about 4 minutes) that a busy machine never misses it.
ANSWERING_TIME_SCALE = 1e-4
SCENARIOS_DIR = PACKAGE_DIR / "definitions" / "conformance"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Behaviour(_Strict):
    """What a stub provider does for one info item."""

    respond: dict[str, Any] | None = None
    no_match: bool = Field(default=False, alias="no-match")
    fail: Literal["always"] | int | None = Field(
        default=None, description="'always', or fail this many times and then respond"
    )
    delay: Duration | None = None


class ExpectedLinkage(_Strict):
    step: str
    provider: str
    info: str
    outcome: Literal["provided", "denied", "failed", "cancelled"]


class Expectation(_Strict):
    outcome: Literal["completed", "rejected", "denied", "failed"]
    result: dict[str, Any] = Field(default_factory=dict, description="these keys, these values")
    reason_contains: str | None = Field(default=None, alias="reason-contains")
    linkages: list[ExpectedLinkage] = Field(default_factory=list)


class ScriptedResponse(_Strict):
    """What the respondent answers when the flow waits at ``step`` (none: the wait times out)."""

    step: str
    payload: dict[str, Any] = Field(default_factory=dict)
    refused: str | None = Field(
        default=None, description="expect the flow to refuse this payload, saying this"
    )


class Scenario(_Strict):
    name: str
    executor: str
    subjects: list[str] = Field(default_factory=lambda: ["applicant"], min_length=1)
    inputs: dict[str, Any] = Field(default_factory=dict)
    providers: dict[str, dict[str, Behaviour]] = Field(default_factory=dict)
    responses: list[ScriptedResponse] = Field(default_factory=list)
    expect: Expectation


class ScenarioSet(_Strict):
    bpf: str
    scenarios: list[Scenario] = Field(min_length=1)


class ScenarioResult(BaseModel):
    name: str
    passed: bool
    outcome: str
    linkages: list[ExpectedLinkage]
    problems: list[str]
    workflow_id: str


class Report(BaseModel):
    kit_version: str = KIT_VERSION
    bpf: str
    version: int
    content_hash: str
    passed: bool
    scenarios: list[ScenarioResult]

    def digest(self) -> str:
        body = self.model_dump(mode="json", exclude={"scenarios": {"__all__": {"workflow_id"}}})
        canonical = json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()

    def summary(self) -> str:
        lines = [
            f"{self.bpf} v{self.version} ({self.content_hash[:19]}…): conformance kit {KIT_VERSION}"
        ]
        for s in self.scenarios:
            lines.append(f"  {'PASS' if s.passed else 'FAIL'}  {s.name}  → {s.outcome}")
            lines.extend(f"        {p}" for p in s.problems)
        passed = sum(s.passed for s in self.scenarios)
        lines.append(
            f"{passed}/{len(self.scenarios)} scenarios passed: {'PASSED' if self.passed else 'FAILED'}"
        )
        return "\n".join(lines)


def load_scenarios(path: Path) -> ScenarioSet:
    from ruamel.yaml import YAML

    try:
        return ScenarioSet.model_validate(YAML(typ="safe").load(path.read_text(encoding="utf-8")))
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors()
        )
        raise ValueError(f"{path}: {problems}") from None


def scenarios_for(bpf: str, directory: Path | None = None) -> ScenarioSet:
    path = (directory or SCENARIOS_DIR) / f"{bpf}.yaml"
    if not path.exists():
        raise FileNotFoundError(f"no scenario set for {bpf} at {path}")
    found = load_scenarios(path)
    if found.bpf != bpf:
        raise ValueError(f"{path} is the scenario set of {found.bpf}, not {bpf}")
    return found


# -- running scenarios --


class _Stubs:
    """Stub providers for one scenario; answers are validated against the item's schema."""

    def __init__(
        self, scenario: Scenario, catalog: Catalog, code_at: Callable[[str, str], str]
    ) -> None:
        self.scenario = scenario
        self.catalog = catalog
        self.code_at = code_at
        self.calls: dict[tuple[str, str], int] = {}
        self.problems: list[str] = []

    def _answer(self, org: str, info: str, body: dict[str, Any]) -> BaseModel:
        schema = SCHEMAS.get(self.catalog.info_items[info].schema_name, GenericRecord)

        def resolve(node: Any) -> Any:
            if isinstance(node, str) and node.startswith("@"):
                return self.code_at(node[1:], org)
            if isinstance(node, dict):
                return {k: resolve(v) for k, v in node.items()}
            if isinstance(node, list):
                return [resolve(v) for v in node]
            return node

        return schema.model_validate(resolve(body))

    def providers(self, org: str) -> dict[str, Provider]:
        out: dict[str, Provider] = {}
        for info, behaviour in self.scenario.providers.get(org, {}).items():
            out[info] = self._stub(org, info, behaviour)
        return out

    def _stub(self, org: str, info: str, b: Behaviour) -> Provider:
        async def stub(req: LinkageRequest) -> BaseModel:
            n = self.calls[(org, info)] = self.calls.get((org, info), 0) + 1
            if b.delay:
                await asyncio.sleep(b.delay.total_seconds())
            if b.fail == "always" or (isinstance(b.fail, int) and n <= b.fail):
                raise ApplicationError(
                    f"{org} failed (scenario)",
                    type="ProviderError",
                    non_retryable=b.fail == "always",
                )
            if b.no_match:
                raise ApplicationError(
                    f"{org} holds no {info} for this subject", type="NoMatch", non_retryable=True
                )
            return self._answer(org, info, b.respond or {})

        return stub

    def check_answers(self) -> None:
        """Every scripted answer must fit its item's schema, even if the flow never asks."""
        for org, items in self.scenario.providers.items():
            for info, b in items.items():
                if info not in self.catalog.info_items:
                    self.problems.append(f"providers.{org}.{info}: no such info item")
                    continue
                if b.respond is not None:
                    try:
                        self._answer(org, info, b.respond)
                    except ValidationError as err:
                        self.problems.append(
                            f"providers.{org}.{info}: the answer does not fit the schema: "
                            + "; ".join(e["msg"] for e in err.errors())
                        )


async def run_scenarios(
    client: Client,
    pool: asyncpg.Pool,
    settings: Settings,
    catalog: Catalog,
    whitelist: LiveWhitelist,
    bpf: str,
    version: int | None,
    scenario_set: ScenarioSet,
    *,
    on_run: Callable[[str, str], Awaitable[None]] | None = None,
) -> Report:
    """Run every scenario of ``scenario_set`` against ``bpf`` (test mode, own task queues)."""
    found = await registry.fetch(pool, bpf, version, "test")
    if found is None:
        raise LookupError(f"{bpf} version {version or 'latest'} is not registered")
    d = found.definition
    kit = settings.model_copy(
        update={
            "mode": "test",
            "task_queue_prefix": f"conformance-{uuid.uuid4().hex[:10]}",
            # a 30-day wait lasts about 2.6 seconds when nobody answers: timeouts are part of
            # the scenarios
            "test_time_scale": KIT_TIME_SCALE,
        }
    )
    hub_key = keys.load(settings).hub_key
    results: list[ScenarioResult] = []
    for scenario in scenario_set.scenarios:
        subjects = {name: uuid.uuid4() for name in scenario.subjects}
        await Pseudonyms(pool, hub_key).enroll(list(subjects.values()), sorted(catalog.orgs))

        def code_at(name: str, org: str, subjects: dict[str, uuid.UUID] = subjects) -> str:
            return derive_code(hub_key, org, subjects[name])

        stubs = _Stubs(scenario, catalog, code_at)
        stubs.check_answers()
        paced = (
            kit.model_copy(update={"test_time_scale": ANSWERING_TIME_SCALE})
            if scenario.responses
            else kit
        )
        async with running_workers(
            client,
            pool,
            paced,
            catalog,
            whitelist,
            agencies=sorted(catalog.orgs),
            providers=stubs.providers,
        ):
            result = await _run_one(client, pool, paced, d, scenario, stubs, code_at)
        if on_run is not None:
            await on_run(scenario.name, result.workflow_id)
        results.append(result)
    return Report(
        bpf=d.bpf,
        version=d.version,
        content_hash=found.content_hash,
        passed=all(r.passed for r in results),
        scenarios=results,
    )


async def _run_one(
    client: Client,
    pool: asyncpg.Pool,
    kit: Settings,
    d: BpfDefinition,
    scenario: Scenario,
    stubs: _Stubs,
    code_at: Callable[[str, str], str],
) -> ScenarioResult:
    problems = list(stubs.problems)
    inputs = {
        k: code_at(v[1:], scenario.executor) if isinstance(v, str) and v.startswith("@") else v
        for k, v in scenario.inputs.items()
    }
    kinds = d.trigger_kinds()
    trigger = next((t for t in kinds if t in ("counter", "portal")), kinds[0])
    start = StartFlow(
        bpf=d.bpf,
        version=d.version,
        executor=scenario.executor,
        subject=code_at(scenario.subjects[0], scenario.executor),
        inputs=inputs,
        trigger=trigger,
        case_ref=f"conformance-{uuid.uuid4().hex[:12]}",
    )
    sdk = RenkeiClient(client, kit)
    handle = await sdk.start(start)
    outcome: str
    flow: FlowResult | None = None
    reason = ""
    answering = asyncio.create_task(_answer(sdk, handle.id, scenario.responses, problems))
    try:
        flow = await asyncio.wait_for(handle.result(), timeout=120)
        outcome = flow.outcome
        reason = flow.reason or ""
    except WorkflowFailureError as err:
        cause = err.cause
        if isinstance(cause, ApplicationError) and cause.type == "LinkageDenied":
            outcome = "denied"
        else:
            outcome = "failed"
        chain: list[str] = []
        node: BaseException | None = cause
        while node is not None:  # the flow's failure, then what caused it, down to the provider
            chain.append(getattr(node, "message", str(node)))
            node = node.__cause__ or getattr(node, "cause", None)
        reason = ": ".join(chain)
    finally:
        if not answering.done():
            answering.cancel()
            problems.append("the flow ended before every scripted response was given")
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await answering
    kept = await records.query(pool, workflow_id=handle.id)
    requester = [r for r in kept if r.keeper == scenario.executor]
    if flow is not None:
        observed = [
            ExpectedLinkage(step=x.step, provider=x.provider, info=x.info, outcome=x.outcome)
            for x in flow.linkages
        ]
    else:
        ran = await _activity_outcomes(handle)
        observed = [
            ExpectedLinkage(
                step=r.step,
                provider=r.provider,
                info=r.info,
                outcome="denied" if r.outcome == "denied" else ran.get(r.step, "cancelled"),
            )
            for r in requester
        ]
    exp = scenario.expect
    if outcome != exp.outcome:
        problems.append(f"outcome {outcome} ({reason}), expected {exp.outcome}")
    if exp.reason_contains and exp.reason_contains not in reason:
        problems.append(f"reason {reason!r} does not contain {exp.reason_contains!r}")
    if flow is not None:
        for key, value in exp.result.items():
            if flow.result.get(key) != value:
                problems.append(f"result.{key} = {flow.result.get(key)!r}, expected {value!r}")
    got = sorted(f"{x.step}/{x.provider}/{x.info}/{x.outcome}" for x in observed)
    want = sorted(f"{x.step}/{x.provider}/{x.info}/{x.outcome}" for x in exp.linkages)
    if got != want:
        problems.append(
            f"linkages differ: got {', '.join(got) or 'none'}; expected {', '.join(want) or 'none'}"
        )
    problems += _check_records(kept, scenario, exp)
    return ScenarioResult(
        name=scenario.name,
        passed=not problems,
        outcome=outcome,
        linkages=observed,
        problems=problems,
        workflow_id=handle.id,
    )


async def _answer(
    sdk: RenkeiClient, wid: str, script: list[ScriptedResponse], problems: list[str]
) -> None:
    """Answer each wait in turn, as the respondent would, as soon as the flow waits there."""
    from renkei.app.client import ResponseRefused

    for r in script:
        while not any(w.step == r.step for w in await sdk.waiting(wid)):  # noqa: ASYNC110
            await asyncio.sleep(0.05)  # the flow's state is remote: polled, as a portal would
        try:
            await sdk.respond(wid, r.step, r.payload)
            if r.refused is not None:
                problems.append(f"response to {r.step} was accepted, expected refused")
        except ResponseRefused as err:
            if r.refused is None or r.refused not in str(err):
                problems.append(f"response to {r.step} refused: {err}")


async def _activity_outcomes(handle: Any) -> dict[str, str]:
    """Each query activity's end, by step id, from the run's history."""
    scheduled: dict[int, str] = {}
    ended: dict[str, str] = {}
    history = await handle.fetch_history()
    for e in history.events:
        if e.HasField("activity_task_scheduled_event_attributes"):
            scheduled[e.event_id] = e.activity_task_scheduled_event_attributes.activity_id
        for field, outcome in (
            ("activity_task_completed_event_attributes", "provided"),
            ("activity_task_failed_event_attributes", "failed"),
            ("activity_task_timed_out_event_attributes", "failed"),
            ("activity_task_canceled_event_attributes", "cancelled"),
        ):
            if e.HasField(field):
                ended[scheduled[getattr(e, field).scheduled_event_id]] = outcome
    return ended


def _check_records(
    kept: list[records.AccessRecord], scenario: Scenario, exp: Expectation
) -> list[str]:
    problems: list[str] = []
    by_step: dict[str, dict[str, records.AccessRecord]] = {}
    for r in kept:
        by_step.setdefault(r.step, {})[r.keeper] = r
    for step, kept_by in sorted(by_step.items()):
        any_record = next(iter(kept_by.values()))
        for keeper in (scenario.executor, records.HUB):
            if keeper not in kept_by:
                problems.append(f"step {step}: no record kept by {keeper}")
        allowed = any_record.outcome == "allowed"
        if allowed and any_record.provider not in kept_by:
            problems.append(f"step {step}: the provider {any_record.provider} kept no record")
        if not allowed and not any(x.step == step and x.outcome == "denied" for x in exp.linkages):
            problems.append(f"step {step}: a linkage outside the whitelist was attempted")
    return problems


async def store_report(pool: asyncpg.Pool, report: Report) -> str:
    """Keep the report with its version; return its hash."""
    digest = report.digest()
    await pool.execute(
        "INSERT INTO registry.conformance_reports"
        " (bpf, version, content_hash, report_hash, passed, report)"
        " VALUES ($1, $2, $3, $4, $5, $6)",
        report.bpf,
        report.version,
        report.content_hash,
        digest,
        report.passed,
        report.model_dump(mode="json"),
    )
    return digest


# -- provider contracts --


class ContractCheck(BaseModel):
    org: str
    info: str
    check: str
    passed: bool
    detail: str = ""


async def _unknown_subject(
    org: str, info: str, provider: Provider, schema: type[BaseModel], req: LinkageRequest
) -> ContractCheck:
    check = "a subject it does not hold: NoMatch, or an answer that fits"
    try:
        answer = await provider(req)
        schema.model_validate(answer.model_dump(mode="json"))
    except NoMatch:
        return ContractCheck(org=org, info=info, check=check, passed=True, detail="")
    except ApplicationError as err:
        ok = err.type == "NoMatch" and err.non_retryable
        detail = "" if ok else f"raised {err.type} (non-retryable={err.non_retryable})"
        return ContractCheck(org=org, info=info, check=check, passed=ok, detail=detail)
    except Exception as err:
        return ContractCheck(
            org=org,
            info=info,
            check=check,
            passed=False,
            detail=f"raised {type(err).__name__}: {err}",
        )
    return ContractCheck(
        org=org, info=info, check=check, passed=True, detail="answers (e.g. 'not insured')"
    )


async def check_provider(
    org: str,
    providers: dict[str, Provider],
    catalog: Catalog,
    whitelist: LiveWhitelist,
    pool: asyncpg.Pool,
    known: dict[str, str],
) -> list[ContractCheck]:
    """Check ``org``'s providers against the contract of every info item it serves.

    ``known`` maps info items to a code the provider holds data for.
    """
    from activities.gate import provider_decision

    out: list[ContractCheck] = []
    served = catalog.orgs[org].serves
    for info in served:
        provider = providers.get(info)
        if provider is None:
            out.append(
                ContractCheck(
                    org=org,
                    info=info,
                    check="implemented",
                    passed=False,
                    detail=f"{org} serves {info} but has no provider for it",
                )
            )
            continue
        schema = SCHEMAS.get(catalog.info_items[info].schema_name, GenericRecord)

        cohort = schema.__name__ == "ResidentCohort"
        params = (
            cohort_for(18, "birthday", dt.date.today()).model_dump(mode="json") if cohort else {}
        )

        def request(
            subject: str, info: str = info, params: dict[str, Any] = params
        ) -> LinkageRequest:
            return LinkageRequest(
                requester="conformance-probe",
                provider=org,
                task="conformance",
                info=info,
                subject=subject,
                params=params,
                bpf="conformance",
                bpf_version=1,
                content_hash="-",
                step="probe",
            )

        if cohort:  # a register query about nobody in particular: its answer must fit
            known = {**known, info: "cohort"}
        if info in known:
            try:
                answer = await provider(request(known[info]))
                schema.model_validate(answer.model_dump(mode="json"))
                out.append(
                    ContractCheck(org=org, info=info, check="answer fits the schema", passed=True)
                )
            except ValidationError as err:
                out.append(
                    ContractCheck(
                        org=org,
                        info=info,
                        check="answer fits the schema",
                        passed=False,
                        detail="; ".join(
                            f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors()
                        ),
                    )
                )
            except Exception as err:
                out.append(
                    ContractCheck(
                        org=org,
                        info=info,
                        check="answer fits the schema",
                        passed=False,
                        detail=f"{type(err).__name__}: {err}",
                    )
                )
        unknown = "Z" * 20
        if not cohort:
            out.append(await _unknown_subject(org, info, provider, schema, request(unknown)))
        refused = provider_decision(
            org, catalog, whitelist.index, request(unknown), dt.datetime.now(dt.UTC)
        )
        out.append(
            ContractCheck(
                org=org,
                info=info,
                check="the gate refuses an unlisted requester",
                passed=not refused.allowed,
                detail=refused.reason,
            )
        )
    return out


async def promote_samples(
    client: Client,
    pool: asyncpg.Pool,
    settings: Settings,
    catalog: Catalog,
    whitelist: LiveWhitelist,
    directory: Path | None = None,
) -> list[str]:
    """Take every shipped draft with a scenario set, and no operating version, to operating.

    Each step is the real one: the kit runs and its report is stored; then the definer submits,
    the conformance body approves and an executor puts it into operation, each transition
    recorded with a note saying it was the start-up of a fresh installation.
    """
    done: list[str] = []
    rows = await pool.fetch(
        "SELECT v.bpf, v.version FROM registry.bpf_versions v WHERE v.state = 'draft'"
        " AND NOT EXISTS (SELECT 1 FROM registry.bpf_versions o"
        "  WHERE o.bpf = v.bpf AND o.state = 'operating') ORDER BY v.bpf, v.version"
    )
    note = "sample definition, promoted at start-up after passing the conformance kit"
    for row in rows:
        try:
            scenario_set = scenarios_for(row["bpf"], directory)
        except FileNotFoundError:
            continue
        report = await run_scenarios(
            client, pool, settings, catalog, whitelist, row["bpf"], row["version"], scenario_set
        )
        await store_report(pool, report)
        if not report.passed:
            done.append(f"{row['bpf']} v{row['version']}: conformance FAILED\n{report.summary()}")
            continue
        found = await registry.fetch(pool, row["bpf"], row["version"], "test")
        assert found is not None
        d = found.definition
        executor = _an_executor(d, catalog)
        for action, actor in (
            ("submit", d.owners.definer),
            ("approve", settings.conformance_body),
            ("operate", executor),
        ):
            await registry.transition(
                pool,
                d.bpf,
                d.version,
                action,  # type: ignore[arg-type]
                actor,
                conformance_body=settings.conformance_body,
                actor_roles=frozenset(catalog.org_roles(actor))
                if actor in catalog.orgs
                else frozenset(),
                note=note,
            )
        done.append(f"{d.bpf} v{d.version}: operating")
    return done


def _an_executor(d: BpfDefinition, catalog: Catalog) -> str:
    for e in d.owners.executors:
        if not e.startswith("role:"):
            return e
        role = e.removeprefix("role:")
        for org in sorted(catalog.orgs):
            if role in catalog.org_roles(org):
                return org
    raise LookupError(f"no org can execute {d.bpf}")


async def record_histories(client: Client, report: Report, directory: Path) -> list[Path]:
    """Write the history of every scenario run of ``report`` under ``directory/<bpf>/``.

    CI replays them against the current interpreter (``tests/test_replay.py``): a change that
    would break flows already running fails there.
    """
    folder = directory / report.bpf
    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for s in report.scenarios:
        history = await client.get_workflow_handle(s.workflow_id).fetch_history()
        slug = "".join(c if c.isalnum() else "-" for c in s.name.lower()).strip("-")[:60]
        path = folder / f"v{report.version}-{slug}.json"
        path.write_text(
            json.dumps(
                {"workflow_id": s.workflow_id, "history": json.loads(history.to_json())},
                indent=1,
            ),
            encoding="utf-8",
        )
        written.append(path)
    return written
