"""Provider contracts: an org's own providers checked before they serve.

:func:`probe_worker` (``renkei contract ORG``) checks the org's running worker on its own queue,
through its whitelist gate, with contract probes (:mod:`renkei.contracts.probe`).

:func:`check_provider` (``renkei init``'s first run of the sample orgs, before any worker runs)
calls an org's own provider implementations in this process against the contract of each
info item it serves (and each action it carries out: a receipt that fits, for a request of the
action's fields and no subject code): answers validate against the item's schema, a subject the provider does not
hold is a non-retryable ``NoMatch`` (or an answer that says so within the schema, such as "not
insured"), and the whitelist gate refuses a request no row permits before the provider's code
runs.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import asyncpg
from pydantic import BaseModel, ValidationError
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.worker import Worker

from activities.linkage import Provider
from renkei.contracts.failures import Failure
from renkei.contracts.messages import CohortParams, LinkageRequest
from renkei.contracts.probe import (
    PROBE_WORKFLOW,
    ProbeAnswer,
    ProbeRun,
    ProbeStep,
    probe_code,
    probe_queue,
    probe_workflow_id,
)
from renkei.contracts.provider import NoMatch
from renkei.kernel import attest, keys
from renkei.kernel.settings import Settings
from whitelist.decide import WhitelistIndex, japan_today
from whitelist.models import Catalog
from whitelist.payloads import SCHEMAS, GenericRecord, field_kinds
from whitelist.store import LiveWhitelist
from workflows.life_events import cohort_for


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
        ok = Failure.NO_MATCH.caused(err) and err.non_retryable
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


def _gate_refuses(
    org: str,
    catalog: Catalog,
    index: WhitelistIndex,
    req: LinkageRequest,
    at: dt.datetime,
    *,
    consented: bool = False,
) -> ContractCheck:
    """The check that ``org``'s whitelist gate refuses ``req`` (a requester no row lists), as
    the gate decides it for a linkage (``consented``: as for an act whose permit holds)."""
    from activities.gate import provider_decision

    refused = provider_decision(org, catalog, index, req, at, consented=consented)
    return ContractCheck(
        org=org,
        info=req.info,
        check="the gate refuses an unlisted requester",
        passed=not refused.allowed,
        detail=refused.reason,
    )


async def check_provider(
    org: str,
    providers: dict[str, Provider],
    catalog: Catalog,
    whitelist: LiveWhitelist | WhitelistIndex,
    pool: asyncpg.Pool,
    known: dict[str, str],
) -> list[ContractCheck]:
    """Check ``org``'s providers against the contract of every info item it serves.

    ``known`` maps info items to a code the provider holds data for.
    """
    index = whitelist.index if isinstance(whitelist, LiveWhitelist) else whitelist
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
        params = cohort_for(18, "birthday", japan_today()).model_dump(mode="json") if cohort else {}

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
        out.append(_gate_refuses(org, catalog, index, request(unknown), dt.datetime.now(dt.UTC)))
    out += await _check_actions(org, providers, catalog, index)
    return out


# A value of each request field's type, for a probe act (it names no one).
_PROBE_VALUES: dict[str, Any] = {
    "string": "probe",
    "integer": 1,
    "number": 1.0,
    "boolean": True,
    "date": dt.date(2026, 4, 1).isoformat(),
}


async def _check_actions(
    org: str, providers: dict[str, Provider], catalog: Catalog, index: WhitelistIndex
) -> list[ContractCheck]:
    """The contract of every action ``org`` carries out: a provider for it, a receipt that fits
    the action's result for a request of exactly its fields and no subject code, and the gate
    refusing an act no partner row permits."""
    out: list[ContractCheck] = []
    for action_id in catalog.orgs[org].acts:
        action = catalog.actions[action_id]
        provider = providers.get(action_id)
        if provider is None:
            out.append(
                ContractCheck(
                    org=org,
                    info=action_id,
                    check="implemented",
                    passed=False,
                    detail=f"{org} carries out {action_id} but has no provider for it",
                )
            )
            continue
        fields = field_kinds(SCHEMAS.get(action.request, GenericRecord))
        req = LinkageRequest(
            requester="conformance-probe",
            provider=org,
            task="conformance",
            info=action_id,
            subject="",  # an act may come with no code at all (a private partner's always does)
            bpf="conformance",
            bpf_version=1,
            content_hash="-",
            step="probe",
            send={name: _PROBE_VALUES[kind] for name, (kind, _) in fields.items()},
        )
        check = "a receipt that fits, for the request's fields and no code"
        try:
            receipt = await provider(req)
            SCHEMAS.get(action.result, GenericRecord).model_validate(
                receipt.model_dump(mode="json")
            )
            out.append(ContractCheck(org=org, info=action_id, check=check, passed=True))
        except Exception as err:
            out.append(
                ContractCheck(
                    org=org,
                    info=action_id,
                    check=check,
                    passed=False,
                    detail=f"{type(err).__name__}: {str(err)[:200]}",
                )
            )
        out.append(_gate_refuses(org, catalog, index, req, dt.datetime.now(dt.UTC), consented=True))
    return out


# -- through the org's own worker ---------------------------------------------------------------

# The probe's cohort: the day the probe subjects were born, which no life-event scan asks for.
PROBE_COHORT = CohortParams(
    age=18,
    on="birthday",
    period_start=dt.date(1918, 1, 1),
    period_end=dt.date(1918, 1, 2),
    born_from=dt.date(1900, 1, 1),
    born_to=dt.date(1900, 1, 2),
)


def probe_steps(org: str, catalog: Catalog) -> list[ProbeStep]:
    """What the contract asks of ``org``'s worker: for each item it serves, its probe subject
    (an answer that fits) and one it does not hold (NoMatch, or an answer that fits); for a
    cohort item, the probe subjects' day; for each action, a request of exactly its fields."""
    found = catalog.orgs[org]
    out: list[ProbeStep] = []
    for info in found.serves:
        schema = SCHEMAS.get(catalog.info_items[info].schema_name, GenericRecord)
        if schema.__name__ == "ResidentCohort":
            params = PROBE_COHORT.model_dump(mode="json")
            out.append(ProbeStep(step=f"{info}.cohort", info=info, params=params))
            continue
        out.append(ProbeStep(step=f"{info}.held", info=info, subject=probe_code(org)))
        out.append(ProbeStep(step=f"{info}.unheld", info=info, subject=probe_code(org, held=False)))
    for action_id in found.acts:
        fields = field_kinds(SCHEMAS.get(catalog.actions[action_id].request, GenericRecord))
        send = {name: _PROBE_VALUES[kind] for name, (kind, _) in fields.items()}
        out.append(ProbeStep(step=f"{action_id}.act", info=action_id, act=True, send=send))
    return out


