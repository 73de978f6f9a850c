"""A municipality (市町村長): resident records and local tax, from its own schema."""

from __future__ import annotations

import asyncpg

from renkei.contracts.messages import CohortParams, LinkageRequest
from renkei.contracts.provider import NoMatch, Provider
from whitelist.payloads import HouseholdMember, LocalTax, ResidentCohort, ResidentRecord

FISCAL_YEAR = 2025


def schema_of(org: str) -> str:
    return "agency_" + org.replace("-", "_")


def providers(org: str, pool: asyncpg.Pool) -> dict[str, Provider]:
    schema = schema_of(org)

    async def resident_record(req: LinkageRequest) -> ResidentRecord:
        row = await pool.fetchrow(
            f"SELECT household_id, relationship, moved_in FROM {schema}.residents WHERE code = $1",
            req.subject,
        )
        if row is None:
            raise NoMatch(org, req.info)
        members = await pool.fetch(
            f"SELECT code, relationship FROM {schema}.residents WHERE household_id = $1 ORDER BY code",
            row["household_id"],
        )
        return ResidentRecord(
            household_id=row["household_id"],
            relationship=row["relationship"],
            moved_in=row["moved_in"],
            members=[
                HouseholdMember(code=m["code"], relationship=m["relationship"]) for m in members
            ],
        )

    async def local_tax(req: LinkageRequest) -> LocalTax:
        row = await pool.fetchrow(
            f"SELECT fiscal_year, taxable_income, municipal_tax, dependents FROM {schema}.local_tax"
            " WHERE code = $1 AND fiscal_year = $2",
            req.subject,
            FISCAL_YEAR,
        )
        if row is None:
            raise NoMatch(org, req.info)
        return LocalTax(**dict(row))

    async def resident_cohort(req: LinkageRequest) -> ResidentCohort:
        p = CohortParams.model_validate(req.params)
        rows = await pool.fetch(
            f"SELECT code FROM {schema}.residents WHERE birth_date >= $1 AND birth_date < $2"
            " ORDER BY code",
            p.born_from,
            p.born_to,
        )
        return ResidentCohort(
            age=p.age,
            on=p.on,
            period_start=p.period_start,
            period_end=p.period_end,
            codes=[r["code"] for r in rows],
        )

    return {
        "resident-record": resident_record,
        "local-tax": local_tax,
        "resident-cohort": resident_cohort,
    }
