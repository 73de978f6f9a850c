"""A private partner (a SAMPLE, fictional electricity retailer): it carries out one action, the
move notice of the moving one-stop service, and signs a receipt.

It receives what the act step sends (its own customer number for the person, the day of the
move, the new address) and nothing else: no subject code, no My Number. It keeps nothing here;
a real company would change the supply address in its own systems.
"""

from __future__ import annotations

import hashlib

from renkei.contracts.messages import LinkageRequest
from renkei.contracts.provider import Provider
from whitelist.payloads import ActionReceipt, MoveNotice


def providers() -> dict[str, Provider]:
    async def move_notice(req: LinkageRequest) -> ActionReceipt:
        notice = MoveNotice.model_validate(req.send)
        # Its own reference for the notice: names no one (a digest, not the customer number).
        digest = hashlib.sha256(
            f"{req.bpf}|{req.step}|{notice.customer_number}|{notice.moved_on}".encode()
        ).hexdigest()
        return ActionReceipt(done=True, reference=f"SD-{digest[:12]}")

    return {"electricity-move-notice": move_notice}
