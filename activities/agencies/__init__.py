"""Sample agencies: a municipality pair, a medical insurer, the pension body and a private
partner (a fictional electricity retailer, which takes part through act steps only).

Their providers are real activities reading each org's own tables in PostgreSQL, keyed by the
org's own subject codes. The data is synthetic and deterministic (see :mod:`.synthetic`).
"""

from __future__ import annotations

import asyncpg

from activities.agencies import insurer, municipality, pension, utility
from renkei.contracts.provider import Provider

SAMPLE_AGENCIES = ("city-minato", "city-shibuya", "kyokai-kenpo", "jps", "sample-denki")


def providers_for(org: str, pool: asyncpg.Pool) -> dict[str, Provider]:
    """The providers ``org`` runs in its worker."""
    if org in ("city-minato", "city-shibuya"):
        return municipality.providers(org, pool)
    if org == "kyokai-kenpo":
        return insurer.providers(pool)
    if org == "jps":
        return pension.providers(pool)
    if org == "sample-denki":
        return utility.providers()
    return {}
