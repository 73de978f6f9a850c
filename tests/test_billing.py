"""Billing and usage: invoices count exactly the provided attempts of their org and month, name
the chain ranges they count, are recounted from the records, and are issued in revisions; the
usage report's counts, latencies and never-used procedures are the records'."""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import json
import uuid
from pathlib import Path

import asyncpg
import httpx
import pytest
from pydantic import ValidationError

from renkei.app import billing, usage
from renkei.app.web import serving
from renkei.app.web.codec_server import add_operator
from renkei.bpf.loader import stored_hash
from renkei.kernel import keys, records
from renkei.kernel.records import HUB
from renkei.kernel.settings import Settings
from whitelist.catalog import default_catalog
from whitelist.decide import JST

from .helpers import access_record, all_chained, child_rearing, pick, run, wait_for_outcomes

MODEL = billing.CostModel(
    payee="platform-operator",
    currency="JPY",
    versions=[
        billing.ModelVersion(
            version=1, valid_from=dt.date(2020, 1, 1), valid_to=dt.date(2026, 11, 15),
            per_query=10,
        ),
        billing.ModelVersion(
            version=2, valid_from=dt.date(2026, 11, 15), per_query=12, items={"local-tax": 20},
            procedures={"special": 50},
        ),
    ],
)  # fmt: skip


def this_month() -> str:
    return dt.datetime.now(JST).strftime("%Y-%m")


# -- the model --


def test_the_version_in_force_prices_each_query() -> None:
    assert MODEL.on(dt.date(2026, 11, 14)).version == 1
    v2 = MODEL.on(dt.date(2026, 11, 15))
    # a procedure's rate first, then the info item's, then the flat one
    assert v2.query_price("special", "local-tax") == 50
    assert v2.query_price("other", "local-tax") == 20
    assert v2.query_price("other", "resident-record") == 12
    with pytest.raises(ValueError, match="no version"):
        MODEL.on(dt.date(2019, 12, 31))


def test_overlapping_or_repeated_versions_are_refused() -> None:
    v = MODEL.versions
    with pytest.raises(ValidationError, match="overlap"):
        billing.CostModel(
            payee="p", currency="JPY", versions=[v[0].model_copy(update={"valid_to": None}), v[1]]
        )
    with pytest.raises(ValidationError, match="repeat"):
        billing.CostModel(
            payee="p", currency="JPY", versions=[v[0], v[1].model_copy(update={"version": 1})]
        )


def test_the_default_model_charges_each_requester_and_no_provider() -> None:
    shipped = billing.load_model()
    assert shipped.payee
    assert all(v.per_provision == 0 for v in shipped.versions)
    assert all(v.per_query > 0 for v in shipped.versions)


def test_a_malformed_model_file_is_refused_with_its_line_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "model.yaml"
    bad.write_text(
        "payee: platform-operator\n"
        "currency: JPY\n"
        "versions:\n"
        "  - version: 1\n"
        "    valid_from: 2020-01-01\n"
        "    per_query: 10\n"
        "    items:\n"
        "      local-tax: -5\n"
        "    per_provison: 3\n"
    )
    with pytest.raises(billing.ModelFileError) as err:
        billing.load_model(bad)
    problems = str(err.value).splitlines()
    assert f"{bad}:8: versions[0].items.local-tax: Input should be greater than" in problems[0]
    assert problems[1] == f"{bad}:9: versions[0].per_provison: Extra inputs are not permitted"
    bad.write_text("payee: [unclosed\n")
    with pytest.raises(billing.ModelFileError, match=f"{bad}:2: not valid YAML"):
        billing.load_model(bad)


def test_months_are_japanese_calendar_months() -> None:
    start, end = billing.month_bounds("2026-12")
    assert (start.isoformat(), end.isoformat()) == (
        "2026-12-01T00:00:00+09:00",
        "2027-01-01T00:00:00+09:00",
    )
    with pytest.raises(ValueError, match="YYYY-MM"):
        billing.month_bounds("2026-13")


# -- synthetic attempts, written as the hub writes them --


