"""renkei: whitelist-gated information linkage for public administration, on Temporal.

The public surface for agencies' code::

    from renkei import RenkeiClient, StartFlow

    client = await RenkeiClient.connect()
    handle = await client.start(StartFlow(bpf="child-allowance-check", executor="city-minato",
                                          subject=code, case_ref="2026-000123"))
    result = await handle.result()

and for an agency's providers (no ``temporalio`` needed)::

    from renkei import LinkageRequest, NoMatch

    async def local_tax(req: LinkageRequest) -> LocalTax:
        row = await pool.fetchrow("…", req.subject)
        if row is None:
            raise NoMatch("city-minato", req.info)
        return LocalTax(...)

The names are loaded on first use, so importing a kernel module (``renkei.kernel.settings``)
does not import the client, and the layers below the application stay free of it.
"""

from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# gRPC's C core runs handlers around every fork() of a process that has loaded it, and a child
# forked while other threads call into gRPC (the direct channel's endpoint and its clients) can
# crash in them before it execs: about one child in five when a subprocess is started with
# ``user=``, as the embedded PostgreSQL's ``pg_ctl`` is (a restart after a crash did not come
# back). renkei never uses gRPC in a forked child, so the handlers are off unless an operator
# sets ``GRPC_ENABLE_FORK_SUPPORT``. It is read when grpc is first imported (temporalio imports
# it): this package is imported first by every renkei process, the tests' and the bench's.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

# name → module that defines it
_EXPORTS = {
    "RenkeiClient": "renkei.app.client",
    "CaseConflict": "renkei.app.client",
    "FlowNotFound": "renkei.app.client",
    "ResponseRefused": "renkei.app.client",
    "RunStatus": "renkei.app.client",
    "StartFlow": "renkei.contracts.messages",
    "FlowResult": "renkei.contracts.messages",
    "LinkageOutcome": "renkei.contracts.messages",
    "Response": "renkei.contracts.messages",
    "Acknowledged": "renkei.contracts.messages",
    "Waiting": "renkei.contracts.messages",
    "DisclosureHold": "renkei.contracts.messages",
    "Pin": "renkei.contracts.messages",
    "LinkageRequest": "renkei.contracts.messages",
    "Provider": "renkei.contracts.provider",
    "NoMatch": "renkei.contracts.provider",
    "Failure": "renkei.contracts.failures",
    "Settings": "renkei.kernel.settings",
}

__all__ = [
    "Acknowledged",
    "CaseConflict",
    "DisclosureHold",
    "Failure",
    "FlowNotFound",
    "FlowResult",
    "LinkageOutcome",
    "LinkageRequest",
    "NoMatch",
    "Pin",
    "Provider",
    "RenkeiClient",
    "Response",
    "ResponseRefused",
    "RunStatus",
    "Settings",
    "StartFlow",
    "Waiting",
]

if TYPE_CHECKING:
    from renkei.app.client import (
        CaseConflict,
        FlowNotFound,
        RenkeiClient,
        ResponseRefused,
        RunStatus,
    )
    from renkei.contracts.failures import Failure
    from renkei.contracts.messages import (
        Acknowledged,
        DisclosureHold,
        FlowResult,
        LinkageOutcome,
        LinkageRequest,
        Pin,
        Response,
        StartFlow,
        Waiting,
    )
    from renkei.contracts.provider import NoMatch, Provider
    from renkei.kernel.settings import Settings


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'renkei' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
