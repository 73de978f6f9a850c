"""What an upgrade found from before the hub signed it, made the hub's word once.

Migrations 0059 to 0061 made the PIAs and suspensions count only as the hub signed them, an
individual number's row only with the hub's binding, and a hold's approval only with the hub's
signature. What an installation held before is carried over by the hub's process at its start
(``renkei init``, ``renkei up``, ``renkei worker hub``), once, and only what the database dated
before those migrations: nothing the application's role wrote since is taken.
"""

from __future__ import annotations

import logging

import asyncpg

from renkei.kernel import holds, keys
from renkei.kernel.pseudonyms import Pseudonyms
from renkei.kernel.settings import Settings
from whitelist import controls_store

log = logging.getLogger(__name__)


async def carry_over_unsigned(pool: asyncpg.Pool, settings: Settings) -> None:
    """Make the hub's word of what an upgrade found from before signing (migrations 0059 to
    0061): the PIAs and suspensions in force signed again, the individual numbers enrolled
    bound, the hold approvals made signed; each only as the database dated it before its
    migration, so nothing the application's role wrote since is taken. Logged when it acts."""
    k = keys.load(settings)
    carried = await controls_store.carry_over(pool, k.signer())
    bound = await Pseudonyms(pool, k.hub_key).bind_before()
    signed = await holds.sign_before(pool, k.signer())
    if carried or bound or signed:
        log.warning(
            "carried over from before signing: %s PIA/suspension events signed again, %s"
            " individual numbers bound, %s hold approvals signed",
            carried,
            bound,
            signed,
        )
