"""The law as it stands: dated sources, a load with its diff, the review of every operating
version, citations, and files refused with their place.

Each test here loads sources that change the law for everyone reading the store, so the module
works in a database of its own (the shipped sources and the sample definitions, all operating).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
import pytest_asyncio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from typer.testing import CliRunner

from renkei.app import outbox, sources
from renkei.app.bootstrap import register_definitions
from renkei.app.sources import LoadReport, SourceOptions
from renkei.bpf.admission import StartRefused, admit
from renkei.kernel import keys
from renkei.kernel.db import create_pool, migrate
from renkei.kernel.settings import Settings, get_settings
from whitelist import store
from whitelist.decide import JST, decide_linkage
from whitelist.sources import SourceFileError

from .helpers import STAND_IN, operating_for, operator_token, run

ORDINANCE = "ordinance-test"
# The hub's key of the tests' settings, which seals each load (whitelist.seal): set by `law`.
HUB: list[Ed25519PrivateKey] = []


async def load_defaults(pool: asyncpg.Pool, by: str) -> tuple[int, int, list[LoadReport]]:
    return await sources.load_defaults(pool, by, hub=HUB[0])


async def load_file(*args: Any, **kw: Any) -> LoadReport:
    return await sources.load_file(*args, hub=HUB[0], **kw)


async def set_period(*args: Any, **kw: Any) -> LoadReport:
    return await sources.set_period(*args, hub=HUB[0], **kw)


XML_FIXTURE = Path(__file__).parent / "fixtures" / "annex2-2015-excerpt.xml"
CITATION = "番号法第十九条第八号に基づく命令 第{item}条"
# Today in Japan, and the first day of the (test) ordinance, some weeks ahead of it: the hub
# and admission read the clock, so the dates follow it.
TODAY = dt.datetime.now(JST).date()
BEGINS = TODAY + dt.timedelta(days=35)
B = BEGINS.isoformat()

# A small stand-in for the Article 19(8) ordinance, in force from BEGINS: child allowance keeps
# its rows (七十四/七十五 of the 2015 table), child-rearing allowance's income check becomes a
# body's own use (changed), child allowance may newly ask medical insurers (added); everything
# else of the 2015 table is gone (removed) — vaccination relief (十七) among it.
ORDINANCE_CSV = """\
item,requester_role,task,provider_role,info,sub_task,sub_info,scope,legal_text
2,municipal-mayor,child-allowance,municipal-mayor,local-tax,,,,
2,municipal-mayor,child-allowance,mhlw-minister,pension-benefit,,,,
2,municipal-mayor,child-allowance,japan-pension-service,pension-benefit,,,,
2,municipal-mayor,child-allowance,mutual-aid-associations,pension-benefit,,,,
3,municipal-mayor,child-allowance,medical-insurer,medical-benefit,,,,児童手当の支給に関する事務
4,prefectural-governor-etc,child-rearing-allowance,municipal-mayor,local-tax,,,within-body,
"""


@pytest_asyncio.fixture(scope="module")
async def law(
    database_url: str, base_settings: Settings
) -> AsyncIterator[tuple[asyncpg.Pool, str]]:
    """A database of the module's own: the shipped sources, the sample definitions operating."""
    name = f"renkei_law_{uuid.uuid4().hex[:8]}"
    parts = urlsplit(database_url)
    admin = await asyncpg.connect(database_url)
    await admin.execute(f"CREATE DATABASE {name}")
    await admin.close()
    url = urlunsplit(parts._replace(path=f"/{name}"))
    await migrate(url)
    pool = await create_pool(url, max_size=4)
    HUB[:] = [keys.load(base_settings).signer()]
    await load_defaults(pool, "test")
    registered, rejected = await register_definitions(pool, base_settings.definitions_dir)
    assert registered and not rejected
    # Arrangement, not the subject here: every sample version is operating (the lifecycle has
    # its own tests), for city-minato, the executor the tests start as.
    await operating_for(pool, "city-minato")
    try:
        yield pool, url
    finally:
        await pool.close()
        admin = await asyncpg.connect(database_url)
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.close()


@pytest.fixture(scope="module")
def ordinance_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("law") / "ordinance.csv"
    path.write_text(ORDINANCE_CSV, encoding="utf-8")
    return path


@pytest_asyncio.fixture(scope="module")
async def loaded(law, ordinance_file: Path) -> LoadReport:
    """The ordinance loaded, superseding the 2015 table from BEGINS."""
    pool, _ = law
    return await load_file(
        pool,
        ORDINANCE,
        ordinance_file,
        SourceOptions(
            title="利用特定個人情報の提供に関する命令（試験用の抜粋）",
            citation=CITATION,
            valid_from=BEGINS,
            supersedes="annex2-2015",
        ),
        "law-tester",
        today=TODAY,
    )


def _at(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(12), tzinfo=dt.UTC)


