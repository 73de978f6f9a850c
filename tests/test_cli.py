"""The renkei command against the test database."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from pathlib import Path

import pytest
from temporalio.client import Client
from typer.testing import CliRunner

from renkei.app.client import RenkeiClient
from renkei.kernel.settings import Settings
from tests.paths import SAMPLES_DIR

from .helpers import allowance_check, cli_joins, operator_token, run, shibuya_family
from .helpers import code as code_of


def test_whitelist_check_allows_with_the_row(cli: CliRunner) -> None:
    code, out = run(
        cli,
        "whitelist",
        "check",
        "pref-tokyo",
        "child-rearing-allowance",
        "city-minato",
        "local-tax",
    )
    assert code == 0
    assert out.startswith("ALLOW") and "番号法別表第二 五十七項" in out


def test_whitelist_check_denies_with_the_reason(cli: CliRunner) -> None:
    code, out = run(
        cli,
        "whitelist",
        "check",
        "city-minato",
        "child-allowance",
        "kyokai-kenpo",
        "medical-benefit",
    )
    assert code == 1
    assert out.startswith("DENY") and "no whitelist row permits" in out


def test_whitelist_check_denied_says_which_rows_would_permit(cli: CliRunner) -> None:
    code, out = run(
        cli,
        "whitelist",
        "check",
        "city-minato",
        "child-rearing-allowance",
        "city-shibuya",
        "local-tax",
    )
    assert code == 1 and out.startswith("DENY")
    assert "rows that permit 'local-tax' under task 'child-rearing-allowance':" in out
    assert "prefectural-governor-etc → municipal-mayor [番号法別表第二 五十七項]" in out
    code, out = run(cli, "whitelist", "check", "city-minto", "child-allowance", "jps", "local-tax")
    assert code != 0 and "did you mean `city-minato`?" in out


def test_whitelist_check_before_the_table_was_in_force_denies(cli: CliRunner) -> None:
    code, out = run(
        cli,
        "whitelist",
        "check",
        "pref-tokyo",
        "child-rearing-allowance",
        "city-minato",
        "local-tax",
        "--at",
        "2016-01-01",
    )
    assert code == 1 and "not in force" in out


def test_whitelist_list_filters_by_item(cli: CliRunner) -> None:
    code, out = run(cli, "whitelist", "list", "--item", "十七")
    assert code == 0
    lines = [ln for ln in out.splitlines() if ln.startswith("番号法")]
    assert lines and all("vaccination-health-damage-relief" in ln for ln in lines)


def test_bpf_validate_passes_samples_and_fails_the_nonconformant(cli: CliRunner) -> None:
    defs = SAMPLES_DIR
    code, out = run(cli, "bpf", "validate", *map(str, sorted(defs.glob("*.yaml"))))
    files = sorted(defs.glob("*.yaml"))
    assert code == 0 and out.count("ok: ") == len(files) >= 6
    code, out = run(
        cli, "bpf", "validate", str(defs / "nonconformant" / "child-allowance-medical-peek.yaml")
    )
    assert code == 1 and "not permitted by the whitelist" in out


def test_bpf_validate_reports_file_line_and_field(cli: CliRunner, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        (SAMPLES_DIR / "child-allowance.yaml")
        .read_text()
        .replace("info: pension-benefit", "info: pension-benefits")
    )
    code, out = run(cli, "bpf", "validate", str(bad))
    assert code == 1
    assert (
        f"{bad}:20: steps[0].parallel[1][0].query.info: unknown info item 'pension-benefits'" in out
    )


def test_bpf_list_shows_registered_versions(cli: CliRunner) -> None:
    code, out = run(cli, "bpf", "list")
    assert code == 0
    assert "child-allowance-check\tv1" in out and "vaccination-relief-medical-check\tv1" in out


async def test_records_lists_what_the_flows_wrote(
    env: RenkeiClient, cli: CliRunner, settings: Settings
) -> None:
    flow = allowance_check(settings)
    handle = await env.start(flow)
    await handle.result()
    # The command runs its own event loop: off this one, as a user would run it beside the flows.
    code, out = await asyncio.to_thread(run, cli, "records", "list", "--workflow", handle.id)
    assert code == 0
    rows = [ln.split("\t") for ln in out.splitlines() if "\t" in ln]
    # keeper#seq, decided at, outcome, requester→provider, info, task, law, bpf, workflow, step
    assert {(r[0].split("#")[0], r[2], r[3], r[4], r[9]) for r in rows} == {
        (keeper, "allowed", f"city-minato→{provider}", info, step)
        for step, provider, info in (
            ("tax", "city-shibuya", "local-tax"),
            ("pension", "jps", "pension-benefit"),
        )
        for keeper in ("city-minato", "hub", provider)
    }
    assert len(rows) == 6 and all(r[8] == handle.id for r in rows)
    assert "6 records" in out
    # Each keeper's code for the subject (the hub's is the subject id) stays in the database.
    parent = shibuya_family(settings).members[0]
    codes = [code_of(settings, org, parent) for org in ("city-minato", "city-shibuya", "jps")]
    assert flow.subject in codes
    assert not any(c in out for c in [*codes, str(parent.subject_id)])


def test_whitelist_check_tells_a_bodys_own_use_from_another_bodys_register(
    cli: CliRunner,
) -> None:
    own = run(
        cli,
        "whitelist",
        "check",
        "city-minato",
        "school-entry-notice",
        "city-minato",
        "resident-cohort",
    )
    assert own[0] == 0 and "番号法第9条第2項" in own[1] and "city-minato's own ordinance" in own[1]
    assert (
        "permitted by 港区行政手続における特定の個人を識別するための番号の利用等に関する条例"
        in own[1]
    )
    other = run(
        cli,
        "whitelist",
        "check",
        "city-minato",
        "school-entry-notice",
        "city-shibuya",
        "resident-cohort",
    )
    assert other[0] == 1 and "its own records only" in other[1]


def test_records_are_witnessed_by_each_party_and_checked_against_exported_heads(
    cli: CliRunner, tmp_path: Path
) -> None:
    assert run(cli, "records", "checkpoint")[0] == 0
    code, out = run(cli, "records", "checkpoint", "--as", "city-minato")
    assert code == 0 and "signed by city-minato" in out
    code, out = run(cli, "records", "heads")
    heads = tmp_path / "heads.json"
    heads.write_text(out[: out.rindex("]") + 1])
    code, out = run(
        cli,
        "records",
        "verify",
        "--as",
        "city-minato",
        "--keeper",
        "city-minato",
        "--against",
        str(heads),
    )
    assert code == 0 and "every chain is intact" in out, out


def test_a_hold_is_requested_by_the_executor_and_approved_by_an_operator(cli: CliRunner) -> None:
    """Both ends act as the signed-in operator: the executor's operator asks for its own org,
    a platform operator (the hub's) approves; no one names themselves or another."""
    until = (dt.date.today() + dt.timedelta(days=30)).isoformat()
    tag = uuid.uuid4().hex[:6]
    executor = operator_token(cli, f"hold-minato-{tag}", "--party", "city-minato")
    definer = operator_token(cli, f"hold-def-{tag}", "--party", "city-minato", "--role", "definer")
    platform = operator_token(cli, f"hold-approver-{tag}")
    asked = ("holds", "request", "--bpf", "register-probe", "--case-ref", f"2026-{tag}")
    asked += ("--subject", "MINATOCODEABCDEFGHIJ", "--reason", "investigation", "--until", until)

    code, out = run(cli, *asked, token="")
    assert code == 2 and "error: sign in: set RENKEI_OPERATOR_TOKEN" in out, out
    code, out = run(cli, *asked, token=definer)
    assert code == 2 and f"hold-def-{tag} (definer of city-minato) may not do this" in out, out
    code, out = run(cli, *asked, "--executor", "city-shibuya", token=executor)
    assert code == 2 and "No such option: --executor" in out, out
    code, out = run(cli, *asked, token=executor)
    assert code == 0 and "pending" in out, out
    hold = out.split()[0]
    # The platform operator reads what waits (the case and its person) before approving it.
    code, out = run(cli, "holds", "pending", token=executor)
    assert code == 2 and "is not a platform operator" in out, out
    code, out = run(cli, "holds", "pending", token=platform)
    [line] = [x for x in out.splitlines() if x.startswith(hold)]
    assert f"register-probe/city-minato/2026-{tag}" in line
    assert "about MINATOCODEABCDEFGHIJ" in line and "investigation" in line, line

    approve = ("holds", "approve", hold)
    code, out = run(cli, *approve, token="")
    assert code == 2 and "error: sign in: set RENKEI_OPERATOR_TOKEN" in out, out
    code, out = run(cli, *approve, token="rko_not-a-token")
    assert code == 2 and "not a current operator token" in out, out
    code, out = run(cli, *approve, token=executor)  # the requester's own org cannot approve
    assert code == 2, out
    assert f"hold-minato-{tag} (executor of city-minato) is not a platform operator" in out
    assert "(an operator of city-minato's)" in out and "Traceback" not in out
    code, out = run(cli, *approve, "--operator", f"hold-approver-{tag}", token=executor)
    assert code == 2 and "No such option: --operator" in out, out
    code, out = run(cli, "holds", "approve", "not-an-id", token=platform)
    assert code == 2 and "'not-an-id' is not a hold request id" in out, out
    code, out = run(cli, *approve, token=platform)
    assert code == 0 and f"approved by hold-approver-{tag}" in out, out
    assert run(cli, *approve, token=platform)[0] == 2  # once


def test_verify_against_a_file_that_is_not_heads_says_so(cli: CliRunner, tmp_path: Path) -> None:
    bad = tmp_path / "heads.json"
    bad.write_text("not json")
    code, out = run(cli, "records", "verify", "--against", str(bad))
    assert code == 2 and "--against" in out
    code, out = run(cli, "records", "verify", "--against", str(tmp_path / "missing.json"))
    assert code == 2


def test_an_agency_gets_a_database_login_of_its_own(cli, tmp_path) -> None:
    """`renkei agencies db-login ORG --password-file F`: a login named for the org; a short
    password, an unknown org or a missing file are refused with the reason."""
    from renkei.app.cli import app

    secret = tmp_path / "pw"
    secret.write_text("a-long-enough-password-for-kyokai\n")
    done = cli.invoke(app, ["agencies", "db-login", "kyokai-kenpo", "--password-file", str(secret)])
    assert done.exit_code == 0, done.output
    assert done.stdout.splitlines()[0] == "renkei_login_kyokai_kenpo"
    again = cli.invoke(
        app, ["agencies", "db-login", "kyokai-kenpo", "--password-file", str(secret)]
    )
    assert again.exit_code == 0, again.output  # a new password for the same login
    short = tmp_path / "short"
    short.write_text("short")
    for args, reason in (
        (["kyokai-kenpo", "--password-file", str(short)], "at least 16"),
        (["nowhere-city", "--password-file", str(secret)], "unknown org"),
        (["kyokai-kenpo", "--password-file", str(tmp_path / "none")], "cannot read"),
    ):
        refused = cli.invoke(app, ["agencies", "db-login", *args])
        assert refused.exit_code == 2 and reason in refused.output, refused.output


def test_notify_publishes_as_the_signed_in_operators_org(
    cli: CliRunner, client: Client, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No free publisher name: the change is the signed-in executor operator's org's, and a
    code is looked up at that org (a code of another org's is no subject of its). The command
    joins the test's Temporal (starting one of its own could take longer than a busy machine
    gives it; the refusals reach no Temporal at all)."""
    cli_joins(monkeypatch, client, settings)
    tag = uuid.uuid4().hex[:6]
    minato = operator_token(cli, f"notify-minato-{tag}", "--party", "city-minato")
    jps = operator_token(cli, f"notify-jps-{tag}", "--party", "jps")
    definer = operator_token(cli, f"notify-def-{tag}", "--party", "jps", "--role", "definer")
    platform = operator_token(cli, f"notify-ops-{tag}")
    person = shibuya_family(settings).members[0]
    jps_code = code_of(settings, "jps", person)
    told = ("notify", "--event", "death", "--event-id", f"d-{tag}", "--occurred-on", "2026-10-31")
    told += ("--subject", jps_code)

    code, out = run(cli, *told, token="")
    assert code == 2 and "error: sign in: set RENKEI_OPERATOR_TOKEN" in out, out
    code, out = run(cli, *told, "--as", "jps", token=minato)
    assert code == 2 and "No such option: --as" in out, out
    for who, role in ((definer, "definer of jps"), (platform, "platform-operator of hub")):
        code, out = run(cli, *told, token=who)
        assert code == 2 and f"({role}) may not do this: it takes a executor" in out, out
    code, out = run(cli, *told, token=minato)  # jps's code is no one at city-minato
    assert code == 1 and "no subject is enrolled under this code at city-minato" in out, out
    assert jps_code not in out
    code, out = run(cli, *told, token=jps)  # jps's own subject; no flow subscribes to jps
    assert code == 0 and "0 flows" in out, out


def test_records_as_an_org_acts_with_its_key_file_and_refuses_anothers(
    cli: CliRunner, settings: Settings, tmp_path: Path
) -> None:
    from renkei.kernel import keys

    minato = keys.org_keys_path(settings, "city-minato")
    copy = tmp_path / "minato.json"
    copy.write_text(minato.read_text())
    for command in ("checkpoint", "verify"):
        code, out = run(cli, "records", command, "--as", "city-shibuya", "--key-file", str(copy))
        assert code == 2, out
        assert f"the key file {copy} is city-minato's, not city-shibuya's" in out, out
        code, out = run(cli, "records", command, "--key-file", str(copy))
        assert code == 2 and "give --as ORG with it" in out, out
        code, out = run(cli, "records", command, "--as", "city-minato", "--key-file", "nope.json")
        assert code == 2 and "--key-file nope.json: no such file" in out, out
    code, out = run(cli, "records", "checkpoint", "--as", "city-minato", "--key-file", str(copy))
    assert code == 0 and "signed by city-minato" in out, out
    code, out = run(
        cli, "records", "verify", "--as", "city-minato", "--key-file", str(copy),
        "--keeper", "city-minato",
    )  # fmt: skip
    assert code == 0 and "every chain is intact" in out, out
