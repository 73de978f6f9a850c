"""Helpers shared by the integration tests: sample subjects, workers, starts."""

from __future__ import annotations

import contextlib
import datetime as dt
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from temporalio.client import Client
from temporalio.worker import Worker
from typer.testing import CliRunner

from activities.agencies import SAMPLE_AGENCIES
from activities.agencies.synthetic import Household, Person, generate
from activities.linkage import Provider
from renkei.app.client import RenkeiClient
from renkei.contracts.messages import StartFlow
from renkei.kernel import keys, records
from renkei.kernel.pseudonyms import derive_code
from renkei.kernel.records import AccessRecord
from renkei.kernel.settings import Settings
from whitelist.models import Catalog
from whitelist.store import LiveWhitelist
from workers.assembly import running_workers

# How a linkage decided after 2024-05-27 cites the 2015 table, which stands in for the ordinance
# under Article 19(8) until that is loaded (docs/whitelist.md, "Sources").
STAND_IN = " (2015年時点の表: 現行の命令が読み込まれていないため代用)"


def households(settings: Settings) -> list[Household]:
    return generate(settings.sample_residents)


def pick(settings: Settings, test: Callable[[Household], bool]) -> Household:
    return next(h for h in households(settings) if test(h))


def code(settings: Settings, org: str, person: Person) -> str:
    return derive_code(keys.load(settings).hub_key, org, person.subject_id)


def hub_public(settings: Settings) -> Ed25519PublicKey:
    """The hub's public signing key (what the citizen's view checks providers' keys by)."""
    return keys.load(settings).signer().public_key()


@contextlib.asynccontextmanager
async def workers(
    client: Client,
    pool: asyncpg.Pool,
    settings: Settings,
    catalog: Catalog,
    whitelist: LiveWhitelist,
    *,
    agencies: tuple[str, ...] = SAMPLE_AGENCIES,
    providers: dict[str, dict[str, Provider]] | None = None,
    control: bool = True,
) -> AsyncIterator[list[Worker]]:
    """The project's worker set, with some agencies' providers replaced."""
    async with running_workers(
        client,
        pool,
        settings,
        catalog,
        whitelist,
        control=control,
        agencies=agencies,
        providers=(providers or {}).get,
    ) as ws:
        yield ws


def start(bpf: str, executor: str, subject: str, **kw: Any) -> StartFlow:
    return StartFlow(
        bpf=bpf, executor=executor, subject=subject, case_ref=f"case-{uuid.uuid4().hex[:10]}", **kw
    )


def child_rearing(
    settings: Settings,
    applicant: Person,
    spouse: Person | None = None,
    municipality: str = "city-minato",
    **kw: Any,
) -> StartFlow:
    """The child-rearing allowance income check, run by Tokyo for ``applicant``."""
    inputs: dict[str, str] = {"municipality": municipality}
    if spouse is not None:
        inputs["spouse"] = code(settings, "pref-tokyo", spouse)
    return start(
        "child-rearing-allowance-income-check",
        "pref-tokyo",
        code(settings, "pref-tokyo", applicant),
        inputs=inputs,
        **kw,
    )


async def register_fixture(pool: asyncpg.Pool, name: str) -> None:
    """Register ``tests/definitions/NAME`` as a draft, after checking it has no error."""
    from pathlib import Path

    from renkei.bpf import registry
    from renkei.bpf.loader import load_file
    from renkei.bpf.validation import validate
    from whitelist import store
    from whitelist.catalog import default_catalog

    loaded = load_file(Path(__file__).parent / "definitions" / name)
    found = validate(loaded, default_catalog(), await store.load_index(pool))
    errors = [i for i in found if i.severity == "error"]
    assert not errors, errors
    await registry.register(pool, loaded)


def access_record(keeper: str, n: int, **changes: Any) -> AccessRecord:
    """A synthetic access record of attempt ``n`` kept by ``keeper`` (fields overridable)."""
    return AccessRecord(
        keeper=keeper,
        attempt_key=f"wf-{n}/run/step",
        decided_at=dt.datetime.now(dt.UTC),
        requester="pref-tokyo",
        provider="city-minato",
        task="child-rearing-allowance",
        info="local-tax",
        legal_reference="番号法別表第二 五十七項",
        whitelist_row=None,
        subject_code=f"CODE{n:016d}",
        bpf="probe",
        bpf_version=1,
        content_hash="sha256:0",
        workflow_id=f"wf-{n}",
        run_id="run",
        step="step",
        outcome="allowed",
        reason="ok",
    ).model_copy(update=changes)


async def records_by_party(
    pool: asyncpg.Pool, workflow_id: str
) -> dict[tuple[str, str], list[AccessRecord]]:
    """A run's access records by (party, step); party is requester, provider or hub."""
    found: dict[tuple[str, str], list[AccessRecord]] = {}
    for r in await records.query(pool, workflow_id=workflow_id):
        party = (
            "hub" if r.keeper == "hub" else "provider" if r.keeper == r.provider else "requester"
        )
        found.setdefault((party, r.step), []).append(r)
    return found


def shibuya_family(settings: Settings, index: int = 0) -> Household:
    """The ``index``-th family of Shibuya (cycling through them)."""
    families = [
        h for h in households(settings) if h.municipality == "city-shibuya" and h.kind == "family"
    ]
    return families[index % len(families)]


def allowance_check(settings: Settings, index: int = 0) -> StartFlow:
    """Minato's child-allowance check (two parallel linkages: Shibuya's local tax, the JPS's
    pensions) for a Shibuya family's parent."""
    h = shibuya_family(settings, index)
    return start(
        "child-allowance-check",
        "city-minato",
        code(settings, "city-minato", h.members[0]),
        inputs={"previous_municipality": "city-shibuya"},
    )


def sdk(client: Client, settings: Settings) -> RenkeiClient:
    return RenkeiClient(client, settings)


def run(
    cli: CliRunner, *args: str, input: str | None = None, token: str | None = None
) -> tuple[int, str]:
    """Invoke the renkei command; (exit code, stdout and stderr). With ``token``, signed in as
    that operator (``""``: signed in as no one)."""
    from renkei.app.actors import TOKEN_VARIABLE
    from renkei.app.cli import app

    env = None if token is None else {TOKEN_VARIABLE: token}
    result = cli.invoke(app, list(args), input=input, env=env)
    return result.exit_code, result.output


def operator_token(cli: CliRunner, name: str, *options: str) -> str:
    """A new operator ``name`` (``renkei operators add NAME OPTIONS``): its token."""
    code, out = run(cli, "operators", "add", name, *options)
    assert code == 0, out
    return out.splitlines()[0]