async def test_before_the_ordinance_a_linkage_cites_the_2015_table_as_a_stand_in(
    law, loaded: LoadReport, catalog
) -> None:
    pool, _ = law
    index = await store.load_index(pool)
    d = decide_linkage(
        catalog, index, "city-minato", "city-shibuya", "child-allowance", "local-tax", _at(TODAY)
    )
    assert d.allowed and d.legal_reference == "番号法別表第二 七十四項" + STAND_IN
    # Before 2024-05-27 the table was the law itself: no mark.
    old = decide_linkage(
        catalog,
        index,
        "city-minato",
        "city-shibuya",
        "child-allowance",
        "local-tax",
        _at(dt.date(2023, 4, 1)),
    )
    assert old.allowed and old.legal_reference == "番号法別表第二 七十四項"


async def test_a_linkage_past_its_sources_end_is_denied_naming_the_source_and_the_date(
    law, loaded: LoadReport, catalog
) -> None:
    pool, _ = law
    index = await store.load_index(pool)
    after = _at(BEGINS + dt.timedelta(days=31))
    d = decide_linkage(
        catalog,
        index,
        "city-minato",
        "kyokai-kenpo",
        "vaccination-health-damage-relief",
        "medical-benefit",
        after,
    )
    assert not d.allowed
    assert "番号法別表第二 十七項" in d.reason and "annex2-2015" in d.reason
    assert f"it ended on {B}" in d.reason and after.date().isoformat() in d.reason
    # The day before, the 2015 table still stands in.
    assert decide_linkage(
        catalog,
        index,
        "city-minato",
        "kyokai-kenpo",
        "vaccination-health-damage-relief",
        "medical-benefit",
        _at(BEGINS - dt.timedelta(days=1)),
    ).allowed
    # What the ordinance keeps is cited in its own form, with no mark.
    kept = decide_linkage(
        catalog, index, "city-minato", "city-shibuya", "child-allowance", "local-tax", after
    )
    assert kept.allowed and kept.legal_reference == "番号法第十九条第八号に基づく命令 第2条"
    assert kept.row is not None and kept.row.source == ORDINANCE


async def test_a_load_is_recorded_with_its_diff_and_the_versions_it_affects(
    law, loaded: LoadReport
) -> None:
    pool, _ = law
    o = loaded.outcome
    assert o.source.valid_from == BEGINS and o.source.loaded_by == "law-tester"
    assert o.closed is not None and o.closed.id == "annex2-2015" and o.closed.valid_to == BEGINS
    assert o.effective == BEGINS and o.diff.against == "annex2-2015"
    added = {(r.task, r.provider_role, r.info) for r in o.diff.added}
    assert added == {("child-allowance", "medical-insurer", "medical-benefit")}
    [changed] = o.diff.changed
    assert (changed.before.scope, changed.after.scope) == ("between-bodies", "within-body")
    assert changed.after.task == "child-rearing-allowance" and changed.after.info == "local-tax"
    removed = {(r.requester_role, r.task, r.provider_role, r.info) for r in o.diff.removed}
    assert (
        "municipal-mayor",
        "vaccination-health-damage-relief",
        "medical-insurer",
        "medical-benefit",
    ) in removed
    assert ("municipal-mayor", "child-allowance", "municipal-mayor", "local-tax") not in removed
    assert o.diff.unchanged == 4
    # The versions the change breaks, with their executors; a version it leaves alone is not.
    broken = {(r.bpf, r.version) for r in loaded.affected if not r.conformant}
    assert ("vaccination-relief-medical-check", 1) in broken
    # Its provider is chosen at run time (any org): validation cannot judge it, the rows its
    # queries name changed, so it is listed as affected; its linkages are decided when they run.
    touched = {(r.bpf, r.version) for r in loaded.affected if r.conformant}
    assert ("child-rearing-allowance-income-check", 1) in touched
    assert "child-allowance-check" not in {r.bpf for r in loaded.affected}
    text = "\n".join(loaded.lines())
    assert "1 added" in text and "1 changed" in text and "annex2-2015" in text
    assert "vaccination-relief-medical-check v1 (executors: role:municipal-mayor)" in text
    assert f"does not conform from {B}" in text
    # Recorded: who, when, the file's hash, what changed.
    rec = await pool.fetchrow("SELECT * FROM whitelist.loads WHERE id = $1", o.load_id)
    assert rec["loaded_by"] == "law-tester" and rec["content_hash"] == o.source.content_hash
    assert (rec["added"], rec["changed"]) == (1, 1) and rec["removed"] == len(o.diff.removed)
    # The definer finds each affected version in its outbox, naming no one.
    messages = [m for m in await outbox.pending(pool, "mhlw") if m.kind == "review"]
    by_flow = {m.workflow_id: m for m in messages}
    note = by_flow["vaccination-relief-medical-check/v1"].note or ""
    assert ORDINANCE in note and B in note and "role:municipal-mayor" in note


