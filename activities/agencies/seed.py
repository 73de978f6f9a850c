"""Loading the synthetic residents into the hub (codes) and each sample agency's own tables."""

from __future__ import annotations

import datetime as dt
import uuid

import asyncpg

from activities.agencies.municipality import FISCAL_YEAR, schema_of
from activities.agencies.synthetic import Household, generate, people
from renkei.contracts.probe import probe_code
from renkei.kernel.pseudonyms import PORTAL, Pseudonyms, derive_code, synthetic_number
from whitelist.models import Catalog


async def seed(pool: asyncpg.Pool, catalog: Catalog, hub_key: str, size: int) -> bool:
    """Seed once; ``False`` if the data is already there."""
    if await pool.fetchval("SELECT count(*) FROM hub.subject_codes") > 0:
        return False
    households = generate(size)
    everyone = people(households)
    hub = Pseudonyms(pool, hub_key)
    # A private partner never holds a code for anyone (it receives only what an act sends).
    public = [o for o in sorted(catalog.orgs) if not catalog.is_private(o)]
    await hub.enroll([p.subject_id for p in everyone], [*public, PORTAL])
    await hub.register_numbers([(synthetic_number(p.subject_id), p.subject_id) for p in everyone])

    def code(org: str, p: object) -> str:
        return derive_code(hub_key, org, p.subject_id)  # type: ignore[attr-defined]

    async with pool.acquire() as conn, conn.transaction():
        for org in ("city-minato", "city-shibuya"):
            local = [p for p in everyone if p.municipality == org]
            schema = schema_of(org)
            await conn.copy_records_to_table(
                "residents",
                schema_name=schema,
                columns=["code", "household_id", "relationship", "moved_in", "birth_date"],
                records=[
                    (code(org, p), p.household_id, p.relationship, p.moved_in, p.birth_date)
                    for p in local
                ],
            )
            tax = []
            for h in households:
                if h.municipality != org:
                    continue
                dependents = sum(1 for m in h.members if m.age() < 18)
                for p in h.members:
                    rate_tax = p.taxable_income // 10
                    tax.append(
                        (
                            code(org, p),
                            FISCAL_YEAR,
                            p.taxable_income,
                            rate_tax,
                            dependents if p.relationship == "世帯主" else 0,
                        )
                    )
            await conn.copy_records_to_table(
                "local_tax",
                schema_name=schema,
                columns=["code", "fiscal_year", "taxable_income", "municipal_tax", "dependents"],
                records=tax,
            )
        insured = [p for p in everyone if p.insured_by_kyokai]
        await conn.copy_records_to_table(
            "insured",
            schema_name="agency_kyokai_kenpo",
            columns=["code"],
            records=[(code("kyokai-kenpo", p),) for p in insured],
        )
        await conn.copy_records_to_table(
            "medical_payments",
            schema_name="agency_kyokai_kenpo",
            columns=["code", "month", "amount", "kind"],
            records=[
                (code("kyokai-kenpo", p), m, a, k)
                for p in insured
                for (m, a, k) in p.medical_payments
            ],
        )
        await conn.copy_records_to_table(
            "pensions",
            schema_name="agency_jps",
            columns=["code", "kind", "annual_amount"],
            records=[(code("jps", p), p.pension[0], p.pension[1]) for p in everyone if p.pension],
        )
        await seed_probe_fixtures(conn)
    return True


# The probe subject's birth date: no life-event scan reaches it; the contract probe's cohort asks
# for exactly its day (renkei.app.kit.contracts).
PROBE_BORN = dt.date(1900, 1, 1)


async def seed_probe_fixtures(conn: asyncpg.Connection | asyncpg.pool.PoolConnectionProxy) -> None:
    """Each sample agency's synthetic probe subject, under its probe code (never a person's):
    what the contract test asks through the agency's worker (``renkei contract``)."""
    for org in ("city-minato", "city-shibuya"):
        schema = schema_of(org)
        probe = probe_code(org)
        await conn.execute(
            f"INSERT INTO {schema}.residents (code, household_id, relationship, moved_in,"
            " birth_date) VALUES ($1, $2, '世帯主', $3, $4) ON CONFLICT DO NOTHING",
            probe,
            f"probe-{org}",
            PROBE_BORN,
            PROBE_BORN,
        )
        await conn.execute(
            f"INSERT INTO {schema}.local_tax (code, fiscal_year, taxable_income, municipal_tax,"
            " dependents) VALUES ($1, $2, 0, 0, 0) ON CONFLICT DO NOTHING",
            probe,
            FISCAL_YEAR,
        )
    kyokai = probe_code("kyokai-kenpo")
    await conn.execute(
        "INSERT INTO agency_kyokai_kenpo.insured (code) VALUES ($1) ON CONFLICT DO NOTHING", kyokai
    )
    await conn.execute(
        "INSERT INTO agency_jps.pensions (code, kind, annual_amount) VALUES ($1, $2, 0)"
        " ON CONFLICT DO NOTHING",
        probe_code("jps"),
        "老齢基礎年金",
    )


def sample_subjects(org: str, households: list[Household]) -> dict[str, uuid.UUID]:
    """For each info item ``org`` serves, a synthetic subject it holds data for."""
    everyone = people(households)
    if org in ("city-minato", "city-shibuya"):
        local = next(p for p in everyone if p.municipality == org)
        return {"resident-record": local.subject_id, "local-tax": local.subject_id}
    if org == "kyokai-kenpo":
        return {"medical-benefit": next(p for p in everyone if p.insured_by_kyokai).subject_id}
    if org == "jps":
        return {"pension-benefit": next(p for p in everyone if p.pension).subject_id}
    return {}
