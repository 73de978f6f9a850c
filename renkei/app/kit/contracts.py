"""Provider contracts (``renkei contract ORG``): an org's own providers checked before they serve.

:func:`check_provider` runs an org's own provider implementations against the contract of each
info item it serves (and each action it carries out: a receipt that fits, for a request of the
action's fields and no subject code): answers validate against the item's schema, a subject the provider does not
hold is a non-retryable ``NoMatch`` (or an answer that says so within the schema, such as "not
insured"), and the whitelist gate refuses a request no row permits before the provider's code
runs.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import asyncpg
from pydantic import BaseModel, ValidationError
from temporalio.exceptions import ApplicationError

from activities.linkage import Provider
from renkei.contracts.failures import Failure
from renkei.contracts.messages import LinkageRequest
from renkei.contracts.provider import NoMatch
from whitelist.decide import WhitelistIndex
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
    from activities.gate import provider_decision

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
        refused = provider_decision(org, catalog, index, request(unknown), dt.datetime.now(dt.UTC))
        out.append(
            ContractCheck(
                org=org,
                info=info,
                check="the gate refuses an unlisted requester",
                passed=not refused.allowed,
                detail=refused.reason,
            )
        )
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
    from activities.gate import provider_decision

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
        refused = provider_decision(
            org, catalog, index, req, dt.datetime.now(dt.UTC), consented=True
        )
        out.append(
            ContractCheck(
                org=org,
                info=action_id,
                check="the gate refuses an unlisted requester",
                passed=not refused.allowed,
                detail=refused.reason,
            )
        )
    return out