async def test_a_version_made_nonconformant_stops_admitting_on_the_effective_date(
    law, loaded: LoadReport, catalog
) -> None:
    pool, _ = law

    async def start(on: dt.date) -> None:
        await admit(
            pool,
            catalog,
            "operation",
            bpf="vaccination-relief-medical-check",
            version=None,
            executor="city-minato",
            subject="A" * 20,
            inputs={"insurer": "kyokai-kenpo", "claimed_amount": 1000},
            trigger="counter",
            on=on,
            hub=HUB[0].public_key(),
        )

    await start(BEGINS - dt.timedelta(days=1))  # admitted the day before
    with pytest.raises(StartRefused) as refused:
        await start(BEGINS)
    assert refused.value.kind == "VersionStopped"
    assert ORDINANCE in refused.value.reason and B in refused.value.reason
    assert "vaccination-relief-medical-check v1" in refused.value.reason
    # A version the change leaves conformant starts as before.
    await admit(
        pool,
        catalog,
        "operation",
        bpf="child-allowance-check",
        version=None,
        executor="city-minato",
        subject="A" * 20,
        inputs={"previous_municipality": "city-shibuya"},
        trigger="counter",
        on=BEGINS,
        hub=HUB[0].public_key(),
    )


async def test_reloading_the_same_source_diffs_against_its_previous_load(
    law, loaded: LoadReport, ordinance_file: Path, tmp_path: Path
) -> None:
    pool, _ = law
    again = tmp_path / "ordinance.csv"
    # Article 3's row is dropped; the rest stays.
    again.write_text(
        "\n".join(line for line in ORDINANCE_CSV.splitlines() if not line.startswith("3,")) + "\n",
        encoding="utf-8",
    )
    report = await load_file(pool, ORDINANCE, again, SourceOptions(), "law-tester", today=TODAY)
    d = report.outcome.diff
    assert d.against == ORDINANCE and not d.added and not d.changed
    assert [(r.task, r.info) for r in d.removed] == [("child-allowance", "medical-benefit")]
    # Validity and citation form carry over from the source's previous load.
    assert report.outcome.source.citation == CITATION
    assert report.outcome.source.valid_from == BEGINS


@pytest.mark.parametrize(
    ("name", "text", "where"),
    [
        (
            "bad.csv",
            "item,requester_role,task,provider_role,info\n"
            "5,municipal-mayor,child-allowance,municipal-mayor,local-tax\n"
            "6,municipal-mayor,no-such-task,municipal-mayor,local-tax\n",
            "bad.csv:3: task: unknown id 'no-such-task'",
        ),
        (
            "short.csv",
            "item,requester_role,task,provider_role,info\n5,municipal-mayor,child-allowance\n",
            "short.csv:2: 5 columns expected",
        ),
        (
            "header.csv",
            "item,requester,task,provider_role,info\n",
            "header.csv:1: header: missing columns requester_role; unknown columns requester",
        ),
        (
            "bad.yaml",
            "title: x\nrows:\n  - {item: '1', requester_role: municipal-mayor, task: child-allowance,"
            " provider_role: municipal-mayor, info: local-tax}\n"
            "  - {item: '2', requester_role: Mayor!, task: child-allowance,"
            " provider_role: municipal-mayor, info: local-tax}\n",
            "bad.yaml:4: requester_role: String should match pattern",
        ),
        (
            "syntax.yaml",
            "title: x\nrows:\n  - {item: 1, task: a\n  - b: [\n",
            "syntax.yaml:4: not valid YAML: expected ',' or '}'",
        ),
        (
            "twice.yaml",
            "title: x\ntitle: y\nrows: []\n",
            'twice.yaml:2: not valid YAML: found duplicate key "title"',
        ),
        (
            "bomb.xml",
            '<?xml version="1.0"?>\n<!DOCTYPE x [<!ENTITY a "aaaa">]>\n<Law>&a;</Law>\n',
            "bomb.xml:2: refused: a DOCTYPE or ENTITY declaration",
        ),
        (
            "broken.xml",
            "<Law>\n<AppdxTable>\n<TableStruct><Table>\n</Law>\n",
            "broken.xml:4:2: not well-formed XML",
        ),
        (
            "cells.xml",
            "<Law><LawBody><AppdxTable><TableStruct><Table>\n"
            "<TableRow><TableColumn><Sentence>一</Sentence></TableColumn></TableRow>\n"
            "</Table></TableStruct></AppdxTable></LawBody></Law>\n",
            "cells.xml: AppdxTable/TableStruct/Table/TableRow[1]: 1 cells, 5 expected",
        ),
    ],
)
async def test_a_malformed_file_is_refused_with_its_place_and_loads_nothing(
    law, loaded: LoadReport, tmp_path: Path, name: str, text: str, where: str
) -> None:
    pool, _ = law
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    before = await pool.fetchval("SELECT count(*) FROM whitelist.loads")
    version = await pool.fetchval("SELECT version FROM whitelist.version")
    with pytest.raises(SourceFileError) as err:
        await load_file(
            pool,
            "broken-source",
            path,
            SourceOptions(title="t", citation="c {item}", valid_from=BEGINS),
            "law-tester",
        )
    assert where in str(err.value)
    assert await pool.fetchval("SELECT count(*) FROM whitelist.loads") == before
    assert await pool.fetchval("SELECT version FROM whitelist.version") == version
    assert "broken-source" not in {s.id for s in await store.fetch_sources(pool)}


