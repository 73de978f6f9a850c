"""Guarantees that hold when a participant is hostile: each test plays the attacker.

(The threat model's rows are in docs/trust.md; each names the test here that proves it.)
"""

from __future__ import annotations

import pytest
from temporalio.client import WorkflowFailureError

from renkei.contracts.failures import Failure
from renkei.contracts.messages import LinkageRequest
from renkei.kernel import records
from whitelist.payloads import ResidentRecord

from .helpers import code, pick, register_fixture, sdk, start, workers


async def _kept_by(pool, wid: str, keeper: str) -> list[records.AccessRecord]:
    return [r for r in await records.query(pool, workflow_id=wid) if r.keeper == keeper]


async def test_a_city_cannot_read_another_citys_register_under_its_own_use_ordinance(
    client, pool, settings, catalog, live_whitelist
) -> None:
    """番号法第9条第2項 covers city-minato's use of its own register, not city-shibuya's."""
    await register_fixture(pool, "register-probe.yaml")
    asked: list[str] = []

    async def spy(req: LinkageRequest) -> ResidentRecord:
        asked.append(req.subject)
        raise AssertionError("city-shibuya's register must not be read")

    spying = {"city-shibuya": {"resident-record": spy}}
    rc = sdk(client, settings)
    h = pick(settings, lambda h: h.municipality == "city-minato")
    subject = code(settings, "city-minato", h.members[0])
    async with workers(client, pool, settings, catalog, live_whitelist, providers=spying):
        other = await rc.start(
            start("register-probe", "city-minato", subject, inputs={"register": "city-shibuya"})
        )
        with pytest.raises(WorkflowFailureError) as failure:
            await other.result()
        own = await rc.start(
            start("register-probe", "city-minato", subject, inputs={"register": "city-minato"})
        )
        assert (await own.result()).outcome == "completed"
    assert Failure.LINKAGE_DENIED.caused(failure.value.cause)
    assert "its own records only" in str(failure.value.cause)
    assert asked == []  # city-shibuya's code was never handed out, its provider never ran
    assert await _kept_by(pool, other.id, "city-shibuya") == []
    for keeper in ("city-minato", records.HUB):
        [rec] = await _kept_by(pool, other.id, keeper)
        assert rec.outcome == "denied" and rec.provider == "city-shibuya"
    [kept] = await _kept_by(pool, own.id, "city-minato")
    assert kept.outcome == "allowed" and kept.whitelist_row == "renkei-local/2"
