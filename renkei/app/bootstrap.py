"""Preparing a database: schema, whitelist, BPF registry and the sample agencies' data."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from pathlib import Path

import asyncpg
from pydantic import BaseModel

from activities.agencies.seed import seed, seed_probe_fixtures
from renkei.app import onboarding
from renkei.app.onboarding import register_conformance_body
from renkei.app.sources import load_defaults
from renkei.bpf import registry
from renkei.bpf.loader import BpfFileError, Issue, definition_files, load_file
from renkei.bpf.models import BpfDefinition
from renkei.bpf.validation import KnownBpfs, validate
from renkei.kernel import keys, parties, records
from renkei.kernel.settings import Settings
from whitelist import controls_store, orgs, store
from whitelist.catalog import default_catalog
from whitelist.controls import sample_pias
from whitelist.decide import JST, WhitelistIndex
from whitelist.local import all_rows
from whitelist.models import Catalog
from workers.carried import carry_over_unsigned


class Prepared(BaseModel):
    whitelist_rows: int
    whitelist_version: int
    registered: list[str]
    rejected: list[str]
    seeded: bool
    pias_recorded: int = 0
    orgs_onboarded: list[str] = []


async def load_whitelist(pool: asyncpg.Pool, settings: Settings) -> tuple[int, int]:
    """Load the shipped sources (the annex table, the local rows, the partner rows) where the
    store differs, each load sealed with the hub's key; return (rows, version). Each load is
    recorded and reviewed (renkei.app.sources). A store from before seals that needs no load is
    sealed as it is, once (:func:`whitelist.store.seal_if_unsealed`)."""
    hub = keys.load(settings).signer()
    total, version, _ = await load_defaults(pool, hub=hub)
    if await store.seal_if_unsealed(pool, hub):
        version = await pool.fetchval("SELECT version FROM whitelist.version")
    return total, version


def check_file(
    path: Path,
    index: WhitelistIndex,
    at: dt.date | None = None,
    known: KnownBpfs | Mapping[str, BpfDefinition] | None = None,
    catalog: Catalog | None = None,
) -> tuple[object, list[Issue]]:
    """Parse and validate one file: (loaded or None, issues). ``known``: what calls may name;
    ``catalog``: the shipped one unless given (with the org registry's orgs, say)."""
    try:
        loaded = load_file(path, display_name=_display(path))
    except BpfFileError as err:
        return None, err.issues
    return loaded, validate(loaded, catalog or default_catalog(), index, at=at, known=known)


def known_definitions(*folders: Path, registered: KnownBpfs | None = None) -> KnownBpfs:
    """Every definition a ``call`` may name: the registered versions with their states
    (``registered``, added to), and the files in ``folders`` under versions not registered."""
    out = registered if registered is not None else KnownBpfs()
    for folder in folders:
        for path in definition_files(folder):
            try:
                d = load_file(path).definition
            except BpfFileError:
                continue
            if out.version(d.bpf, d.version) is None:
                out.add(d)
    return out


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


async def register_definitions(pool: asyncpg.Pool, directory: Path) -> tuple[list[str], list[str]]:
    index = await store.load_index(pool)
    known = known_definitions(directory, registered=await registry.known(pool))
    registered: list[str] = []
    rejected: list[str] = []
    for path in definition_files(directory):
        loaded, issues = check_file(path, index, known=known)
        errors = [i for i in issues if i.severity == "error"]
        if loaded is None or errors:
            rejected.extend(str(i) for i in errors)
            continue
        try:
            await registry.register(pool, loaded)  # type: ignore[arg-type]
        except registry.RegistryConflict as err:  # reported; the others go on loading
            rejected.append(str(err))
            continue
        d = loaded.definition  # type: ignore[attr-defined]
        registered.append(f"{d.bpf} v{d.version}")
    return registered, rejected


async def issue_keys(pool: asyncpg.Pool, settings: Settings, orgs: list[str]) -> None:
    """Each org's key file (issued once) and every party's public keys in the registry.

    In this installation the platform issues the orgs' keys; an org that makes its own would
    send only its public keys to be registered.
    """
    hub = keys.load(settings)
    await parties.register(pool, hub.signer(), hub.public(records.HUB))
    for org in orgs:
        await parties.register(pool, hub.signer(), keys.issue(settings, org).public(org))


async def prepare(pool: asyncpg.Pool, settings: Settings) -> Prepared:
    """Load the whitelist, register the definitions, seed the sample agencies (idempotent).

    The schema comes first: :func:`renkei.kernel.db.migrate`, before ``pool`` is created.
    """
    await keys.check_against(pool, keys.load(settings), str(keys.keys_path(settings)))
    await issue_keys(pool, settings, sorted(default_catalog().orgs))
    await register_conformance_body(pool, settings)
    rows, version = await load_whitelist(pool, settings)
    await carry_over_unsigned(pool, settings)
    # The samples' PIAs, for every (org, task) a row needs; never over a change made since.
    pias = await controls_store.seed_pias(
        pool,
        sample_pias(default_catalog(), all_rows(default_catalog()), dt.datetime.now(JST).date()),
        recorded_by="platform (samples)",
        hub=keys.load(settings).signer(),
    )
    # The org registry: the shipped orgs, each made active by the onboarding path.
    await orgs.seed(
        pool, default_catalog().orgs, onboarding.PLATFORM, hub=keys.load(settings).signer()
    )
    registered, rejected = await register_definitions(pool, settings.definitions_dir)
    seeded = await seed(
        pool, default_catalog(), keys.load(settings).hub_key, settings.sample_residents
    )
    if not seeded:  # an installation seeded before the contract probes: their fixtures too
        async with pool.acquire() as conn, conn.transaction():
            await seed_probe_fixtures(conn)
    onboarded = await onboarding.onboard_samples(
        pool, settings, default_catalog(), await store.load_index(pool)
    )
    return Prepared(
        orgs_onboarded=onboarded,
        whitelist_rows=rows,
        whitelist_version=version,
        registered=registered,
        rejected=rejected,
        seeded=seeded,
        pias_recorded=pias,
    )
