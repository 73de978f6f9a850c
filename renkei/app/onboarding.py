"""Onboarding an org: registered → contract-tested → certified → active (→ suspended / retired).

1. The platform operator registers the org (``renkei orgs add``): its names, kind, roles and the
   info items it will serve.
2. Its own worker is probed on its queue for every item it serves (``renkei contract ORG``):
   each probe through its whitelist gate with a probe permit, for its probe subject only
   (:mod:`renkei.contracts.probe`); the run is kept with its report and the report's hash, and a
   passing run makes it ``contract-tested``.
3. The conformance body certifies it (``renkei orgs certify ORG``): it signs (org, served items,
   report hash) with its own key, whose public part the hub signed into the key registry.
4. The platform operator activates it (``renkei orgs activate ORG``). Only an active org asks or
   answers: the hub refuses any other and records why.

The sample orgs go the same way on a fresh install: ``renkei init`` runs their sample providers'
contract test (in its own process: no worker runs yet), has the conformance body certify them
and activates them.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Mapping

import asyncpg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import BaseModel
from temporalio.client import Client

from activities.agencies import providers_for
from activities.agencies.seed import sample_subjects
from activities.agencies.synthetic import generate
from activities.linkage import Provider
from renkei.app.kit.contracts import ContractCheck, check_provider, probe_worker
from renkei.kernel import attest, keys, parties
from renkei.kernel.pseudonyms import derive_code
from renkei.kernel.settings import Settings
from whitelist import orgs, seal
from whitelist.decide import WhitelistIndex
from whitelist.models import Catalog

PLATFORM = "platform-operator"
CONFORMANCE = "conformance-body"


class ContractRun(BaseModel):
    org: str
    served: list[str]
    passed: bool
    report_hash: str
    checks: list[ContractCheck]


class Certificate(BaseModel):
    org: str
    served: list[str]
    report_hash: str
    signer: str
    signing_id: str
    signature: str


class NotCertifiable(ValueError):
    """An org the conformance body cannot certify (no passing contract test, wrong status)."""


def report_hash(org: str, served: list[str], checks: list[ContractCheck]) -> str:
    body = {"org": org, "served": sorted(served), "checks": [c.model_dump() for c in checks]}
    canonical = json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


async def contract_test(
    pool: asyncpg.Pool,
    catalog: Catalog,
    index: WhitelistIndex,
    org: str,
    providers: Mapping[str, Provider],
    known: dict[str, str],
    actor: str,
    *,
    hub: Ed25519PrivateKey,
) -> ContractRun:
    """Run ``org``'s providers against the contract of every item it serves, keep the run with
    its report hash, and (passed) make a registered org contract-tested."""
    if org not in catalog.orgs:
        raise orgs.OrgChangeRefused(f"unknown org {org!r}")
    checks = await check_provider(org, dict(providers), catalog, index, pool, known)
    return await record_run(pool, catalog, org, checks, actor, hub=hub)


async def contract_test_through_worker(
    client: Client,
    pool: asyncpg.Pool,
    settings: Settings,
    catalog: Catalog,
    index: WhitelistIndex,
    org: str,
    actor: str,
    wait: dt.timedelta,
) -> ContractRun:
    """Run ``org``'s contract through its own worker on its queue (contract probes, through its
    whitelist gate: :mod:`renkei.contracts.probe`), keep the run with its report hash, and
    (passed) make a registered org contract-tested."""
    if org not in catalog.orgs:
        raise orgs.OrgChangeRefused(f"unknown org {org!r}")
    if await pool.fetchval("SELECT status FROM whitelist.orgs WHERE id = $1", org) is None:
        raise orgs.OrgChangeRefused(f"org {org!r} is not registered (renkei orgs add)")
    checks = await probe_worker(client, pool, settings, catalog, index, org, wait=wait)
    return await record_run(pool, catalog, org, checks, actor, hub=keys.load(settings).signer())


async def record_run(
    pool: asyncpg.Pool,
    catalog: Catalog,
    org: str,
    checks: list[ContractCheck],
    actor: str,
    *,
    hub: Ed25519PrivateKey,
) -> ContractRun:
    """Keep a contract run with its report and hash; a passing one makes a registered org
    contract-tested."""
    served = sorted(catalog.orgs[org].serves)
    passed = all(c.passed for c in checks)
    digest = report_hash(org, served, checks)
    async with pool.acquire() as conn, conn.transaction():
        # The registry's tables first, as every change of them takes them (a lock on one of
        # them taken before, by the row read here, would wait on a change holding the others).
        await seal.begin(conn, hub)
        status = await conn.fetchval(
            "SELECT status FROM whitelist.orgs WHERE id = $1 FOR UPDATE", org
        )
        if status is None:
            raise orgs.OrgChangeRefused(f"org {org!r} is not registered (renkei orgs add)")
        await conn.execute(
            "INSERT INTO whitelist.org_contract_tests (org, served, report_hash, passed, report,"
            " actor) VALUES ($1, $2, $3, $4, $5, $6)",
            org,
            served,
            digest,
            passed,
            [c.model_dump() for c in checks],
            actor,
        )
        if passed and status == "registered":  # a later run is recorded, the status kept
            await orgs.set_status(
                conn, org, "contract-tested", actor, PLATFORM, hub=hub, report=digest
            )
    return ContractRun(org=org, served=served, passed=passed, report_hash=digest, checks=checks)


async def certify(
    pool: asyncpg.Pool, settings: Settings, org: str, operator: str = CONFORMANCE
) -> Certificate:
    """The conformance body's certificate over the org's last passing contract test, made by
    its ``operator``."""
    body = settings.conformance_body
    key = keys.issue(settings, body)
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            "SELECT served, report_hash FROM whitelist.org_contract_tests"
            " WHERE org = $1 AND passed ORDER BY id DESC LIMIT 1",
            org,
        )
        if row is None:
            raise NotCertifiable(f"org {org!r} has no passing contract test (renkei contract)")
        served = list(row["served"])
        cert = Certificate(
            org=org,
            served=served,
            report_hash=row["report_hash"],
            signer=body,
            signing_id=key.public(body).signing_id,
            signature=attest.org_certificate(key.signer(), org, served, row["report_hash"]),
        )
        await orgs.set_status(
            conn,
            org,
            "certified",
            operator,
            CONFORMANCE,
            hub=keys.load(settings).signer(),
            report=cert.report_hash,
        )
        await conn.execute(
            "INSERT INTO whitelist.org_certificates (org, served, report_hash, signer,"
            " signing_id, signature) VALUES ($1, $2, $3, $4, $5, $6)",
            org,
            served,
            cert.report_hash,
            body,
            cert.signing_id,
            cert.signature,
        )
    return cert


async def certificates(pool: asyncpg.Pool, org: str) -> list[Certificate]:
    return [
        Certificate(**{**dict(r), "served": list(r["served"])})
        for r in await pool.fetch(
            "SELECT org, served, report_hash, signer, signing_id, signature"
            " FROM whitelist.org_certificates WHERE org = $1 ORDER BY id",
            org,
        )
    ]


async def verify(pool: asyncpg.Pool, settings: Settings, cert: Certificate) -> str | None:
    """Why ``cert`` does not hold (``None`` when it does): signed by the conformance body's key
    as the hub registered it, over a contract test kept with that report hash."""
    if cert.signer != settings.conformance_body:
        return f"signed by {cert.signer!r}, not the conformance body"
    hub = keys.load(settings).signer().public_key()
    body = (await parties.current(pool, hub)).get(cert.signer)
    if body is None:
        return f"the key registry holds no key of {cert.signer!r}"
    if not attest.is_org_certificate(
        body.signing, cert.signature, cert.org, cert.served, cert.report_hash
    ):
        return "the signature does not hold for this org, these items and this report hash"
    kept = await pool.fetchval(
        "SELECT 1 FROM whitelist.org_contract_tests WHERE org = $1 AND report_hash = $2 AND passed",
        cert.org,
        cert.report_hash,
    )
    if kept is None:
        return f"no passing contract test of {cert.org} has report hash {cert.report_hash}"
    return None


async def onboard_samples(
    pool: asyncpg.Pool, settings: Settings, catalog: Catalog, index: WhitelistIndex
) -> list[str]:
    """Make the seeded sample orgs still ``registered`` active the way any org becomes so:
    their sample providers' contract test, the conformance body's certificate, activation."""
    registered = [
        r["id"]
        for r in await pool.fetch(
            "SELECT o.id FROM whitelist.orgs o WHERE o.status = 'registered'"
            " AND EXISTS (SELECT 1 FROM whitelist.org_events e WHERE e.org = o.id"
            " AND e.action = 'add' AND e.detail->>'seeded' = 'true')"
        )
    ]
    if not registered:
        return []
    live = catalog.model_copy(update={"orgs": await orgs.load_orgs(pool)})
    residents = generate(settings.sample_residents)
    hub_key = keys.load(settings).hub_key
    hub = keys.load(settings).signer()  # seals each change of the registry
    done: list[str] = []
    for org in registered:
        known = {
            info: derive_code(hub_key, org, subject)
            for info, subject in sample_subjects(org, residents).items()
        }
        run = await contract_test(
            pool, live, index, org, providers_for(org, pool), known, PLATFORM, hub=hub
        )
        if not run.passed:
            continue
        await certify(pool, settings, org)
        await orgs.transition(pool, org, "active", PLATFORM, PLATFORM, hub=hub)
        done.append(org)
    return done


async def register_conformance_body(pool: asyncpg.Pool, settings: Settings) -> None:
    """The conformance body's key file and its public keys in the registry (signed by the hub)."""
    hub = keys.load(settings)
    body = settings.conformance_body
    await parties.register(pool, hub.signer(), keys.issue(settings, body).public(body))