async def attempt(
    pool: asyncpg.Pool,
    settings: Settings,
    requester: str,
    provider: str,
    ended: records.Outcome | None,
    *,
    denied: bool = False,
    bpf: str = "probe",
    seconds: float = 0.0,
    reason: str = "ok",
) -> str:
    """One attempt between two bodies: the hub's and the requester's record; for an allowed
    one the provider's too (its gate admitted it), then the outcome ``ended`` (None: pending).
    ``seconds``: how long before now the hub decided it."""
    key = f"bill/{uuid.uuid4()}/run/step"
    hub = records.RecordSigner(HUB, keys.load(settings).signer())
    fields = dict(
        attempt_key=key,
        requester=requester,
        provider=provider,
        bpf=bpf,
        outcome="denied" if denied else "allowed",
        reason=reason,
        decided_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=seconds),
    )
    keepers = [HUB, requester] + ([] if denied else [provider])
    await records.write(pool, *(access_record(k, 0, **fields) for k in keepers), signer=hub)
    if ended is not None:
        # Made by hand (no flow, no provider answered): the provider's record stands for its
        # receipt, as for outcomes from before receipts.
        assert await records.record_outcome(pool, key, ended, hub, require_receipts=False)
    return key


async def hub_records(pool: asyncpg.Pool, keys_: list[str]) -> list[records.AccessRecord]:
    found = await records.query(pool, keeper=HUB, limit=100_000)
    return [r for r in found if r.attempt_key in keys_]


# -- invoices --