def test_the_command_line_lists_sources_and_refuses_a_bad_file_with_its_place(
    law,
    loaded: LoadReport,
    ordinance_file: Path,
    base_settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, url = law
    monkeypatch.setenv("RENKEI_DATABASE_URL", url)
    monkeypatch.setenv("RENKEI_KEYS_FILE", str(base_settings.keys_file))
    get_settings.cache_clear()
    cli = CliRunner()
    try:
        # A file is loaded by a signed-in operator: national law by a platform operator, an
        # ordinance by its own local government's; no one else, and no name typed in.
        platform = operator_token(
            cli, "law-loader", "--party", "hub", "--role", "platform-operator"
        )
        minato = operator_token(cli, "minato-clerk", "--party", "city-minato", "--role", "executor")
        pension = operator_token(cli, "jps-clerk", "--party", "jps", "--role", "executor")
        code, out = run(cli, "whitelist", "sources")
        assert code == 0
        assert (
            f"{ORDINANCE}\t" in out
            and "cited as 番号法第十九条第八号に基づく命令 第{item}条" in out
        )
        assert "annex2-2015\t" in out and f"2017-07-18 to {B}" in out
        assert "stand-in from 2024-05-27" in out
        # Each city's ordinance is a source of its own, cited in its own form.
        for city, ja in (("city-minato", "港区"), ("city-shibuya", "渋谷区")):
            assert f"local-{city}\t{ja}行政手続における特定の個人を識別する" in out
            assert f"{city}'s own ordinance" in out
        assert "cited as 港区行政手続における" in out and "別表第一 {item}の項" in out
        foreign = tmp_path / "foreign.yaml"
        foreign.write_text(
            "# city-shibuya's ordinance\nbody: city-shibuya\nrows:\n  - {item: '1',"
            " requester_role: municipal-mayor, task: child-allowance,"
            " provider_role: municipal-mayor, info: resident-record}\n",
            encoding="utf-8",
        )
        load_foreign = (
            "whitelist",
            "load",
            "--source",
            "local-city-shibuya",
            "--file",
            str(foreign),
        )
        code, out = run(cli, *load_foreign, token=minato)
        assert code == 1 and "Traceback" not in out and "nothing loaded" in out, out
        assert f"{foreign}:2: body: source 'local-city-shibuya' is city-shibuya's own" in out
        assert "this load is made as city-minato" in out
        code, out = run(cli, *load_foreign, token=platform)
        assert code == 1 and "made by a platform operator, for no body" in out
        code, out = run(cli, *load_foreign, token="")
        assert code == 2 and "sign in: set RENKEI_OPERATOR_TOKEN" in out and "Traceback" not in out
        code, out = run(cli, *load_foreign, token=pension)
        assert code == 1 and "this load is made as jps" in out and "Traceback" not in out, out
        conformance = operator_token(
            cli, "kit-clerk", "--party", "digital-agency", "--role", "conformance-body"
        )
        code, out = run(cli, *load_foreign, token=conformance)
        assert code == 2 and "it takes a platform-operator or definer or executor" in out
        code, out = run(cli, *load_foreign, "--by", "someone", token=platform)
        assert code == 2 and "--by is for the shipped sources" in out
        # A task's period: an unknown id or kind is refused without a traceback.
        code, out = run(cli, "whitelist", "period", "task", "child-allowance", "--valid-to", B)
        assert code == 2 and "sign in" in out and "Traceback" not in out
        code, out = run(
            cli, "whitelist", "period", "task", "child-allowance", "--valid-to", B, token=minato
        )
        assert code == 2 and "it takes a platform-operator" in out
        code, out = run(
            cli, "whitelist", "period", "task", "child-allowence", "--valid-to", B, token=platform
        )
        assert code == 1 and "unknown task 'child-allowence'" in out and "Traceback" not in out
        assert "did you mean `child-allowance`" in out
        code, out = run(cli, "whitelist", "period", "role", "municipal-mayor")
        assert code == 2 and "'role': task or info" in out and "Traceback" not in out
        bad = tmp_path / "bad.csv"
        bad.write_text("item,requester_role,task,provider_role,info\n1,x,y\n", encoding="utf-8")
        code, out = run(
            cli, "whitelist", "load", "--source", "cli-source", "--file", str(bad), token=platform
        )
        assert code == 1 and "bad.csv:2: 5 columns expected" in out and "Traceback" not in out
        code, out = run(cli, "whitelist", "load", "--file", str(bad))
        assert code == 2 and "--source and --file go together" in out
        code, out = run(
            cli,
            *("whitelist", "load", "--source", "loop", "--file", str(ordinance_file)),
            *("--supersedes", "loop"),
            *("--title", "t", "--citation", "c", "--valid-from", "2030-01-01"),
            token=platform,
        )
        assert code == 1 and "a source cannot supersede itself" in out and "Traceback" not in out
        code, out = run(
            cli,
            *("whitelist", "load", "--source", "x", "--file", str(bad), "--valid-from", "soon"),
        )
        assert code == 2 and "'soon' is not a day (YYYY-MM-DD)" in out
        # The official XML's table, through the shipped mapping: a source of its own.
        code, out = run(
            cli,
            *("whitelist", "load", "--source", "egov-excerpt", "--file", str(XML_FIXTURE)),
            *("--valid-from", "2017-07-18", "--valid-to", "2017-07-19"),
            token=operator_token(
                cli, "xml-tester", "--party", "hub", "--role", "platform-operator"
            ),
        )
        assert code == 0, out
        assert "loaded egov-excerpt" in out and "114 added, 0 removed" in out
        assert "in force 2017-07-18 to 2017-07-19" in out and "by xml-tester" in out
    finally:
        get_settings.cache_clear()


async def test_a_life_event_version_made_nonconformant_starts_no_scan(
    law, loaded: LoadReport, base_settings: Settings, catalog, tmp_path: Path
) -> None:
    """The cities' own ordinances lose the pension notice's cohort rule today: its operating
    version (of every municipal mayor) is stopped, and the hub refuses its scan (a scan would
    otherwise start flows that are refused one by one), naming the source and the day."""
    from temporalio.exceptions import ApplicationError
    from temporalio.testing import ActivityEnvironment

    from activities.approved import ApprovalCheck
    from activities.hub import HubActivities
    from activities.permits import PermitIssuer
    from renkei.contracts.messages import ScanRequest
    from renkei.kernel import keys
    from renkei.kernel.pseudonyms import Pseudonyms
    from whitelist.store import LiveWhitelist

    pool, url = law
    for city in ("city-minato", "city-shibuya"):  # each city's ordinance, loaded as that city
        rows = tmp_path / f"local-{city}.yaml"
        rows.write_text(
            f"body: {city}\nrows:\n"
            + "".join(
                f"  - {{item: '1', requester_role: municipal-board-of-education,"
                f" task: school-entry-notice, provider_role: municipal-board-of-education,"
                f" info: {info}}}\n"
                for info in ("resident-cohort", "resident-record")
            ),
            encoding="utf-8",
        )
        report = await load_file(
            pool, f"local-{city}", rows, SourceOptions(), "law-tester", as_org=city
        )
    today = dt.datetime.now(JST).date()
    assert report.outcome.effective == today
    stopped = {(r.bpf, r.conformant) for r in report.affected}
    assert ("coming-of-age-pension-notice", False) in stopped
    assert ("school-entry-notice", False) not in stopped  # its rows are kept
    # A stop an earlier load announced (the ordinance's) is not announced again.
    assert "vaccination-relief-medical-check" not in {r.bpf for r in report.affected}
    assert any(not r.conformant for r in report.reviewed if r.bpf.startswith("vaccination"))

    hub_keys = keys.load(base_settings)
    hub = HubActivities(
        pool,
        catalog,
        Pseudonyms(pool, hub_keys.hub_key),
        LiveWhitelist(url, sealed_by=hub_keys.signer().public_key()),
        PermitIssuer(pool, hub_keys),
        "law",
        "operation",
        approvals=ApprovalCheck(pool, hub_keys.signer().public_key(), "digital-agency"),
    )
    request = ScanRequest(
        bpf="coming-of-age-pension-notice", executor="city-minato", age=20, on="birthday"
    ).attested(hub_keys.signer())
    from renkei.contracts.names import scan_workflow_id

    scanning = ActivityEnvironment()  # called from the platform's scan of that flow
    scanning.info = dataclasses.replace(
        scanning.info,
        workflow_id=scan_workflow_id("coming-of-age-pension-notice", "city-minato", "20-birthday"),
        workflow_run_id="run",
    )
    with pytest.raises(ApplicationError) as refused:
        await scanning.run(hub.scan_target, request)
    assert refused.value.type == "VersionStopped"  # its own failure type, not UnknownBpf
    assert "local-city-shibuya" in str(refused.value) and today.isoformat() in str(refused.value)


REPLACEMENT = """\
bpf: vaccination-relief-medical-check
version: 2
title: {ja: 予防接種健康被害救済 申請受付, en: Vaccination relief — application intake}
task: vaccination-health-damage-relief
owners:
  definer: mhlw
  executors: [role:municipal-mayor]
triggers: [counter]
inputs:
  insurer: {type: org, role: medical-insurer}
  claimed_amount: {type: integer, min: 0}
steps:
  - id: relief
    set:
      payable: inputs.claimed_amount
result:
  payable: relief.payable
"""


async def test_a_replacement_in_operation_starts_where_the_stopped_version_may_not(
    law, loaded: LoadReport, catalog
) -> None:
    """v1 is stopped from the ordinance's first day; a v2 that asks no one (so conforms) is put
    into operation: a start without a version runs v2, a start naming v1 is still refused."""
    from renkei.bpf import registry
    from renkei.bpf.loader import parse_text

    pool, _ = law
    await registry.register(pool, parse_text(REPLACEMENT, "vaccination-relief-v2.yaml"))
    await operating_for(pool, "city-minato", "vaccination-relief-medical-check", 2)
    args = {
        "executor": "city-minato",
        "subject": "A" * 20,
        "inputs": {"insurer": "kyokai-kenpo", "claimed_amount": 1000},
        "trigger": "counter",
        "on": BEGINS,
    }
    found, _ = await admit(
        pool,
        catalog,
        "operation",
        bpf="vaccination-relief-medical-check",
        version=None,
        **args,
        hub=HUB[0].public_key(),
    )
    assert found.definition.version == 2
    with pytest.raises(StartRefused) as refused:
        await admit(
            pool,
            catalog,
            "operation",
            bpf="vaccination-relief-medical-check",
            version=1,
            **args,
            hub=HUB[0].public_key(),
        )
    # Named: the day, and what changes the law on it (a later load elsewhere changes nothing).
    reason = refused.value.reason
    assert f"from {B} (source ordinance-test begins, source annex2-2015 ends)" in reason


async def test_a_version_put_into_operation_after_a_load_stops_on_the_day_the_law_changes(
    law, loaded: LoadReport, base_settings: Settings, catalog
) -> None:
    """Operated today, when the 2015 table still stands in, a version that asks for what the
    ordinance drops conforms now and stops on the ordinance's first day."""
    from renkei.bpf import registry
    from renkei.bpf.loader import parse_text

    pool, _ = law
    text = (base_settings.definitions_dir / "vaccination-relief.yaml").read_text(encoding="utf-8")
    await registry.register(
        pool, parse_text(text.replace("version: 1", "version: 3"), "vaccination-relief-v3.yaml")
    )
    await pool.execute(  # arrangement: conformance and approval have their own tests
        "UPDATE registry.bpf_versions SET state = 'approved'"
        " WHERE bpf = 'vaccination-relief-medical-check' AND version = 3"
    )
    await registry.transition(
        pool,
        "vaccination-relief-medical-check",
        3,
        "operate",
        "city-minato",
        conformance_body="digital-agency",
        actor_roles=catalog.org_roles("city-minato"),
        catalog=catalog,
    )
    args = {
        "bpf": "vaccination-relief-medical-check",
        "version": 3,
        "executor": "city-minato",
        "subject": "A" * 20,
        "inputs": {"insurer": "kyokai-kenpo", "claimed_amount": 1000},
        "trigger": "counter",
    }
    await admit(
        pool,
        catalog,
        "operation",
        **args,
        on=BEGINS - dt.timedelta(days=1),
        hub=HUB[0].public_key(),
    )
    with pytest.raises(StartRefused) as refused:
        await admit(pool, catalog, "operation", **args, on=BEGINS, hub=HUB[0].public_key())
    assert f"v3 does not conform to the whitelist from {B}" in refused.value.reason
    assert "source ordinance-test begins" in refused.value.reason


async def test_rows_stored_before_sources_were_recorded_count_as_the_previous_load(
    law, loaded: LoadReport, ordinance_file: Path
) -> None:
    """A database from before sources: rows of a source with no row in whitelist.sources. Its
    first recorded load diffs against those rows, not as a new source."""
    pool, _ = law
    rows = [
        r.model_copy(update={"source": "legacy", "id": f"legacy/{r.id}"})
        for r in loaded.outcome.diff.added
    ]
    await store.replace_source(pool, "legacy", rows, hub=HUB[0])
    report = await load_file(
        pool,
        "legacy",
        ordinance_file,
        SourceOptions(title="legacy", citation=CITATION, valid_from=BEGINS),
        "law-tester",
        today=TODAY,
    )
    d = report.outcome.diff
    assert d.against == "legacy" and len(d.added) == 5 and d.unchanged == 1 and not d.removed
    assert "diff against legacy" in "\n".join(report.lines())


def _ordinance_yaml(path: Path, body: str | None, infos: tuple[str, ...]) -> Path:
    path.write_text(
        (f"body: {body}\n" if body else "")
        + "rows:\n"
        + "".join(
            f"  - {{item: '一', requester_role: municipal-mayor, task: child-allowance,"
            f" provider_role: municipal-mayor, info: {info}}}\n"
            for info in infos
        ),
        encoding="utf-8",
    )
    return path


def _supersedes(path: Path, ended: str) -> Path:
    _ordinance_yaml(path, "city-minato", ("resident-record",))
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace("\nrows:", f"\nsupersedes: {ended}\nrows:", 1), encoding="utf-8")
    return path


