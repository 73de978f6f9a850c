"""Bad input gets a clear answer, and what passes the checks runs.

- The same case reference (or notification event id) with other content is a conflict (409),
  never the first person's flow; the same content again is the same run.
- Unknown ids answer 404 (a one-line error on the command line); out-of-range dates and control
  characters 422.
- Inputs are checked against what the expressions' types hold before any workflow exists; a
  value that still does not fit (a provider's answer) fails the flow with a reason that names
  no value, instead of retrying its workflow task for ever.
- A definition changed without a new version is reported, and the others go on loading.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import pytest_asyncio
from temporalio.client import Client, WorkflowFailureError

from renkei.app.bootstrap import register_definitions
from renkei.app.client import CaseConflict, RenkeiClient
from renkei.bpf.inputs import INT_MAX
from renkei.contracts.messages import StartFlow
from renkei.contracts.names import control_queue, workflow_id
from renkei.kernel import keys
from renkei.kernel.pseudonyms import PORTAL, derive_code
from renkei.kernel.settings import Settings
from tests.paths import SAMPLES_DIR
from whitelist.payloads import LocalTax

from .helpers import (
    allowance_check,
    child_rearing,
    code,
    households,
    register_fixture,
    run,
    start,
    workers,
)

TOO_BIG = INT_MAX + 1  # 9223372036854775808: one past what a CEL int holds


@contextlib.asynccontextmanager
async def _http(
    client: Client, pool: asyncpg.Pool, settings: Settings, org: str | None, bearer: str = ""
) -> AsyncIterator[httpx.AsyncClient]:
    """The HTTP app in process, as ``org`` (with its API token), or with ``bearer`` if given."""
    from renkei.app.web import create_app
    from renkei.app.web.api import issue_token

    token = await issue_token(pool, org) if org else bearer
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(settings, pool, client)),
        base_url="http://renkei",
        headers={"Authorization": f"Bearer {token}"} if token else {},
    ) as http:
        yield http


@pytest_asyncio.fixture
async def api(
    client: Client, pool: asyncpg.Pool, settings: Settings
) -> AsyncIterator[httpx.AsyncClient]:
    """The HTTP app in process, with pref-tokyo's API token."""
    async with _http(client, pool, settings, "pref-tokyo") as http:
        yield http


def _body(flow: StartFlow) -> dict[str, Any]:
    return flow.model_dump(mode="json", exclude={"resume"})


# -- conflicts ---------------------------------------------------------------------------------


async def test_the_same_case_reference_with_other_content_is_a_conflict(
    api: httpx.AsyncClient, client: Client, settings: Settings
) -> None:
    first, other = households(settings)[0], households(settings)[1]
    flow = child_rearing(settings, first.members[0])
    started = await api.post("/api/flows", json=_body(flow))
    assert started.status_code == 201, started.text
    wid = started.json()["workflow_id"]

    again = await api.post("/api/flows", json=_body(flow))  # a retry: the same run
    assert again.status_code == 201 and again.json()["workflow_id"] == wid

    another_subject = flow.model_copy(
        update={"subject": code(settings, "pref-tokyo", other.members[0])}
    )
    other_inputs = flow.model_copy(update={"inputs": {"municipality": "city-shibuya"}})
    for conflicting in (another_subject, other_inputs):
        refused = await api.post("/api/flows", json=_body(conflicting))
        assert refused.status_code == 409, refused.text
        detail = refused.json()["detail"]
        assert flow.case_ref in detail and "already taken" in detail
        assert conflicting.subject not in detail and flow.subject not in detail
        with pytest.raises(CaseConflict):  # the SDK says the same
            await RenkeiClient(client, settings).start(conflicting)
    # The first person's flow is untouched, and no other run was made.
    started_with = await RenkeiClient(client, settings).started_with(wid)
    assert started_with.subject == flow.subject
    assert started_with.inputs == flow.inputs


async def test_a_run_started_before_fingerprints_is_compared_by_its_start(
    client: Client, settings: Settings
) -> None:
    """A run without the memo (started before this change, or a child flow): its start record
    decides."""
    h = households(settings)[2]
    flow = child_rearing(settings, h.members[0])
    await client.start_workflow(
        flow.bpf,
        flow,
        id=workflow_id(flow.bpf, flow.executor, flow.case_ref),
        task_queue=control_queue(settings.task_queue_prefix),
    )
    sdk = RenkeiClient(client, settings)
    assert (await sdk.start(flow)).id == workflow_id(flow.bpf, flow.executor, flow.case_ref)
    with pytest.raises(CaseConflict):
        await sdk.start(flow.model_copy(update={"inputs": {"municipality": "city-shibuya"}}))


