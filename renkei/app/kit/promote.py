"""Promoting the shipped samples through the lifecycle on a fresh installation.

Every shipped draft that has a scenario set, and no operating version, passes the kit (its report
stored) and is then submitted, approved and put into operation by the real transitions — by each
of its sample executor orgs for itself (each executor operates a version for itself alone).
"""

from __future__ import annotations

from pathlib import Path

import asyncpg
from temporalio.client import Client

from renkei.app.kit.report import store_report
from renkei.app.kit.runner import run_scenarios
from renkei.app.kit.scenarios import scenarios_for
from renkei.bpf import registry
from renkei.bpf.loader import BpfFileError, definition_files, load_file
from renkei.bpf.models import BpfDefinition
from renkei.kernel.settings import Settings
from whitelist.models import Catalog, role_of
from whitelist.store import LiveWhitelist


async def promote_samples(
    client: Client,
    pool: asyncpg.Pool,
    settings: Settings,
    catalog: Catalog,
    whitelist: LiveWhitelist,
    directory: Path | None = None,
) -> list[str]:
    """Take every shipped draft with a scenario set, and no operating version, to operating.

    Each step is the real one: the kit runs and its report is stored; then the definer submits,
    the conformance body approves (its signed certificate kept, as for any approval) and each
    org that can execute it puts it into operation for itself, each transition recorded with a
    note saying it was the start-up of a fresh installation.
    """
    done: list[str] = []
    # Only the shipped files' own content: a draft written into the database otherwise (by
    # whoever holds the application's role) is not approved with the conformance body's key
    # because its name is a sample's.
    shipped: dict[tuple[str, int], str] = {}
    for path in definition_files(settings.definitions_dir):
        try:
            loaded = load_file(path)
        except BpfFileError:
            continue
        shipped[(loaded.definition.bpf, loaded.definition.version)] = loaded.content_hash
    rows = await pool.fetch(
        "SELECT v.bpf, v.version, v.content_hash FROM registry.bpf_versions v"
        " WHERE v.state = 'draft'"
        " AND NOT EXISTS (SELECT 1 FROM registry.bpf_versions o"
        "  WHERE o.bpf = v.bpf AND o.state = 'operating') ORDER BY v.bpf, v.version"
    )
    note = "sample definition, promoted at start-up after passing the conformance kit"
    # the conformance body signs its approvals, each executor its operation
    from renkei.app.approvals import operation_signer, signer

    sign = signer(settings)
    operate = operation_signer(settings)
    for row in rows:
        try:
            scenario_set = scenarios_for(row["bpf"], directory)
        except FileNotFoundError:
            continue
        if shipped.get((row["bpf"], row["version"])) != row["content_hash"]:
            done.append(
                f"{row['bpf']} v{row['version']}: not promoted: its registered content is not"
                f" the shipped file's ({settings.definitions_dir})"
            )
            continue
        try:
            report = await run_scenarios(
                client, pool, settings, catalog, whitelist, row["bpf"], row["version"], scenario_set
            )
        except LookupError as err:  # its definition changed in the database: not promoted
            done.append(f"{row['bpf']} v{row['version']}: not promoted: {err}")
            continue
        await store_report(pool, report)
        if not report.passed:
            done.append(f"{row['bpf']} v{row['version']}: conformance FAILED\n{report.summary()}")
            continue
        found = await registry.fetch(pool, row["bpf"], row["version"], "test")
        assert found is not None
        d = found.definition
        steps: list[tuple[registry.Action, str]] = [
            ("submit", d.owners.definer),
            ("approve", settings.conformance_body),
        ]
        steps += [("operate", org) for org in _executors(d, catalog)]
        for action, actor in steps:
            await registry.transition(
                pool,
                d.bpf,
                d.version,
                action,
                actor,
                conformance_body=settings.conformance_body,
                actor_roles=frozenset(catalog.org_roles(actor))
                if actor in catalog.orgs
                else frozenset(),
                note=note,
                catalog=catalog,
                whitelist=whitelist.index,
                approval_signer=sign,
                operation_signer=operate,
            )
        done.append(f"{d.bpf} v{d.version}: operating")
    return done


def _executors(d: BpfDefinition, catalog: Catalog) -> list[str]:
    """Every org that can execute ``d``, in the order its executors name them."""
    found: list[str] = []
    for e in d.owners.executors:
        for org in [e] if role_of(e) is None else catalog.orgs_of(e):
            if org in catalog.orgs and org not in found:
                found.append(org)
    if not found:
        raise LookupError(f"no org can execute {d.bpf}")
    return found