async def test_a_city_loads_only_its_own_ordinance_and_the_load_records_which_city(
    law, loaded: LoadReport, tmp_path: Path
) -> None:
    """Another body's ordinance, national law, a source handed to another body: each refused,
    located at the file's `body:` line, and nothing loaded. A city's own load is recorded with
    who made it and as which body, and its rows permit that city only."""
    pool, _ = law
    rows_before = await pool.fetchval("SELECT count(*) FROM whitelist.rows")
    loads_before = await pool.fetchval("SELECT count(*) FROM whitelist.loads")
    shibuyas = _ordinance_yaml(tmp_path / "shibuya.yaml", "city-shibuya", ("resident-record",))
    refusals = {
        # city-minato loads city-shibuya's ordinance
        ("local-city-shibuya", shibuyas, "city-minato"): (
            f"{shibuyas}:1: body: source 'local-city-shibuya' is city-shibuya's own ordinance",
            "only city-shibuya loads or replaces its rows, and this load is made as city-minato",
        ),
        # ... or names itself in a file for city-shibuya's source
        (
            "local-city-shibuya",
            _ordinance_yaml(tmp_path / "mine.yaml", "city-minato", ("resident-record",)),
            "city-minato",
        ): ("body: source 'local-city-shibuya' is city-shibuya's own ordinance",),
        # a body's ordinance loaded as no body
        ("local-city-shibuya", shibuyas, None): (
            "this load is made by a platform operator, for no body",
        ),
        # a city loading national law (no body)
        (
            "annex2-2015",
            _ordinance_yaml(tmp_path / "national.yaml", None, ("resident-record",)),
            "city-minato",
        ): ("loading as city-minato: a body loads only its own ordinance",),
        # city-minato's new ordinance ending city-shibuya's
        (
            "local-city-minato-2027",
            _supersedes(tmp_path / "ends.yaml", "local-city-shibuya"),
            "city-minato",
        ): (
            f"{tmp_path / 'ends.yaml'}:2: supersedes: local-city-shibuya is city-shibuya's own"
            " ordinance; source 'local-city-minato-2027' cannot end it",
        ),
        # an ordinance of a body that is no local government
        (
            "local-mhlw",
            _ordinance_yaml(tmp_path / "mhlw.yaml", "mhlw", ("resident-record",)),
            "mhlw",
        ): ("'mhlw' is not a local government",),
    }
    for (sid, path, as_org), expected in refusals.items():
        with pytest.raises(SourceFileError) as refused:
            await load_file(
                pool,
                sid,
                path,
                SourceOptions(title="t", citation="c {item}", valid_from=dt.date(2024, 4, 1)),
                "law-tester",
                as_org=as_org,
            )
        for text in expected:
            assert text in str(refused.value), (sid, as_org, str(refused.value))
    assert await pool.fetchval("SELECT count(*) FROM whitelist.rows") == rows_before
    assert await pool.fetchval("SELECT count(*) FROM whitelist.loads") == loads_before

    # city-minato replaces its own ordinance's rows (the child allowance's own check only)
    own = _ordinance_yaml(tmp_path / "own.yaml", "city-minato", ("resident-record",))
    report = await load_file(
        pool, "local-city-minato", own, SourceOptions(), "minato-clerk", as_org="city-minato"
    )
    assert "load" in report.lines()[1] and "as city-minato" in report.lines()[1]
    recorded = await pool.fetchrow(
        "SELECT loaded_by, body, rows FROM whitelist.loads WHERE id = $1", report.outcome.load_id
    )
    assert dict(recorded) == {"loaded_by": "minato-clerk", "body": "city-minato", "rows": 1}
    [row] = await store.fetch_rows(pool, "source = $1", "local-city-minato")
    assert row.body == "city-minato" and row.scope == "within-body"
    assert row.item.startswith(
        "港区行政手続における特定の個人を識別するための番号の利用等に関する条例"
    )


