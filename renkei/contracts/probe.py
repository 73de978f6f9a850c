"""Contract probes: the contract test reaching an org's own worker the way a linkage does.

``renkei contract ORG`` runs a :data:`PROBE_WORKFLOW` whose steps go to the org's task queue
through its whitelist gate, each with a **probe permit** the hub signs (``Permit.probe``). The
gate accepts such a permit only

- in a probe run (a workflow id under :data:`PROBE_ID_PREFIX`, executed by the hub);
- for an item the org serves, or an action it carries out, on the day;
- for a **probe subject**: a code of :func:`probe_code`'s form, or no code (an act, a cohort).

A probe code is never a person's code: a person's code is twenty base32 capitals
(``A``-``Z``, ``2``-``7``), and every probe code holds a ``0``. An org's providers hold a
synthetic fixture under ``probe_code(org)`` (the sample agencies' seed writes one); they must
not hold ``probe_code(org, held=False)``. The gate records each probe in its org's own table of
probes (``records.contract_probes``), never in its chain of access records: nothing of a probe is
billed, counted, or shown on a citizen's page.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any, Literal

from pydantic import BaseModel, Field

from renkei.contracts.names import HUB

PROBE_WORKFLOW = "renkei.contract-probe"
PROBE_PERMIT_ACTIVITY = "probe.permit"
PROBE_ID_PREFIX = "contract-probe/"
PROBE_TASK = "contract-probe"
PROBE_MARK = "0"  # no base32 code holds it


def probe_code(org: str, *, held: bool = True) -> str:
    """The probe subject's code at ``org``: the one its fixture holds (``held``), or one it must
    not hold. Twenty characters, like a person's code, but never one."""
    digest = hashlib.sha256(f"renkei/probe/v1|{org}|{'held' if held else 'none'}".encode())
    return "PROBE" + PROBE_MARK + base64.b32encode(digest.digest()).decode()[:14]


def is_probe_code(code: str) -> bool:
    return len(code) == 20 and code.startswith("PROBE" + PROBE_MARK)


def probe_workflow_id(org: str, run: str) -> str:
    """``contract-probe/hub/<org>.<run>``: executed by the hub, naming no one."""
    return f"{PROBE_ID_PREFIX}{HUB}/{org}.{run}"


def is_probe_run(workflow_id: str) -> bool:
    return workflow_id.startswith(f"{PROBE_ID_PREFIX}{HUB}/")


def probe_queue(prefix: str, run: str) -> str:
    """The probe run's own queue (served by the ``renkei contract`` process, as the hub)."""
    return f"{prefix}.contract-probe.{run}.{HUB}"


class ProbeStep(BaseModel):
    """One probe of one item or action: its step id, what it asks and of whom."""

    step: str = Field(pattern=r"^[a-z0-9][a-z0-9.-]{0,99}$")
    info: str
    act: bool = False
    subject: str = ""
    params: dict[str, Any] = Field(default_factory=dict)
    send: dict[str, Any] = Field(default_factory=dict)


class ProbeRun(BaseModel):
    org: str
    task_queue_prefix: str
    probe_queue: str
    timeout_seconds: float = Field(gt=0, le=600)
    steps: list[ProbeStep]


class PermitAsk(BaseModel):
    org: str
    step: ProbeStep


class ProbeAnswer(BaseModel):
    """What one probe got back: the provider's signed answer, or the failure that came."""

    step: str
    info: str
    permit_signature: str = ""
    answer: dict[str, Any] | None = None
    failure: str | None = None
    failure_kind: Literal["timeout", "refused", "no-match", "failed"] | None = None
