"""Owners who answer for what they do: the lifecycle acts as the signed-in operator, a BPF's
definer is kept across versions unless a recorded transfer changes it, co-definers each submit,
and an executor acting for another body is recorded as such (docs/participants.md)."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest
from typer.testing import CliRunner

from renkei.app.actors import TOKEN_VARIABLE
from renkei.app.kit import Report, store_report
from renkei.app.web.codec_server import add_operator
from renkei.bpf import registry
from renkei.bpf.loader import LoadedBpf, parse_text
from renkei.kernel.settings import Settings
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
    assert code == 0 and out.count("\toperator ") == 3


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
        return await registry.transition(
            pool, bpf, 1, action, actor, conformance_body="digital-agency", operator=f"{actor}-op"
        )

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