async def probe_worker(
    client: Client,
    pool: asyncpg.Pool,
    settings: Settings,
    catalog: Catalog,
    whitelist: LiveWhitelist | WhitelistIndex,
    org: str,
    *,
    wait: dt.timedelta = dt.timedelta(seconds=10),
) -> list[ContractCheck]:
    """Check ``org``'s contract through its own worker on its queue, as a linkage reaches it:
    each probe with a probe permit signed by the hub, through the org's whitelist gate; each
    answer's signature checked against the org's registered key and its body against the
    item's schema (or the action's receipt). A worker that does not answer within ``wait``
    fails the contract, naming the queue."""
    from activities.permits import PermitIssuer
    from activities.probe import ProbePermits
    from workflows.contract_probe import ContractProbe

    index = whitelist.index if isinstance(whitelist, LiveWhitelist) else whitelist
    steps = probe_steps(org, catalog)
    issuer = PermitIssuer(pool, keys.load(settings), fields=settings.permit_fields)
    run = uuid.uuid4().hex[:12]
    queue = probe_queue(settings.task_queue_prefix, run)
    asked = ProbeRun(
        org=org,
        task_queue_prefix=settings.task_queue_prefix,
        probe_queue=queue,
        timeout_seconds=wait.total_seconds(),
        steps=steps,
    )
    permits_ = ProbePermits(issuer, wait)
    async with Worker(
        client, task_queue=queue, workflows=[ContractProbe], activities=[permits_.permit]
    ):
        found: list[Any] = await client.execute_workflow(
            PROBE_WORKFLOW,
            asked,
            id=probe_workflow_id(org, run),
            task_queue=queue,
            execution_timeout=wait * (len(steps) + 1) + dt.timedelta(seconds=60),
            result_type=list[ProbeAnswer],
        )
    answers = [ProbeAnswer.model_validate(a) for a in found]
    out: list[ContractCheck] = []
    for step, got in zip(steps, answers, strict=True):
        # Checked against the signing key read with the sealing key of the step's own permit,
        # not the registry as it is now: the org's keys may have rotated during the probe.
        signing = permits_.keys.get(got.permit_signature)
        no_key = "" if signing else "the answer names no permit this probe issued"
        out.append(_judge(org, catalog, step, got, signing, no_key))
    at = dt.datetime.now(dt.UTC)
    for info in [*catalog.orgs[org].serves, *catalog.orgs[org].acts]:
        req = LinkageRequest(
            requester="conformance-probe",
            provider=org,
            task="conformance",
            info=info,
            subject="",
            bpf="conformance",
            bpf_version=1,
            content_hash="-",
            step="probe",
        )
        out.append(_gate_refuses(org, catalog, index, req, at, consented=True))
    return out


_CHECKS = {
    "held": "its probe subject: an answer that fits",
    "unheld": "a subject it does not hold: NoMatch, or an answer that fits",
    "cohort": "the probe subjects' cohort: an answer that fits",
    "act": "a receipt that fits, for the request's fields and no code",
}


def _judge(
    org: str,
    catalog: Catalog,
    step: ProbeStep,
    got: ProbeAnswer,
    signing: str | None,
    no_key: str,
) -> ContractCheck:
    check = _CHECKS[step.step.rsplit(".", 1)[1]]

    def result(passed: bool, detail: str = "") -> ContractCheck:
        return ContractCheck(org=org, info=step.info, check=check, passed=passed, detail=detail)

    if got.answer is None:
        if got.failure_kind == "no-match" and check == _CHECKS["unheld"]:
            return result(True)
        if got.failure_kind == "no-match":
            return result(
                False,
                f"NoMatch: {org}'s providers hold no synthetic fixture under its probe code"
                f" {probe_code(org)} (renkei.contracts.probe)",
            )
        return result(False, got.failure or "no answer")
    if signing is None:
        return result(False, no_key)
    payload = attest.is_providers(signing, got.answer, got.permit_signature)
    if payload is None:
        return result(False, f"the answer is not signed with {org}'s registered key")
    if step.act:
        schema = SCHEMAS.get(catalog.actions[step.info].result, GenericRecord)
    else:
        schema = SCHEMAS.get(catalog.info_items[step.info].schema_name, GenericRecord)
    try:
        schema.model_validate(payload)
    except ValidationError as err:
        return result(
            False,
            "; ".join(
                f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
                for e in err.errors(include_input=False)
            ),
        )
    return result(True, "answers (e.g. 'not insured')" if check == _CHECKS["unheld"] else "")
