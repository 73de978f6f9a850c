"""A medical insurer (全国健康保険協会): medical benefit payments, from its own schema."""

from __future__ import annotations

import asyncpg

from renkei.contracts.messages import LinkageRequest
from renkei.contracts.provider import Provider
from whitelist.payloads import MedicalBenefit, MedicalPayment


def providers(pool: asyncpg.Pool) -> dict[str, Provider]:
    async def medical_benefit(req: LinkageRequest) -> MedicalBenefit:
        insured = await pool.fetchval(
            "SELECT count(*) FROM agency_kyokai_kenpo.insured WHERE code = $1", req.subject
        )
        rows = await pool.fetch(
            "SELECT month, amount, kind FROM agency_kyokai_kenpo.medical_payments"
            " WHERE code = $1 ORDER BY month, amount",
            req.subject,
        )
        payments = [MedicalPayment(**dict(r)) for r in rows]
        return MedicalBenefit(
            insured=bool(insured), payments=payments, total=sum(p.amount for p in payments)
        )

    return {"medical-benefit": medical_benefit}
