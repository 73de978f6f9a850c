"""The renkei command against the test database."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from tests.paths import SAMPLES_DIR

from .helpers import run


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


def test_records_lists_what_the_flows_wrote(cli: CliRunner) -> None:
    code, _ = run(cli, "records", "list", "--limit", "5")
    assert code == 0
