"""Whether a flow may start: the registered definition, its executors, its inputs, its triggers.

The hub asks this before a run's first step (``hub.resolve``); the HTTP API asks it before it
starts anything, so a malformed or unauthorised start is refused with its reason and no run
exists afterwards.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any, Literal

import asyncpg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from renkei.bpf import registry
from renkei.bpf.inputs import InputError, check_subject_code, validate_inputs
from renkei.bpf.models import BPF_ID
from renkei.bpf.providers import unserved_at_start
from renkei.bpf.review import suspension
from whitelist.controls_store import start_stop
from whitelist.decide import JST
from whitelist.models import Catalog

# Why a start is refused: each is also a failure type on the wire (renkei.contracts.failures).
RefusalKind = Literal[
    "UnknownBpf",
    "NotAnExecutor",
    "WrongTrigger",
    "InvalidInputs",
    "PurposeMismatch",
    "Suspended",
    "VersionStopped",
]


class StartRefused(Exception):
    """A start that cannot be admitted; ``kind`` names why."""

    def __init__(self, reason: str, kind: RefusalKind) -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind = kind


async def why_not(
    pool: asyncpg.Pool,
    bpf: str,
    version: int | None,
    mode: registry.Mode,
    executor: str | None = None,
) -> str:
    """Why no version of ``bpf`` (or not ``version``) may start in ``mode`` (for ``executor``)."""
    row = await pool.fetchrow(
        "SELECT version, state FROM registry.bpf_versions"
        " WHERE bpf = $1 AND ($2::int IS NULL OR version = $2) ORDER BY version DESC LIMIT 1",
        bpf,
        version,
    )
    if row is None:
        return f"{bpf}{f' version {version}' if version else ''} is not registered"
    if mode == "operation" and row["state"] == "operating" and executor is not None:
        return (
            f"{bpf} v{row['version']} is operating, but not for {executor}: each executor puts a"
            " version into operation for itself"
        )
    if mode == "operation":
        return (
            f"{bpf} v{row['version']} is {row['state']}: only an operating version starts in"
            " operation mode"
        )
    return f"{bpf} v{row['version']} is {row['state']}"


async def admit(
    pool: asyncpg.Pool,
    catalog: Catalog,
    mode: registry.Mode,
    *,
    bpf: str,
    version: int | None,
    executor: str,
    subject: str,
    inputs: dict[str, Any],
    trigger: str | None = None,
    parent_task: str | None = None,
    on: dt.date | None = None,
    hub: Ed25519PublicKey,
) -> tuple[registry.RegisteredBpf, dict[str, Any]]:
    """(the definition to run, the checked inputs), or :class:`StartRefused`.

    ``parent_task`` is the task of the flow that calls this one as its child: a child serves its
    parent's purpose (the same task, or one the catalog records the parent's task to include),
    or it does not start — data fetched for one purpose must not feed another.

    A suspension in force (of the version, or of the executor as requester) stops the start:
    the emergency stop's events count only as ``hub`` (the hub's public key) signed them.

    In operation, a version that a review after a change of the law found non-conformant
    (:mod:`renkei.bpf.review`) admits no run from the change's effective date on (``on``, the
    date in Japan, default today); the refusal (``VersionStopped``) names the source and the
    date.
    """
    if not re.fullmatch(BPF_ID, bpf):
        raise StartRefused("bpf: not a BPF id (lowercase letters, digits, hyphens)", "UnknownBpf")
    try:
        found = await registry.fetch(pool, bpf, version, mode, executor)
    except registry.DefinitionAltered as e:
        raise StartRefused(str(e), "UnknownBpf") from None
    if found is None:
        raise StartRefused(await why_not(pool, bpf, version, mode, executor), "UnknownBpf")
    d = found.definition
    if (stopped := await start_stop(pool, d.bpf, d.version, executor, hub=hub)) is not None:
        raise StartRefused(f"no new run starts: {stopped.describe()}", "Suspended")
    if mode == "operation":
        day = on or dt.datetime.now(JST).date()
        if (reviewed := await suspension(pool, d.bpf, d.version, day)) is not None:
            raise StartRefused(reviewed.reason(d.bpf, d.version), "VersionStopped")
    if executor not in catalog.orgs:
        raise StartRefused(f"unknown executor org {executor!r}", "NotAnExecutor")
    if not any(catalog.refers_to(e, executor) for e in d.owners.executors):
        raise StartRefused(
            f"{executor} is not an executor of {d.bpf} (executors: "
            f"{', '.join(d.owners.executors)})",
            "NotAnExecutor",
        )
    if parent_task is not None and not catalog.serves_purpose(parent_task, d.task):
        raise StartRefused(
            f"{d.bpf} serves task {d.task!r}, not its caller's {parent_task!r}",
            "PurposeMismatch",
        )
    if trigger is not None and trigger not in d.trigger_kinds():
        raise StartRefused(f"{d.bpf} cannot be started by trigger {trigger}", "WrongTrigger")
    try:
        check_subject_code(subject)
        checked = validate_inputs(d, inputs, catalog)
    except InputError as err:
        raise StartRefused(f"invalid start inputs: {err}", "InvalidInputs") from None
    # A provider that the executor or a role-constrained input names must serve what is asked
    # of it: refused here, not failed in operation at the linkage ("does not implement").
    if unserved := unserved_at_start(d, executor, checked, catalog):
        raise StartRefused(
            "; ".join(u.message for u in unserved),
            "InvalidInputs" if any(u.input for u in unserved) else "NotAnExecutor",
        )
    return found, checked
