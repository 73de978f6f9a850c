"""The hub's side of a contract probe (``renkei contract``): a probe permit for each step.

It runs in the process of ``renkei contract``, which holds the hub's key, on the probe run's own
queue. The permit binds the attempt as Temporal reports it (the probe run's workflow, run and the
step), so the org's gate checks it as it checks any permit, and more (``activities.gate``).
"""

from __future__ import annotations

import datetime as dt

from temporalio import activity

from activities.permits import PermitIssuer
from renkei.contracts.messages import LinkageRequest
from renkei.contracts.names import HUB
from renkei.contracts.probe import PROBE_PERMIT_ACTIVITY, PROBE_TASK, PermitAsk


class ProbePermits:
    def __init__(self, issuer: PermitIssuer, budget: dt.timedelta) -> None:
        self._issuer = issuer
        self._budget = budget
        # The provider's signing key each permit was issued with (by the permit's signature),
        # read with its sealing key: the answer to a permit verifies against the key the
        # provider had when it was issued, even if the provider's keys rotate during the probe.
        self.keys: dict[str, str] = {}

    @activity.defn(name=PROBE_PERMIT_ACTIVITY)
    async def permit(self, ask: PermitAsk) -> LinkageRequest:
        """The probe's linkage request: its permit, and the probe code sealed to the org."""
        info = activity.info()
        signed, sealed, provider_key = await self._issuer.issue_probe(
            workflow_id=info.workflow_id or "",
            run_id=info.workflow_run_id or "",
            step=ask.step.step,
            provider=ask.org,
            info=ask.step.info,
            provider_code=ask.step.subject or None,
            budget=self._budget,
            now=dt.datetime.now(dt.UTC),
            fields=tuple(sorted(ask.step.send)) or None,
        )
        self.keys[signed.signature] = provider_key
        return LinkageRequest(
            requester=HUB,
            provider=ask.org,
            task=PROBE_TASK,
            info=ask.step.info,
            subject="",
            params=ask.step.params,
            send=ask.step.send,
            bpf=PROBE_TASK,
            bpf_version=1,
            content_hash="-",
            step=ask.step.step,
            permit=signed,
            sealed_subject=sealed,
        )