async def test_a_tasks_period_set_in_the_registry_denies_after_it_and_stops_its_versions(
    law, loaded: LoadReport, catalog
) -> None:
    """The live registry ends the child allowance task: a linkage of it past its end is
    denied with that reason, the change is recorded as a load, the review stops its operating
    version from that day, and opening the period again lifts the stop."""

    pool, _ = law
    ends = BEGINS + dt.timedelta(days=10)

    async def start(on: dt.date) -> None:
        await admit(
            pool,
            catalog,
            "operation",
            bpf="child-allowance-check",
            version=None,
            executor="city-minato",
            subject="A" * 20,
            inputs={"previous_municipality": "city-shibuya"},
            trigger="counter",
            on=on,
            hub=HUB[0].public_key(),
        )

    with pytest.raises(store.SourceRefused, match="unknown task 'child-allowence'"):
        await set_period(pool, "task", "child-allowence", None, ends, "law-tester")
    report = await set_period(pool, "task", "child-allowance", None, ends, "period-tester")
    text = "\n".join(report.lines())
    assert f"task child-allowance: in force from the start to {ends} (was always)" in text
    [stopped] = [r for r in report.affected if r.bpf == "child-allowance-check"]
    assert stopped.stops_on == ends
    assert f"task 'child-allowance' is not in force on {ends}: it ended on {ends}" in "\n".join(
        stopped.problems
    )
    recorded = await pool.fetchrow(
        "SELECT source, file_name, loaded_by, diff::text AS diff FROM whitelist.loads"
        " WHERE id = $1",
        report.outcome.load_id,
    )
    assert recorded["source"] == "catalog-periods" and recorded["loaded_by"] == "period-tester"
    assert recorded["file_name"] == "task child-allowance" and "(was always)" in recorded["diff"]

    index = await store.load_index(pool)
    at = dt.datetime.combine(ends, dt.time(12), tzinfo=JST)
    before = decide_linkage(
        catalog,
        index,
        "city-minato",
        "city-shibuya",
        "child-allowance",
        "local-tax",
        at - dt.timedelta(days=1),
    )
    assert before.allowed
    after = decide_linkage(
        catalog, index, "city-minato", "city-shibuya", "child-allowance", "local-tax", at
    )
    assert not after.allowed and after.reason.startswith(
        f"task 'child-allowance' is not in force on {ends}: it ended on {ends}"
    )

    await start(ends - dt.timedelta(days=1))
    with pytest.raises(StartRefused) as refused:
        await start(ends)
    assert "task child-allowance ends" in refused.value.reason and str(ends) in refused.value.reason

    # An info item's period: before it begins, nothing of it (nor of its finer items) is permitted.
    report = await set_period(pool, "info", "local-tax", ends, None, "period-tester")
    index = await store.load_index(pool)
    early = decide_linkage(
        catalog, index, "city-minato", "city-shibuya", "child-allowance", "local-tax", at
    )
    assert not early.allowed and "task 'child-allowance'" in early.reason  # the task's first
    tax = decide_linkage(
        catalog,
        index,
        "pref-tokyo",
        "city-minato",
        "child-rearing-allowance",
        "local-tax",
        at - dt.timedelta(days=1),
    )
    assert not tax.allowed
    assert f"info item 'local-tax' is not in force on {ends - dt.timedelta(days=1)}" in tax.reason
    assert f"it begins on {ends}" in tax.reason

    # Both periods open again: the review lifts the stop.
    await set_period(pool, "info", "local-tax", None, None, "period-tester")
    report = await set_period(pool, "task", "child-allowance", None, None, "period-tester")
    assert all(r.conformant for r in report.reviewed if r.bpf == "child-allowance-check")
    await start(ends)


