"""The conformance body's own voice: scenarios it adds to a version's kit, the kit it runs itself,
and its approval as a signed certificate over (version content hash, report hash).

* ``renkei bpf add-scenarios BPF VERSION FILE`` (the conformance body): scenarios kept with that
  version; ``renkei conformance BPF --version VERSION`` runs them with the shipped set, and a run
  by a signed-in operator is recorded as that operator's party's.
* ``renkei bpf approve`` signs, with the conformance body's own key (its public keys signed into
  the key registry by the hub), the version's content hash and the hash of the report it approves
  on: the last passing report the body ran itself for exactly this content, else the one the
  definer submitted with. ``renkei bpf history`` shows the certificate, ``renkei bpf verify`` checks
  it. The samples are approved the same way on a fresh install.
"""

from __future__ import annotations

import asyncpg
from pydantic import BaseModel

from renkei.app.kit.scenarios import Scenario, ScenarioSet
from renkei.bpf import registry
from renkei.kernel import attest, keys, parties
from renkei.kernel.settings import Settings


class ScenarioClash(ValueError):
    """Scenarios that cannot be added (a name the kit has, another BPF's set)."""


class Approval(BaseModel):
    bpf: str
    version: int
    content_hash: str
    report_hash: str
    signer: str
    signing_id: str
    signature: str
    operator: str | None = None


def own_keys(settings: Settings, party: str) -> keys.OrgKeys:
    """``party``'s own key file, as this installation holds it (an org's machine holds its own
    only): read, never made here (a key made now would be registered nowhere)."""
    try:
        own = keys.load_org(settings, party)
    except FileNotFoundError:
        raise registry.TransitionRefused(
            f"{party} signs with its own key file, and none of {party}'s is here"
            f" ({keys.org_keys_path(settings, party).name} in the keys folder)"
        ) from None
    if own.org != party:
        raise registry.TransitionRefused(f"the key file for {party} is {own.org}'s")
    return own


def signer(settings: Settings) -> registry.ApprovalSigner:
    """What signs an approval: the conformance body's own key."""
    body = settings.conformance_body

    def sign(bpf: str, version: int, content_hash: str, report_hash: str) -> tuple[str, str, str]:
        own = own_keys(settings, body)
        signature = attest.version_approval(own.signer(), bpf, version, content_hash, report_hash)
        return body, own.public(body).signing_id, signature

    return sign


def operation_signer(settings: Settings) -> registry.OperationSigner:
    """What signs an executor's ``operate``: that executor's own key file (at an org, its own
    only)."""

    def sign(bpf: str, version: int, content_hash: str, executor: str) -> tuple[str, str]:
        own = own_keys(settings, executor)
        signature = attest.version_operation(own.signer(), bpf, version, content_hash, executor)
        return own.public(executor).signing_id, signature

    return sign


async def add_scenarios(
    pool: asyncpg.Pool,
    bpf: str,
    version: int,
    added: ScenarioSet,
    shipped: ScenarioSet | None,
    party: str,
    operator: str,
) -> list[str]:
    """Keep ``added``'s scenarios with ``bpf`` ``version``; return their names."""
    if added.bpf != bpf:
        raise ScenarioClash(f"the file is the scenario set of {added.bpf}, not {bpf}")
    if await registry.state_of(pool, bpf, version) is None:
        raise ScenarioClash(f"{bpf} version {version} is not registered")
    have = {s.name for s in shipped.scenarios} if shipped else set()
    have |= {s.name for s in await kept_scenarios(pool, bpf, version)}
    names = [s.name for s in added.scenarios]
    if clash := sorted((have & set(names)) | {n for n in names if names.count(n) > 1}):
        raise ScenarioClash(f"the kit of {bpf} v{version} already has scenario {clash[0]!r}")
    async with pool.acquire() as conn, conn.transaction():
        await conn.executemany(
            "INSERT INTO registry.kit_scenarios (bpf, version, name, scenario, party, operator)"
            " VALUES ($1, $2, $3, $4, $5, $6)",
            [
                (bpf, version, s.name, s.model_dump(mode="json", by_alias=True), party, operator)
                for s in added.scenarios
            ],
        )
    return names


async def kept_scenarios(pool: asyncpg.Pool, bpf: str, version: int) -> list[Scenario]:
    return [
        Scenario.model_validate(r["scenario"])
        for r in await pool.fetch(
            "SELECT scenario FROM registry.kit_scenarios WHERE bpf = $1 AND version = $2"
            " ORDER BY id",
            bpf,
            version,
        )
    ]


async def kit_for(
    pool: asyncpg.Pool, bpf: str, version: int, shipped: ScenarioSet | None
) -> ScenarioSet:
    """The version's kit: the shipped scenario set and the scenarios kept with the version."""
    kept = await kept_scenarios(pool, bpf, version)
    if shipped is None and not kept:
        raise FileNotFoundError(f"no scenario set for {bpf} and none added to v{version}")
    return ScenarioSet(bpf=bpf, scenarios=[*(shipped.scenarios if shipped else []), *kept])


async def approvals(pool: asyncpg.Pool, bpf: str, version: int) -> list[Approval]:
    return [
        Approval(**dict(r))
        for r in await pool.fetch(
            "SELECT bpf, version, content_hash, report_hash, signer, signing_id, signature,"
            " operator FROM registry.approvals WHERE bpf = $1 AND version = $2 ORDER BY id",
            bpf,
            version,
        )
    ]


async def verify(pool: asyncpg.Pool, settings: Settings, approval: Approval) -> str | None:
    """Why ``approval`` does not hold (``None`` when it does): signed by the conformance body's
    registered key, over the version's registered content and a passing report kept for it."""
    if approval.signer != settings.conformance_body:
        return f"signed by {approval.signer!r}, not the conformance body"
    hub = keys.load(settings).signer().public_key()
    # The key it names, current or since replaced: a rotation leaves earlier approvals standing
    # (the hub's check in operation, activities.approved, takes the same keys).
    signing = (await parties.signing_keys(pool, hub, approval.signer)).get(approval.signing_id)
    if signing is None:
        return f"the key registry holds no key {approval.signing_id} of {approval.signer!r}"
    if not attest.is_version_approval(
        signing,
        approval.signature,
        approval.bpf,
        approval.version,
        approval.content_hash,
        approval.report_hash,
    ):
        return "the signature does not hold for this version, its content and this report hash"
    content = await pool.fetchval(
        "SELECT content_hash FROM registry.bpf_versions WHERE bpf = $1 AND version = $2",
        approval.bpf,
        approval.version,
    )
    if content != approval.content_hash:
        return f"the registered content of {approval.bpf} v{approval.version} is {content}"
    kept = await pool.fetchval(
        "SELECT 1 FROM registry.conformance_reports WHERE bpf = $1 AND version = $2"
        " AND content_hash = $3 AND report_hash = $4 AND passed",
        approval.bpf,
        approval.version,
        approval.content_hash,
        approval.report_hash,
    )
    if kept is None:
        return f"no passing report for this content has hash {approval.report_hash}"
    return None
