"""Owners who answer for what they do: the lifecycle acts as the signed-in operator, a BPF's
definer is kept across versions unless a recorded transfer changes it, co-definers each submit,
and an executor acting for another body is recorded as such (docs/participants.md)."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import asyncpg
import pytest
from temporalio.client import Client
from typer.testing import CliRunner

from renkei.app import approvals
from renkei.app.actors import TOKEN_VARIABLE
from renkei.app.kit import Report, promote_samples, run_scenarios, scenarios_for, store_report
from renkei.app.kit.scenarios import ScenarioSet
from renkei.app.web.codec_server import add_operator
from renkei.bpf import registry
from renkei.bpf.loader import LoadedBpf, parse_text
from renkei.kernel import attest, keys
from renkei.kernel.settings import Settings
from tests.helpers import transition
from tests.paths import PROJECT_ROOT

PROBE = (PROJECT_ROOT / "tests" / "definitions" / "register-probe.yaml").read_text(encoding="utf-8")


def _probe(bpf: str, version: int = 1, owners: str = "") -> LoadedBpf:
    text = PROBE.replace("bpf: register-probe", f"bpf: {bpf}").replace(
        "version: 1", f"version: {version}"
    )
    if owners:
        start = text.index("owners:")
        end = text.index("triggers:")
        text = text[:start] + owners + text[end:]
    return parse_text(text, f"{bpf}-v{version}.yaml")


def _cli(cli: CliRunner, token: str | None, *args: str) -> tuple[int, str]:
    from renkei.app.cli import app

    result = cli.invoke(app, list(args), env={TOKEN_VARIABLE: token or ""})
    return result.exit_code, result.output


async def _op(pool: asyncpg.Pool, party: str, role: str) -> str:
    return await add_operator(pool, f"{party}-{role}-{uuid.uuid4().hex[:6]}", party, role)


async def _passed(pool: asyncpg.Pool, bpf: str, version: int) -> None:
    found = await registry.fetch(pool, bpf, version, "test")
    assert found is not None
    await store_report(
        pool,
        Report(
            bpf=bpf, version=version, content_hash=found.content_hash, passed=True, scenarios=[]
        ),
    )


async def test_the_lifecycle_acts_as_the_signed_in_operator_and_refuses_another_orgs(
    pool: asyncpg.Pool, settings: Settings, cli: CliRunner
) -> None:
    bpf = f"probe-{uuid.uuid4().hex[:8]}"
    assert await registry.register(pool, _probe(bpf))
    await _passed(pool, bpf, 1)
    mhlw = await _op(pool, "mhlw", "definer")
    tokyo = await _op(pool, "pref-tokyo", "definer")
    body = await _op(pool, settings.conformance_body, "conformance-body")
    minato = await _op(pool, "city-minato", "executor")
    kenpo = await _op(pool, "kyokai-kenpo", "executor")

    async def cli_(token: str | None, *args: str) -> tuple[int, str]:
        return await asyncio.to_thread(_cli, cli, token, *args)

    assert await cli_(None, "bpf", "submit", bpf, "1") == (
        1,
        "refused: sign in: set RENKEI_OPERATOR_TOKEN to your operator token (renkei operators"
        " add NAME --party PARTY --role ROLE prints one)\n",
    )
    code, out = await cli_(tokyo, "bpf", "submit", bpf, "1")
    assert (code, out) == (1, f"refused: 'submit' is for the definer of {bpf}; pref-tokyo is not\n")
    code, out = await cli_(mhlw, "bpf", "submit", bpf, "1")
    assert code == 0 and "draft → conformance-passed by mhlw (definer" in out, out
    # the definer, or an executor, cannot approve: that takes the conformance body
    code, out = await cli_(mhlw, "bpf", "approve", bpf, "1")
    assert code == 1 and "'approve' takes a conformance-body; you are" in out, out
    code, out = await cli_(minato, "bpf", "approve", bpf, "1")
    assert code == 1 and "(executor of city-minato)" in out, out
    # a free --as is gone: the caller cannot name another party
    code, out = await cli_(minato, "bpf", "approve", bpf, "1", "--as", "digital-agency")
    assert code == 2 and "No such option: --as" in out, out
    code, out = await cli_(body, "bpf", "approve", bpf, "1")
    assert code == 0 and "by digital-agency (conformance-body" in out, out
    # an executor of an org that does not run this BPF cannot put it into operation
    code, out = await cli_(kenpo, "bpf", "operate", bpf, "1")
    assert (code, out) == (
        1,
        f"refused: 'operate' is for the executor of {bpf}; kyokai-kenpo is not\n",
    )
    code, out = await cli_(minato, "bpf", "operate", bpf, "1")
    assert code == 0, out
    history = await registry.history(pool, bpf, 1)
    assert [(t.to_state, t.actor, t.actor_role) for t in history] == [
        ("conformance-passed", "mhlw", "definer"),
        ("approved", "digital-agency", "conformance-body"),
        ("operating", "city-minato", "executor"),
    ]
    assert all(t.operator and t.operator.startswith(t.actor) for t in history)
    code, out = await cli_(None, "bpf", "history", bpf, "1")
    assert code == 0 and out.count("\toperator ") == 4  # three transitions, one certificate
    assert "certificate\tdigital-agency approves content" in out


async def test_a_version_naming_another_definer_is_refused_until_a_recorded_transfer(
    pool: asyncpg.Pool, cli: CliRunner
) -> None:
    bpf = f"probe-{uuid.uuid4().hex[:8]}"
    assert await registry.register(pool, _probe(bpf))
    tokyo_owned = "owners:\n  definer: pref-tokyo\n  executors: [city-minato]\n"
    with pytest.raises(registry.OwnershipRefused) as refused:
        await registry.register(pool, _probe(bpf, 2, tokyo_owned))
    assert str(refused.value) == (
        f"{bpf}-v2.yaml: {bpf} is defined by mhlw, and version 2 names pref-tokyo: a BPF's"
        f" definer is kept across versions; only a recorded transfer (renkei bpf transfer {bpf}"
        " --to ORG) changes it"
    )
    tokyo = await _op(pool, "pref-tokyo", "definer")
    mhlw = await _op(pool, "mhlw", "definer")
    minato = await _op(pool, "city-minato", "executor")
    args = ("bpf", "transfer", bpf, "--to", "pref-tokyo", "--reason", "moved to the prefecture")
    code, out = await asyncio.to_thread(_cli, cli, tokyo, *args)
    assert (code, out) == (
        1,
        f"refused: only {bpf}'s definer (mhlw) transfers it; pref-tokyo is not\n",
    )
    code, out = await asyncio.to_thread(_cli, cli, minato, *args)
    assert code == 1 and "a transfer takes the definer" in out
    code, out = await asyncio.to_thread(
        _cli, cli, mhlw, "bpf", "transfer", bpf, "--to", "no-org", "--reason", "x"
    )
    assert (code, out) == (2, "error: unknown org 'no-org'\n")
    code, out = await asyncio.to_thread(_cli, cli, mhlw, *args)
    assert (code, out) == (0, f"{bpf}: definer mhlw → pref-tokyo\n")
    assert await registry.register(pool, _probe(bpf, 2, tokyo_owned))
    with pytest.raises(registry.OwnershipRefused):  # the old definer's name no longer holds
        await registry.register(pool, _probe(bpf, 3))
    [t] = await registry.transfers(pool, bpf)
    assert (t.from_definer, t.to_definer, t.actor, t.reason) == (
        "mhlw",
        "pref-tokyo",
        "mhlw",
        "moved to the prefecture",
    )
    assert t.operator.startswith("mhlw-definer-")


async def test_co_definers_each_submit_and_an_entrusted_executor_is_recorded_as_such(
    pool: asyncpg.Pool,
) -> None:
    bpf = f"probe-{uuid.uuid4().hex[:8]}"
    owners = (
        "owners:\n  definer: mhlw\n  co-definers: [pref-tokyo]\n  executors: [city-minato]\n"
        "  entrusted-by: {city-minato: pref-tokyo}\n"
    )
    assert await registry.register(pool, _probe(bpf, 1, owners))
    await _passed(pool, bpf, 1)

    async def move(action: registry.Action, actor: str) -> registry.Transition:
        return await transition(pool, bpf, 1, action, actor, operator=f"{actor}-op")

    first = await move("submit", "mhlw")
    assert (first.to_state, first.pending) == ("draft", ["pref-tokyo"])
    assert await registry.state_of(pool, bpf, 1) == "draft"
    with pytest.raises(registry.TransitionRefused, match="is for the definer"):
        await move("submit", "city-minato")
    second = await move("submit", "pref-tokyo")
    assert (second.to_state, second.pending) == ("conformance-passed", [])
    await move("approve", "digital-agency")
    operated = await move("operate", "city-minato")
    assert operated.actor_role == "executor entrusted by pref-tokyo"
    history = await registry.history(pool, bpf, 1)
    assert [(t.actor, t.actor_role, t.operator) for t in history] == [
        ("pref-tokyo", "definer", "pref-tokyo-op"),
        ("digital-agency", "conformance-body", "digital-agency-op"),
        ("city-minato", "executor entrusted by pref-tokyo", "city-minato-op"),
    ]
    signed = await pool.fetch(
        "SELECT party, operator FROM registry.co_signatures WHERE bpf = $1 ORDER BY id", bpf
    )
    assert [(r["party"], r["operator"]) for r in signed] == [
        ("mhlw", "mhlw-op"),
        ("pref-tokyo", "pref-tokyo-op"),
    ]


# -- the conformance body's own voice ------------------------------------------------------------

SAMPLE = PROJECT_ROOT / "renkei" / "definitions" / "child-allowance.yaml"


def _sample_copy(bpf: str) -> LoadedBpf:
    text = SAMPLE.read_text(encoding="utf-8").replace("bpf: child-allowance-check", f"bpf: {bpf}")
    return parse_text(text, f"{bpf}.yaml")


def _sample_kit(bpf: str) -> ScenarioSet:
    return scenarios_for("child-allowance-check").model_copy(update={"bpf": bpf})


async def test_the_conformance_body_adds_scenarios_runs_the_kit_and_signs_its_approval(
    client: Client,
    pool: asyncpg.Pool,
    settings: Settings,
    catalog,
    live_whitelist,
    cli: CliRunner,
    tmp_path: Path,
) -> None:
    bpf = f"ca-{uuid.uuid4().hex[:8]}"
    assert await registry.register(pool, _sample_copy(bpf))
    body = await _op(pool, settings.conformance_body, "conformance-body")
    mhlw = await _op(pool, "mhlw", "definer")
    first = _sample_kit(bpf).scenarios[0]
    extra = tmp_path / "extra.yaml"
    extra.write_text(
        ScenarioSet(
            bpf=bpf, scenarios=[first.model_copy(update={"name": "body's own"})]
        ).model_dump_json(by_alias=True),
        encoding="utf-8",
    )

    async def cli_(token: str | None, *args: str) -> tuple[int, str]:
        return await asyncio.to_thread(_cli, cli, token, *args)

    code, out = await cli_(mhlw, "bpf", "add-scenarios", bpf, "1", str(extra))
    assert code == 1 and "adding to a kit takes the conformance body" in out, out
    code, out = await cli_(body, "bpf", "add-scenarios", bpf, "1", str(extra))
    assert (code, out) == (0, f"{bpf} v1: kit now also runs body's own\n")
    code, out = await cli_(body, "bpf", "add-scenarios", bpf, "1", str(extra))
    assert code == 1 and 'already has scenario "body\'s own"' in out, out

    # the body runs the kit itself: the shipped scenarios and its own
    kit = await approvals.kit_for(pool, bpf, 1, _sample_kit(bpf))
    assert kit.scenarios[-1].name == "body's own"
    report = await run_scenarios(client, pool, settings, catalog, live_whitelist, bpf, 1, kit)
    assert report.passed, report.summary()
    assert "body's own" in {s.name for s in report.scenarios}
    own_report = await store_report(pool, report, run_by=settings.conformance_body)
    await _passed(pool, bpf, 1)  # the definer's own run, submitted with
    assert (await cli_(mhlw, "bpf", "submit", bpf, "1"))[0] == 0
    code, out = await cli_(body, "bpf", "approve", bpf, "1")
    assert code == 0, out

    found = await registry.fetch(pool, bpf, 1, "test")
    assert found is not None
    [approval] = await approvals.approvals(pool, bpf, 1)
    assert (approval.content_hash, approval.report_hash) == (found.content_hash, own_report)
    code, out = await cli_(None, "bpf", "history", bpf, "1")
    assert f"certificate\tdigital-agency approves content {found.content_hash} on report" in out
    code, out = await cli_(None, "bpf", "verify", bpf, "1")
    assert code == 0 and out.startswith("OK "), out

    # forged: another key, a report hash no kept report has, another content
    hub = keys.load(settings).signer()
    own = keys.load_org(settings, settings.conformance_body).signer()
    made_up = "sha256:" + "1" * 64
    forged = [
        approval.model_copy(
            update={
                "signature": attest.version_approval(
                    hub, bpf, 1, approval.content_hash, approval.report_hash
                )
            }
        ),
        approval.model_copy(
            update={
                "report_hash": made_up,
                "signature": attest.version_approval(own, bpf, 1, approval.content_hash, made_up),
            }
        ),
        approval.model_copy(
            update={
                "content_hash": made_up,
                "signature": attest.version_approval(own, bpf, 1, made_up, approval.report_hash),
            }
        ),
    ]
    assert [await approvals.verify(pool, settings, f) for f in forged] == [
        "the signature does not hold for this version, its content and this report hash",
        f"no passing report for this content has hash {made_up}",
        f"the registered content of {bpf} v1 is {found.content_hash}",
    ]
    # a forged row in the table is caught by the command
    await pool.execute(
        "INSERT INTO registry.approvals (bpf, version, content_hash, report_hash, signer,"
        " signing_id, signature) VALUES ($1, 1, $2, $3, $4, 'x', $5)",
        bpf,
        forged[0].content_hash,
        forged[0].report_hash,
        forged[0].signer,
        forged[0].signature,
    )
    code, out = await cli_(None, "bpf", "verify", bpf, "1")
    assert code == 1 and "BAD" in out and out.startswith("OK "), out


async def test_samples_are_approved_by_the_same_path_with_a_certificate_that_verifies(
    client: Client, pool: asyncpg.Pool, settings: Settings, catalog, live_whitelist, tmp_path: Path
) -> None:
    bpf = f"ca-{uuid.uuid4().hex[:8]}"
    shipped = tmp_path / "definitions"
    shipped.mkdir()
    text = SAMPLE.read_text(encoding="utf-8").replace("bpf: child-allowance-check", f"bpf: {bpf}")
    (shipped / f"{bpf}.yaml").write_text(text, encoding="utf-8")
    assert await registry.register(pool, _sample_copy(bpf))
    # A draft under a sample's name whose content is not the shipped file's (written into the
    # database by whoever holds the application's role) is not approved with the body's key.
    other = f"ca-{uuid.uuid4().hex[:8]}"
    (shipped / f"{other}.yaml").write_text(
        text.replace(f"bpf: {bpf}", f"bpf: {other}"), encoding="utf-8"
    )
    changed = text.replace(f"bpf: {bpf}", f"bpf: {other}").replace(
        "en: Child allowance — eligibility check", "en: not the shipped one"
    )
    assert "not the shipped one" in changed
    assert await registry.register(pool, parse_text(changed, f"{other}.yaml"))
    for name in (bpf, other):
        (tmp_path / f"{name}.yaml").write_text(
            _sample_kit(name).model_dump_json(by_alias=True), encoding="utf-8"
        )
    installed = settings.model_copy(update={"definitions_dir": shipped})
    done = await promote_samples(client, pool, installed, catalog, live_whitelist, tmp_path)
    assert f"{bpf} v1: operating" in done
    assert (
        f"{other} v1: not promoted: its registered content is not the shipped file's"
        in " ".join(done)
    )
    assert await registry.state_of(pool, other, 1) == "draft"
    assert not await approvals.approvals(pool, other, 1)
    [approval] = await approvals.approvals(pool, bpf, 1)
    assert approval.signer == settings.conformance_body
    assert await approvals.verify(pool, settings, approval) is None