async def test_the_api_refuses_a_start_of_a_stopped_version_with_409_naming_source_and_day(
    law, loaded: LoadReport, base_settings: Settings, client
) -> None:
    """A version the review stopped today: the agencies' API answers 409 with the reason (the
    version, the day and what changed the law on it), not as an unknown BPF."""
    from renkei.app.web import serving
    from renkei.app.web.api import issue_token

    pool, url = law
    # Today in Japan, as the review reckons it now (the session may have begun the day before).
    today = dt.datetime.now(JST).date()
    report = await set_period(pool, "task", "child-allowance", None, today, "period-tester")
    try:
        [stopped] = [r for r in report.reviewed if r.bpf == "child-allowance-check"]
        assert stopped.stops_on == today
        settings = base_settings.model_copy(update={"mode": "operation", "database_url": url})
        agency = {"Authorization": f"Bearer {await issue_token(pool, 'city-minato')}"}
        body = {
            "bpf": "child-allowance-check",
            "executor": "city-minato",
            "subject": "A" * 20,
            "case_ref": f"case-{uuid.uuid4().hex[:8]}",
            "inputs": {"previous_municipality": "city-shibuya"},
        }
        async with serving(settings, pool, client) as base:
            import httpx

            async with httpx.AsyncClient(base_url=base) as http:
                refused = await http.post("/api/flows", json=body, headers=agency)
        assert refused.status_code == 409, refused.text
        detail = refused.json()["detail"]
        assert f"child-allowance-check v1 does not conform to the whitelist from {today}" in detail
        assert "(task child-allowance ends)" in detail
        assert "task 'child-allowance' is not in force" in detail
    finally:
        await set_period(pool, "task", "child-allowance", None, None, "period-tester")