async def test_the_same_event_id_with_other_content_is_a_conflict(
    client: Client, pool: asyncpg.Pool, settings: Settings
) -> None:
    minato = [p for h in households(settings) if h.municipality == "city-minato" for p in h.members]
    notice = {
        "publisher": "city-minato",
        "event_id": f"death-{uuid.uuid4().hex[:8]}",
        "event": "death",
        "subject": code(settings, "city-minato", minato[0]),
        "occurred_on": "2026-10-31",
    }
    async with _http(client, pool, settings, "city-minato") as http:
        first = await http.post("/api/notifications", json=notice)
        assert first.status_code == 200, first.text
        assert first.json()["duplicate"] is False
        again = await http.post("/api/notifications", json=notice)
        assert again.status_code == 200 and again.json()["duplicate"] is True
        assert again.json()["started"] == first.json()["started"]
        for change in (
            {"event": "move"},
            {"subject": code(settings, "city-minato", minato[1])},
            {"occurred_on": "2026-11-01"},
        ):
            refused = await http.post("/api/notifications", json={**notice, **change})
            assert refused.status_code == 409, refused.text
            assert notice["event_id"] in refused.json()["detail"]
            assert minato[1].subject_id.hex not in refused.text


# -- unknown ids, bad parameters ----------------------------------------------------------------


async def test_an_unknown_flow_is_404_and_bad_parameters_are_422(
    api: httpx.AsyncClient, pool: asyncpg.Pool, settings: Settings, client: Client
) -> None:
    unknown = "child-rearing-allowance-income-check/pref-tokyo/NO-SUCH"
    state = await api.get(f"/api/flows/{unknown}/state")
    assert state.status_code == 404 and state.json()["detail"] == "no such flow of yours"
    answer = await api.post(f"/api/flows/{unknown}/respond", json={"step": "consent"})
    assert answer.status_code == 404, answer.text
    for path in (
        "/api/flows/child-rearing-allowance-income-check/pref-tokyo/A%00B/state",
        "/api/flows/x/pref-tokyo/y/state?lang=%1b",
    ):
        assert (await api.get(path)).status_code == 422
    held = await api.post(
        "/api/holds",
        json={
            "bpf": "x\u0000",
            "case_ref": "c1",
            "reason": "investigation",
            "until": "2030-01-01T00:00:00Z",
        },
    )
    assert held.status_code == 422, held.text
    bad_bpf = await api.post(
        "/api/flows",
        json={
            **_body(child_rearing(settings, households(settings)[0].members[0])),
            "bpf": "a\u0000b",
        },
    )
    assert bad_bpf.status_code == 422, bad_bpf.text

    person = households(settings)[0].members[0]
    portal = derive_code(keys.load(settings).hub_key, PORTAL, person.subject_id)
    async with _http(client, pool, settings, None, portal) as citizen:
        assert (await citizen.get("/api/citizen/records")).status_code == 200
        for query in (
            "since=0001-01-01",
            "until=9999-12-31",
            "since=0001-01-01&until=9999-12-31",
            "agency=%00",
            "agency=city%0Aminato",
            "agency=../etc",
        ):
            found = await citizen.get(f"/api/citizen/records?{query}")
            assert found.status_code == 422, (query, found.status_code, found.text)
        page = await citizen.get("/citizen?agency=%00")
        assert page.status_code == 422
    async with _http(client, pool, settings, None) as anonymous:
        signin = await anonymous.post("/citizen/signin", data={"portal_code": "A\u0000B"})
        assert signin.status_code == 401
        nul = await anonymous.get(
            "/api/citizen/records", headers={"Authorization": "Bearer A\u0001B"}
        )
        assert nul.status_code == 401


