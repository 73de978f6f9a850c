"""The pension body (日本年金機構): public pension benefits, from its own schema."""

from __future__ import annotations

import asyncpg

from renkei.contracts.messages import LinkageRequest
from renkei.contracts.provider import Provider
from whitelist.payloads import PensionBenefit


def providers(pool: asyncpg.Pool) -> dict[str, Provider]:
    async def pension_benefit(req: LinkageRequest) -> PensionBenefit:
        row = await pool.fetchrow(
            "SELECT kind, annual_amount FROM agency_jps.pensions WHERE code = $1", req.subject
        )
        if row is None:
            return PensionBenefit(receives_pension=False, kind="", annual_amount=0)
        return PensionBenefit(
            receives_pension=True, kind=row["kind"], annual_amount=row["annual_amount"]
        )

    return {"pension-benefit": pension_benefit}
