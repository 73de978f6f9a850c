"""The HTTP API keeps the contract it publishes at ``/api/openapi.json``.

The document names who may call each operation (security schemes), every status an operation
answers and the body of each, and no field only renkei sets; a request it cannot read gets a
4xx with the reason. A bounded generated run (schema-
valid and schema-invalid requests to every operation, with each operation's own credential)
finds no server error, no undocumented status, no response that breaks its schema and no
request that skips its credential.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import asyncpg
import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hsettings
from hypothesis.strategies import one_of
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from temporalio.client import Client

from renkei.app.web import serving
from renkei.app.web.api import issue_token
from renkei.app.web.codec_server import add_operator
from renkei.kernel import keys
from renkei.kernel.pseudonyms import PORTAL, derive_code
from renkei.kernel.settings import Settings

from .helpers import households

CHECKS = [
    not_a_server_error,  # a 500 is always a defect
    status_code_conformance,  # every status is documented
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
    negative_data_rejection,  # a request the schema refuses gets a 4xx
    ignored_auth,  # without its credential (or with a wrong one) an operation refuses
]
# Not run: positive_data_acceptance. A schema-valid start names a BPF, an org and a code at
# random, and is refused for that (403/422, with the reason), as it should be.
EXAMPLES = 12  # per operation and mode: the whole run takes seconds


async def _spec(base: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=base) as http:
        spec: dict[str, Any] = (await http.get("/api/openapi.json")).json()
    return spec


async def test_the_document_names_credentials_statuses_and_no_internal_field(
    client: Client, pool: asyncpg.Pool, settings: Settings
) -> None:
    async with serving(settings, pool, client) as base:
        spec = await _spec(base)
    schemes = spec["components"]["securitySchemes"]
    assert schemes["agencyToken"] == {**schemes["agencyToken"], "type": "http", "scheme": "bearer"}
    assert schemes["citizenSession"]["in"] == "cookie"
    assert schemes["citizenSession"]["name"] == "renkei_portal"
    assert schemes["portalCode"]["scheme"] == "bearer"
    paths = spec["paths"]
    start = paths["/api/flows"]["post"]
    assert start["security"] == [{"agencyToken": []}]
    assert {"201", "401", "403", "409", "422", "503"} <= set(start["responses"])
    assert "Retry-After" in start["responses"]["503"]["headers"]
    assert {"401", "404"} <= set(paths["/api/flows/{workflow_id}/state"]["get"]["responses"])
    respond = paths["/api/citizen/flows/{workflow_id}/respond"]["post"]
    assert {"citizenSession", "portalCode"} == {k for s in respond["security"] for k in s}
    for path, operations in paths.items():
        for method, op in operations.items():
            assert op.get("security"), f"{method} {path} names no credential"
            for status, answer in op["responses"].items():
                if status.startswith(("4", "5")):
                    assert "application/json" in answer["content"], (method, path, status)
    # the public start request has only what a caller sets
    body = start["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    public = spec["components"]["schemas"][body.rsplit("/", 1)[-1]]
    assert not {
        "resume",
        "parent",
        "caller_ticket",
        "attestation",
        "resume_signature",
        "signed_resume",
    } & set(public["properties"])
    assert public["additionalProperties"] is False
    for name, schema in spec["components"]["schemas"].items():
        assert "resume" not in schema.get("properties", {}), name


async def test_a_start_naming_a_field_only_renkei_sets_is_refused(
    client: Client, pool: asyncpg.Pool, settings: Settings
) -> None:
    token = await issue_token(pool, "city-minato")
    body = {
        "bpf": "child-allowance-check",
        "executor": "city-minato",
        "subject": "A" * 20,
        "case_ref": "case-1",
        "attestation": "forged",
    }
    async with (
        serving(settings, pool, client) as base,
        httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {token}"}) as http,
    ):
        refused = await http.post("/api/flows", json=body)
        assert refused.status_code == 422
        assert "attestation: set only by renkei" in refused.text
        paths = await http.post("/api/flows", json={**body, "attestation": None, "paths": 3})
        assert paths.status_code == 422 and "paths: set only by renkei" in paths.text
        typo = await http.post("/api/flows", json={**body, "attestation": None, "inptus": {}})
        assert typo.status_code == 422 and "inptus" in typo.text


async def test_a_body_or_filter_that_does_not_parse_gets_a_4xx_with_the_reason(
    client: Client, pool: asyncpg.Pool, settings: Settings
) -> None:
    person = households(settings)[0].members[0]
    portal = derive_code(keys.load(settings).hub_key, PORTAL, person.subject_id)
    operator = await add_operator(pool, "contract-parse")
    async with (
        serving(settings, pool, client) as base,
        httpx.AsyncClient(base_url=base) as http,
    ):
        codec = {"Authorization": f"Bearer {operator}", "Content-Type": "application/json"}
        for body in (b"\xbc\x11", b"[]", b'"payloads"'):  # not text, not an object
            got = await http.post("/codec/decode", content=body, headers=codec)
            assert got.status_code == 400 and "payloads" in got.json()["detail"], (body, got.text)
        citizen = {"Authorization": f"Bearer {portal}"}
        assert (await http.get("/api/citizen/records", headers=citizen)).status_code == 200
        for query in ("since=0.0", "until=1700000000", "sinse=2026-01-01"):
            got = await http.get(f"/api/citizen/records?{query}", headers=citizen)
            assert got.status_code == 422 and got.json()["detail"], (query, got.text)


@pytest.mark.timeout(180)
async def test_generated_requests_find_no_defect(
    client: Client, pool: asyncpg.Pool, settings: Settings
) -> None:
    person = households(settings)[0].members[0]
    credentials = {
        "agencyToken": f"Bearer {await issue_token(pool, 'city-minato')}",
        "portalCode": f"Bearer {derive_code(keys.load(settings).hub_key, PORTAL, person.subject_id)}",
        "operatorToken": f"Bearer {await add_operator(pool, 'contract-test')}",
    }
    async with serving(settings, pool, client) as base:
        schema = schemathesis.openapi.from_dict(await _spec(base))
        operations = [result.ok() for result in schema.get_all_operations()]
        assert len(operations) >= 9

        def run(operation: Any) -> None:
            names = [name for s in operation.definition.raw.get("security", []) for name in s]
            auth = next((credentials[n] for n in names if n in credentials), None)

            @hsettings(
                max_examples=EXAMPLES,
                deadline=dt.timedelta(seconds=10),
                derandomize=True,
                database=None,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            @given(
                case=one_of(
                    *operation.get_strategies_from_examples(),
                    operation.as_strategy(GenerationMode.POSITIVE),
                    operation.as_strategy(GenerationMode.NEGATIVE),
                )
            )
            def check(case: Any) -> None:
                # The generated credential is replaced by a real one; a case that leaves it out
                # (or breaks it) on purpose keeps it so.
                if auth and (case.headers or {}).get("Authorization", "").startswith("Bearer "):
                    case.headers["Authorization"] = auth
                case.call_and_validate(base_url=base, checks=CHECKS, timeout=30)

            check()

        failures: list[str] = []
        for operation in operations:
            try:
                await asyncio.to_thread(run, operation)
            except (AssertionError, BaseExceptionGroup) as err:  # all operations run
                failures.append(f"{operation.label}: {err!r}"[:3000])
        assert not failures, "\n\n".join(failures)