async def test_an_invoice_counts_the_provided_attempts_and_is_reissued_when_records_change(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    org, provider = f"org-{uuid.uuid4().hex[:8]}", f"prov-{uuid.uuid4().hex[:8]}"
    made = [await attempt(pool, settings, org, provider, "provided") for _ in range(3)]
    made.append(await attempt(pool, settings, org, provider, None, denied=True, reason="no row"))
    made.append(await attempt(pool, settings, org, provider, "no_answer"))
    made.append(await attempt(pool, settings, org, provider, None))  # still pending
    made.append(await attempt(pool, settings, org, provider, "denied"))  # the provider's gate
    # another org's attempt, and the org's look-up in its own register: not on this invoice
    await attempt(pool, settings, f"other-{uuid.uuid4().hex[:8]}", provider, "provided")
    await attempt(pool, settings, org, org, "provided")

    model = billing.load_model()
    month = this_month()
    # Two issuers at once: one issues, the other finds the same invoice.
    both = await asyncio.gather(
        *(billing.issue(pool, month, model, orgs=[org, provider]) for _ in range(2))
    )
    assert sorted(i.new for [i] in both) == [False, True]
    first = next(i for [i] in both if i.new)
    assert first.new and first.invoice.revision == 1
    body = first.invoice.body
    assert (body.org, body.payee) == (org, model.payee)
    [line] = body.lines
    price = model.on(dt.datetime.now(JST).date()).query_price("probe", "local-tax")
    assert (line.kind, line.charged, line.unit_price, line.amount) == ("query", 3, price, 3 * price)
    assert line.not_charged == {"denied": 2, "no_answer": 1, "pending": 1}
    assert body.total == 3 * price
    # The chain ranges are the records': the hub's records of the org's attempts, and their
    # outcomes in the hub's chain of outcomes.
    hub = await hub_records(pool, made)
    assert len(hub) == len(made)
    ranges = {c.keeper: c for c in body.chains}
    seqs = sorted(r.chain_seq or 0 for r in hub)
    assert (ranges[HUB].records, ranges[HUB].first_seq, ranges[HUB].last_seq) == (
        len(made),
        seqs[0],
        seqs[-1],
    )
    by_seq = {r.chain_seq: r.record_hash for r in hub}
    assert (ranges[HUB].first_hash, ranges[HUB].last_hash) == (by_seq[seqs[0]], by_seq[seqs[-1]])
    ended = await records.outcomes(pool, made)
    outcome_seqs = sorted(o.chain_seq or 0 for o in ended.values())
    assert len(ended) == 5
    assert (ranges[billing.OUTCOMES_CHAIN].first_seq, ranges[billing.OUTCOMES_CHAIN].last_seq) == (
        outcome_seqs[0],
        outcome_seqs[-1],
    )
    assert set(ranges) == {HUB, billing.OUTCOMES_CHAIN}  # no provider chain: none charged

    check = await billing.verify(pool, first.invoice)
    assert check.ok, check.problems
    # and the chains it counts are the signed, witnessed ones
    hub_key = keys.load(settings).signer().public_key()
    assert await billing.verify_chains(pool, hub_key, [first.invoice]) == []
    # Issued again with nothing changed: the same invoice.
    [same] = await billing.issue(pool, month, model, orgs=[org])
    assert not same.new and same.invoice.number == first.invoice.number

    # A record added after issuing: verify names the difference; issuing makes revision 2.
    made.append(await attempt(pool, settings, org, provider, "provided"))
    check = await billing.verify(pool, first.invoice)
    assert not check.ok
    assert any("invoice charges 3" in p and "records: 4" in p for p in check.problems)
    assert any(p.startswith(f"chain {HUB}:") for p in check.problems)
    assert any(p == f"total: invoice {3 * price}, records {4 * price}" for p in check.problems)
    [second] = await billing.issue(pool, month, model, orgs=[org])
    assert second.new and second.invoice.revision == 2
    assert second.invoice.number > first.invoice.number
    assert second.invoice.body.lines[0].charged == 4
    assert (await billing.verify(pool, second.invoice)).ok
    # Revision 1 is kept as issued, and nothing changes or removes an issued invoice.
    kept = await billing.get(pool, first.invoice.number)
    assert kept is not None and kept.body == first.invoice.body
    owner = await asyncpg.connect(settings.database_url)
    try:
        for statement in (
            "UPDATE billing.invoices SET body = '{}'::jsonb WHERE number = $1",
            "DELETE FROM billing.invoices WHERE number = $1",
        ):
            # the application role may not; the database's owner is stopped by the trigger
            with pytest.raises(asyncpg.PostgresError, match="permission denied"):
                await pool.execute(statement, first.invoice.number)
            with pytest.raises(asyncpg.PostgresError, match="never changed"):
                await owner.execute(statement, first.invoice.number)
    finally:
        await owner.close()


async def test_the_default_model_charges_no_provider_and_others_can(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    org, provider = f"org-{uuid.uuid4().hex[:8]}", f"prov-{uuid.uuid4().hex[:8]}"
    for _ in range(2):
        await attempt(pool, settings, org, provider, "provided", bpf="special")
    month = this_month()
    found = await billing.compute(pool, month, billing.load_model(), orgs=[org, provider])
    assert set(found) == {org}  # the provider owes nothing and gets no invoice

    # A model charging provisions, a flat monthly fee and a procedure's own rate.
    other = billing.CostModel(
        payee="platform-operator",
        currency="JPY",
        versions=[
            billing.ModelVersion(
                version=1, valid_from=dt.date(2020, 1, 1), per_query=12, per_provision=2,
                monthly_fee=1000, procedures={"special": 30},
            )
        ],
    )  # fmt: skip
    found = await billing.compute(
        pool, month, other, orgs=[org, provider, "city-minato"], catalog_orgs=[org, "city-minato"]
    )
    assert set(found) == {org, provider, "city-minato"}
    assert found[org].total == 2 * 30 + 1000
    [provision] = found[provider].lines
    assert (provision.kind, provision.charged, provision.amount) == ("provision", 2, 4)
    assert [c.keeper for c in found[provider].chains] == [billing.OUTCOMES_CHAIN, provider]
    # the city's own attempts this month (if any) are counted too; its fee is there
    assert any(x.kind == "monthly_fee" for x in found["city-minato"].lines)
    # state-funded: every price 0, the counts still shown
    free = billing.CostModel(
        payee="state",
        currency="JPY",
        versions=[billing.ModelVersion(version=1, valid_from=dt.date(2020, 1, 1), per_query=0)],
    )
    found = await billing.compute(pool, month, free, orgs=[org])
    assert found[org].total == 0 and found[org].lines[0].charged == 2


async def test_the_invoice_page_needs_an_operator_and_shows_the_totals(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    org = f"org-{uuid.uuid4().hex[:8]}"
    for _ in range(125):  # a total with a thousands separator: 125 × 12 = 1,500
        await attempt(pool, settings, org, "city-minato", "provided", bpf="paged")
    model = billing.CostModel(
        payee="platform-operator",
        currency="JPY",
        versions=[billing.ModelVersion(version=1, valid_from=dt.date(2020, 1, 1), per_query=12)],
    )
    [issued] = await billing.issue(pool, this_month(), model, orgs=[org])
    number = issued.invoice.number
    hub_op = await add_operator(pool, f"op-{uuid.uuid4().hex[:6]}")
    other_op = await add_operator(pool, f"op-{uuid.uuid4().hex[:6]}", "city-shibuya")
    async with serving(settings, pool) as base, httpx.AsyncClient(base_url=base) as http:
        page = f"/codec/operator/invoices/{number}"
        for path in (page, f"{page}/csv", "/codec/operator/usage", "/codec/operator/invoices"):
            refused = await http.get(path)
            assert refused.status_code == 401 and "operator" in refused.json()["detail"]
            forged = await http.get(path, headers={"Authorization": "Bearer rko_forged"})
            assert forged.status_code == 401
        # another org's operator: as if there were no such invoice
        got = await http.get(page, headers={"Authorization": f"Bearer {other_op}"})
        assert got.status_code == 404
        got = await http.get(
            "/codec/operator/usage", headers={"Authorization": f"Bearer {other_op}"}
        )
        assert got.status_code == 403
        got = await http.get(
            "/codec/operator/invoices", headers={"Authorization": f"Bearer {other_op}"}
        )
        assert got.status_code == 200 and f"/codec/operator/invoices/{number}" not in got.text

        got = await http.get(page, headers={"Authorization": f"Bearer {hub_op}"})
        assert got.status_code == 200 and got.headers["content-type"].startswith("text/html")
        assert "1,500 JPY" in got.text and org in got.text and "125" in got.text
        assert str(issued.invoice.body.chains[0].first_seq) in got.text
        got = await http.get(f"{page}/csv", headers={"Authorization": f"Bearer {hub_op}"})
        assert got.status_code == 200 and got.headers["content-type"].startswith("text/csv")
        head = next(csv.DictReader(io.StringIO(got.text.partition("\n\n")[0])))
        assert (head["invoice"], head["org"], head["total"]) == (str(number), org, "1500")
        assert (await http.get("/codec/operator/invoices/999999999",
                               headers={"Authorization": f"Bearer {hub_op}"})).status_code == 404  # fmt: skip

        for bad in ("99999999999999999999", "0", "one"):  # a located 422, not a server error
            got = await http.get(
                f"/codec/operator/invoices/{bad}", headers={"Authorization": f"Bearer {hub_op}"}
            )
            assert got.status_code == 422 and got.json()["detail"][0]["loc"] == ["path", "number"]

        # signed in at /codec/login (the cookie), as in a browser
        signed = await http.post("/codec/login", data={"token": hub_op})
        assert signed.status_code == 303
        got = await http.get(page)
        assert got.status_code == 200 and "1,500 JPY" in got.text
        got = await http.get("/codec/operator/usage", params={"month": this_month()})
        assert got.status_code == 200 and "paged" in got.text and org in got.text
        assert "CODE" not in got.text  # no subject code on the page
        got = await http.get("/codec/operator/usage", params={"month": "2026-13"})
        assert got.status_code == 422 and got.json()["detail"][0]["loc"] == ["query", "month"]
        got = await http.get("/codec/operator/usage", params={"month": "2026-11", "to": "2026-10"})
        assert got.status_code == 422 and "before it starts" in got.json()["detail"]
        listed = await http.get("/codec/operator/invoices", params={"month": this_month()})
        assert listed.status_code == 200
        assert f'href="/codec/operator/invoices/{number}"' in listed.text


async def test_real_flows_are_billed_as_the_public_records_api_counts_them(
    env, pool: asyncpg.Pool, settings: Settings
) -> None:
    h = pick(settings, lambda h: h.municipality == "city-minato" and h.kind == "family")
    runs = [await env.start(child_rearing(settings, h.members[0], h.members[1])) for _ in range(2)]
    for handle in runs:
        await handle.result()
    month, model = this_month(), billing.load_model()
    start, end = billing.month_bounds(month)
    await all_chained(pool, [HUB])  # billing counts linked records only
    # Counted independently, through renkei.kernel.records: Tokyo's attempts at the hub this
    # month between two bodies, by what became of them; the conformance kit's runs (other tests
    # of the session may have run some) are billed to no one.
    kit_runs = {
        (r["workflow_id"], r["run_id"])
        for r in await pool.fetch("SELECT workflow_id, run_id FROM records.conformance_runs")
    }
    mine = [
        r
        for r in await records.query(pool, keeper=HUB, limit=1_000_000)
        if r.requester == "pref-tokyo"
        and r.provider != "pref-tokyo"
        and r.recorded_at is not None
        and start <= r.recorded_at < end
        and (r.workflow_id, r.run_id) not in kit_runs
    ]
    flows = {handle.id for handle in runs}
    # These flows' provided outcomes, collected by the hub a moment after each answer.
    await wait_for_outcomes(
        pool,
        [
            r.attempt_key
            for r in mine
            if (r.workflow_id in flows or r.parent_workflow_id in flows) and r.outcome == "allowed"
        ],
    )
    ended = await records.outcomes(pool, [r.attempt_key for r in mine])
    states: dict[str, int] = {}
    amount = 0
    for r in mine:
        state = records.outcome_of(r.outcome, ended.get(r.attempt_key))
        states[state] = states.get(state, 0) + 1
        if state == "provided":
            assert r.recorded_at is not None
            amount += model.on(r.recorded_at.astimezone(JST).date()).query_price(r.bpf, r.info)
    assert [r for r in mine if r.workflow_id in flows or r.parent_workflow_id in flows]
    assert states.get("provided", 0) >= 2

    [tokyo] = (await billing.compute(pool, month, model, orgs=["pref-tokyo"])).values()
    charged = sum(x.charged for x in tokyo.lines)
    not_charged: dict[str, int] = {}
    for x in tokyo.lines:
        for state, n in x.not_charged.items():
            not_charged[state] = not_charged.get(state, 0) + n
    assert charged == states.pop("provided")
    assert not_charged == states
    assert tokyo.total == amount
    hub_range = next(c for c in tokyo.chains if c.keeper == HUB)
    assert hub_range.records == len(mine)
    assert (hub_range.first_seq, hub_range.last_seq) == (
        min(r.chain_seq or 0 for r in mine),
        max(r.chain_seq or 0 for r in mine),
    )


# -- usage --


async def test_usage_counts_latency_and_never_used_procedures(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    bpf, idle = f"usage-{uuid.uuid4().hex[:8]}", f"idle-{uuid.uuid4().hex[:8]}"
    org = f"org-{uuid.uuid4().hex[:8]}"
    for name in (bpf, idle):  # both operating; only the first runs this month
        # A registered definition of its own (a copy of a sample's under this id): the session's
        # registry is shared, and every reader of it parses the definitions it holds.
        copied = await pool.fetchval(
            "SELECT definition FROM registry.bpf_versions WHERE bpf = 'child-allowance-check'"
            " ORDER BY version LIMIT 1"
        )
        copied["bpf"] = name
        await pool.execute(
            "INSERT INTO registry.bpf_versions"
            " (bpf, version, content_hash, source_name, source_text, definition, state)"
            " VALUES ($1, 1, $2, 'test', '', $3, 'operating')",
            name,
            stored_hash(copied),
            copied,
        )
    # A known set: 100 provided attempts decided 10 s, 20 s, … 1000 s before their outcome.
    for i in range(1, 101):
        await attempt(pool, settings, org, "city-minato", "provided", bpf=bpf, seconds=10 * i)
    for _ in range(2):
        await attempt(pool, settings, org, "city-minato", None, bpf=bpf, denied=True, reason="r1")
    await attempt(pool, settings, org, "city-minato", "denied", bpf=bpf)
    await attempt(pool, settings, org, "city-minato", "failed", bpf=bpf)
    await attempt(pool, settings, org, "city-minato", "cancelled", bpf=bpf)
    await attempt(pool, settings, org, "city-minato", "not_asked", bpf=bpf)
    for at in ("2026-11-27T01:02:03.456789+00:00", "2026-11-28T09:00:00+09:00"):
        expired = f"row 5 matches but is not in force on {at} (valid 2020-01-01 to 2021-01-01)"
        await attempt(
            pool, settings, org, "city-minato", None, bpf=bpf, denied=True, reason=expired
        )

    found = await usage.report(pool, this_month(), default_catalog().tasks)
    [row] = [r for r in found.rows if r.bpf == bpf]
    assert row.month == this_month()
    assert (row.org, row.queries, row.allowed, row.provided) == (org, 108, 104, 100)
    assert (row.denied, row.failed, row.no_answer, row.pending) == (5, 1, 0, 0)
    # permitted ahead and never asked is not a cancellation: each has its own column
    assert (row.cancelled, row.not_asked) == (1, 1)
    # by reason, the moment of each refusal left out (the row's validity dates kept)
    assert row.denials == {
        "r1": 2,
        "denied by the provider's gate": 1,
        "row 5 matches but is not in force on (time) (valid 2020-01-01 to 2021-01-01)": 2,
    }
    # p99 of 10 s … 1000 s by nearest rank is the 99th: 990 s (plus the moments of writing)
    assert row.p99_ms is not None and 990_000 <= row.p99_ms < 1_000_000
    assert row.median_ms is not None and 505_000 <= row.median_ms < 510_000
    unused = {(v.bpf, v.version): v.state for v in found.unused_versions}
    assert unused[(idle, 1)] == "operating"
    assert (bpf, 1) not in unused
    assert "child-rearing-allowance" not in found.unused_tasks  # the attempts' task
    assert set(found.unused_tasks) <= set(default_catalog().tasks)
    # A period of months: a row per month; the procedure used in it is used in the period.
    earlier = (dt.datetime.now(JST).replace(day=1) - dt.timedelta(days=1)).strftime("%Y-%m")
    period = await usage.report(pool, earlier, default_catalog().tasks, this_month())
    assert [r for r in period.rows if r.bpf == bpf] == [row]
    assert (idle, 1) in {(v.bpf, v.version) for v in period.unused_versions}
    assert (bpf, 1) not in {(v.bpf, v.version) for v in period.unused_versions}
    quiet = await usage.report(pool, earlier, default_catalog().tasks)
    assert not [r for r in quiet.rows if r.bpf == bpf]
    assert (bpf, 1) in {(v.bpf, v.version) for v in quiet.unused_versions}
    with pytest.raises(ValueError, match="before it starts"):
        await usage.report(pool, this_month(), default_catalog().tasks, earlier)
    dumped = found.model_dump_json()
    assert "CODE" not in dumped and "bill/" not in dumped  # no subject code, no attempt key


# -- the command line (sync: the CLI runs its own event loop) --


def test_the_cli_issues_shows_and_verifies_invoices(cli, tmp_path: Path) -> None:
    # A past month with no records, a flat monthly fee: every catalog org gets an invoice.
    model = tmp_path / "model.yaml"
    model.write_text(
        "payee: platform-operator\ncurrency: JPY\nversions:\n"
        "  - version: 1\n    valid_from: 2017-07-18\n    per_query: 0\n    monthly_fee: 25000\n"
    )
    code, out = run(cli, "billing", "issue", "--month", "2019-01", "--model", str(model))
    assert code == 0, out
    issued = [line.split("\t") for line in out.splitlines() if "\t" in line]
    assert {x[1] for x in issued} == set(default_catalog().orgs)
    assert all(x[4] == "25,000 JPY" for x in issued)
    number = issued[0][0]
    code, out = run(cli, "billing", "verify", "--month", "2019-01", "--chains")
    assert code == 0 and "MISMATCH" not in out and "every chain counted is intact" in out, out
    code, out = run(cli, "billing", "show", number, "--format", "html")
    assert code == 0 and "25,000 JPY" in out
    code, out = run(cli, "billing", "show", number, "--format", "csv")
    assert code == 0 and "monthly_fee" in out
    code, out = run(cli, "billing", "report", "--month", "2019-01", "--model", str(model))
    assert code == 0 and len(json.loads(out)) == len(default_catalog().orgs)

    model.write_text("payee: p\ncurrency: JPY\nversions:\n  - version: 1\n    per_query: 1\n")
    code, out = run(cli, "billing", "issue", "--month", "2019-01", "--model", str(model))
    assert code == 2 and f"{model}:4: versions[0].valid_from: Field required" in out
    assert "Traceback" not in out
    code, out = run(cli, "billing", "report", "--month", "2026/11")
    assert code == 2 and "YYYY-MM" in out
    code, out = run(cli, "billing", "verify", "999999999")
    assert code == 2 and "no invoice" in out


def test_the_cli_prints_usage_as_table_csv_and_json(cli) -> None:
    month = this_month()
    code, out = run(cli, "usage", "report", "--month", month, "--format", "json")
    assert code == 0, out
    as_json = usage.UsageReport.model_validate(json.loads(out))
    code, out = run(cli, "usage", "report", "--month", month, "--format", "csv")
    assert code == 0, out
    rows = list(csv.DictReader(io.StringIO(out.partition("\n\n")[0])))
    assert len(rows) == len(as_json.rows)
    assert sum(int(r["queries"]) for r in rows) == sum(r.queries for r in as_json.rows)
    code, out = run(cli, "usage", "report", "--month", month)
    assert code == 0 and "p99 ms" in out and "latency:" in out
    code, out = run(cli, "usage", "report", "--month", "2026-13")
    assert code == 2 and "YYYY-MM" in out
    code, out = run(cli, "usage", "report", "--month", "2026-11", "--to", "2026-10")
    assert code == 2 and "before" in out and "Traceback" not in out