def test_status_of_an_unknown_flow_is_a_one_line_error(
    cli, client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    from renkei.kernel.settings import get_settings

    monkeypatch.setenv("RENKEI_TEMPORAL_ADDRESS", client.service_client.config.target_host)
    get_settings.cache_clear()
    code_, out = run(cli, "status", "child-allowance-check/city-minato/NO-SUCH")
    assert code_ == 1, out
    assert out.strip() == "error: no flow child-allowance-check/city-minato/NO-SUCH"


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["bpf", "validate", "--at", "someday", "x.yaml"], "--at is a day"),
        (["bpf", "history", "no-such-bpf", "1"], "no-such-bpf version 1 is not registered"),
        (["subjects", "sample", "--org", "no-such-org"], "unknown org 'no-such-org'"),
        (["records", "mine", "--portal-code", "X", "--until", "9999-12-31"], "--until:"),
        (["records", "mine", "--portal-code", "X", "--agency", "a b"], "--agency:"),
        (["records", "verify", "--as", "no-such-org"], "no key file for no-such-org"),
        (["records", "checkpoint", "--as", "no-such-org"], "no key file for no-such-org"),
        (
            ["holds", "request", "--bpf", "child-allowance-check", "--case-ref", "c-1",
             "--subject", "MINATOCODEABCDEFGHIJ", "--reason", "investigation", "--until",
             "someday"],
            "--until is a day",
        ),
        (["runs", "--bpf", "x' OR RenkeiBpf IS NOT NULL OR RenkeiBpf = 'y"], "--bpf: not an id"),
        (
            ["notify", "--event", "death", "--event-id", "e-1",
             "--occurred-on", "2026-01-01", "--subject", "SECRETCODE"],
            "subject: String should match pattern",
        ),
    ],
)  # fmt: skip
def test_a_bad_parameter_on_the_command_line_is_a_one_line_error(
    cli, client: Client, monkeypatch: pytest.MonkeyPatch, args: list[str], says: str
) -> None:
    from renkei.app.cli import app
    from renkei.kernel.settings import get_settings

    monkeypatch.setenv("RENKEI_TEMPORAL_ADDRESS", client.service_client.config.target_host)
    get_settings.cache_clear()
    result = cli.invoke(app, args)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code != 0, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and says in errors[0], result.output
    assert "Traceback" not in result.output and "SECRETCODE" not in result.output


# -- inputs at admission, deterministic failures -----------------------------------------------


def _relief(settings: Settings, claimed: Any) -> StartFlow:
    person = next(
        p for h in households(settings) for p in h.members if h.municipality == "city-minato"
    )
    return start(
        "vaccination-relief-medical-check",
        "city-minato",
        code(settings, "city-minato", person),
        inputs={"insurer": "kyokai-kenpo", "claimed_amount": claimed},
    )


async def test_an_input_the_expressions_cannot_hold_is_refused_before_any_workflow(
    client: Client, pool: asyncpg.Pool, settings: Settings
) -> None:
    async with _http(client, pool, settings, "city-minato") as http:
        for claimed, why in ((TOO_BIG, "out of range for an integer"), ("12", "given as text")):
            flow = _relief(settings, claimed)
            refused = await http.post("/api/flows", json=_body(flow))
            assert refused.status_code == 422, refused.text
            assert why in refused.json()["detail"] and str(TOO_BIG) not in refused.text
            with pytest.raises(ValueError, match=why):
                await RenkeiClient(client, settings).start(flow)
    await asyncio.sleep(1)  # visibility is eventually consistent
    count = await client.count_workflows(
        f"TaskQueue = '{control_queue(settings.task_queue_prefix)}'"
    )
    assert count.count == 0


async def test_a_start_straight_from_temporal_with_such_an_input_fails_and_is_not_stuck(
    client: Client, pool: asyncpg.Pool, settings: Settings, catalog, live_whitelist, caplog
) -> None:
    """Past the API and the SDK, the hub's admission refuses it: the flow fails with the reason
    (once), instead of a workflow task failing for ever with the value in the log."""
    flow = _relief(settings, TOO_BIG)
    caplog.set_level(logging.DEBUG)
    async with workers(client, pool, settings, catalog, live_whitelist):
        handle = await client.start_workflow(
            flow.bpf,
            flow,
            id=workflow_id(flow.bpf, flow.executor, flow.case_ref),
            task_queue=control_queue(settings.task_queue_prefix, flow.executor),
        )
        with pytest.raises(WorkflowFailureError) as err:
            await asyncio.wait_for(handle.result(), 60)
    message = getattr(err.value.cause, "message", str(err.value.cause))
    assert "claimed_amount: out of range for an integer" in message
    assert str(TOO_BIG) not in message
    assert str(TOO_BIG) not in caplog.text


async def test_a_providers_answer_its_type_cannot_hold_fails_the_flow_with_the_reason(
    client: Client, pool: asyncpg.Pool, settings: Settings, catalog, live_whitelist, caplog
) -> None:
    async def huge(req: Any) -> LocalTax:
        return LocalTax(fiscal_year=2025, taxable_income=TOO_BIG, municipal_tax=0, dependents=0)

    caplog.set_level(logging.DEBUG)
    flow = allowance_check(settings)
    async with workers(
        client,
        pool,
        settings,
        catalog,
        live_whitelist,
        providers={"city-shibuya": {"local-tax": huge}},
    ):
        handle = await RenkeiClient(client, settings).start(flow)
        with pytest.raises(WorkflowFailureError) as err:
            await asyncio.wait_for(handle.result(), 60)
        run_ = await RenkeiClient(client, settings).describe(handle.id)
    message = getattr(err.value.cause, "message", str(err.value.cause))
    assert "taxable_income: a value does not fit its declared type" in message, message
    assert str(TOO_BIG) not in message
    assert (run_.status, run_.renkei_status) == ("FAILED", "failed")
    assert str(TOO_BIG) not in caplog.text


# -- a definition changed without a new version --------------------------------------------------


async def test_a_changed_definition_without_a_new_version_is_reported_and_the_rest_load(
    pool: asyncpg.Pool, tmp_path: Path
) -> None:
    from renkei.bpf import registry

    for sample in SAMPLES_DIR.glob("*.yaml"):
        shutil.copy(sample, tmp_path / sample.name)
    changed = tmp_path / "child-allowance.yaml"
    changed.write_text(
        changed.read_text(encoding="utf-8").replace(
            "en: Child allowance — eligibility check", "en: Child allowance — eligibility (edited)"
        ),
        encoding="utf-8",
    )
    registered_hash = (await registry.fetch(pool, "child-allowance-check", 1)).content_hash  # type: ignore[union-attr]
    registered, rejected = await register_definitions(pool, tmp_path)
    [report] = rejected
    assert "child-allowance.yaml" in report and registered_hash in report
    assert "needs a new version number" in report
    assert "child-allowance-check v1" not in registered
    assert len(registered) == len(list(SAMPLES_DIR.glob("*.yaml"))) - 1


# -- bodies too large, numbers and ids out of range --------------------------------------------


async def test_a_body_larger_than_its_path_takes_is_413_before_anyone_reads_it(
    client: Client, pool: asyncpg.Pool, settings: Settings
) -> None:
    """Without credentials, a body of a few MiB (declared, or sent in chunks with no length)
    is refused with 413 and a reason, before authentication or the JSON parser reads it: no
    one can make the process hold what it never takes. A body within the limit is read as
    ever (here: refused for its missing token, 401)."""
    from renkei.app.web import MAX_BODY

    big = b"[" + b"0," * (2 * 1024 * 1024) + b"0]"

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(big), 64 * 1024):
            yield big[i : i + 64 * 1024]

    async with _http(client, pool, settings, None) as anonymous:
        for path in ("/api/flows", "/api/citizen/flows/x/city-minato/c1/respond", "/api/holds"):
            declared = await anonymous.post(
                path, content=big, headers={"Content-Type": "application/json"}
            )
            assert declared.status_code == 413, (path, declared.status_code)
            assert str(MAX_BODY) in declared.json()["detail"]
            chunked = await anonymous.post(
                path, content=chunks(), headers={"Content-Type": "application/json"}
            )
            assert chunked.status_code == 413, (path, chunked.status_code)
        small = await anonymous.post("/api/flows", json={"bpf": "x"})
        assert small.status_code == 401


async def test_a_version_or_a_flow_id_out_of_range_is_422_not_a_server_error(
    api: httpx.AsyncClient, settings: Settings
) -> None:
    flow = child_rearing(settings, households(settings)[0].members[0])
    for version in (2**31, -1, 0):
        started = await api.post("/api/flows", json={**_body(flow), "version": version})
        assert started.status_code == 422, (version, started.text)
    long = "child-rearing-allowance-income-check/pref-tokyo/" + "a" * 1100
    for found in (
        await api.get(f"/api/flows/{long}/state"),
        await api.post(f"/api/flows/{long}/respond", json={"step": "consent"}),
    ):
        assert found.status_code == 422, found.text


async def test_a_publisher_hears_of_its_own_flows_only(
    client: Client, pool: asyncpg.Pool, settings: Settings
) -> None:
    """A notice starts flows at every subscribed executor (here Tokyo, named in its definition);
    the publishing city is told the workflow ids of its own starts only: the others' case
    references are theirs (the platform keeps them all)."""
    await register_fixture(pool, "birth-notice-at-tokyo.yaml")
    minato = next(
        p for h in households(settings) if h.municipality == "city-minato" for p in h.members
    )
    notice = {
        "publisher": "city-minato",
        "event_id": f"birth-{uuid.uuid4().hex[:8]}",
        "event": "birth",
        "subject": code(settings, "city-minato", minato),
        "occurred_on": "2026-10-31",
    }
    async with _http(client, pool, settings, "city-minato") as http:
        published = await http.post("/api/notifications", json=notice)
        assert published.status_code == 200, published.text
        assert published.json()["started"] == []
    kept = await pool.fetchval(
        "SELECT started FROM hub.notifications WHERE publisher = $1 AND event_id = $2",
        "city-minato",
        notice["event_id"],
    )
    assert [w for w in kept if w.startswith("birth-notice-at-tokyo/pref-tokyo/")]
