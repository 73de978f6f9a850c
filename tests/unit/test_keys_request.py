"""``renkei keys request`` exits 2 with the reason on bad input, and no command typer runs
as it is (not through ``run_async``) returns an exit code typer would drop."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from typer.testing import CliRunner

from renkei.app.cli import app
from renkei.kernel import keys
from renkei.kernel.settings import get_settings
from tests.paths import PROJECT_ROOT


def test_keys_request_exits_2_with_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RENKEI_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    runner = CliRunner()
    hub_public = tmp_path / "hub-public.json"
    out = tmp_path / "mhlw.json"
    try:
        for written, reason in (
            (None, "is not the hub's public keys"),  # no such file
            ("{not json", "is not the hub's public keys"),
        ):
            if written is not None:
                hub_public.write_text(written)
            done = runner.invoke(
                app, ["keys", "request", "mhlw", "--hub-public", str(hub_public), "--out", str(out)]
            )
            assert done.exit_code == 2 and reason in done.output, done.output
            assert "Traceback" not in done.output and not out.exists()
        hub_public.write_text(keys.new_keys().public("hub").model_dump_json())
        args = ["keys", "request", "mhlw", "--hub-public", str(hub_public), "--out", str(out)]
        assert runner.invoke(app, args).exit_code == 0
        made = out.read_bytes()
        done = runner.invoke(app, args)
        assert done.exit_code == 2 and "exists; keys are never overwritten" in done.output
        assert out.read_bytes() == made
    finally:
        get_settings.cache_clear()


def test_no_plain_command_returns_an_exit_code() -> None:
    """typer ignores what a command returns: a plain (not ``run_async``) command that returns
    a code exits 0 whatever it returns; it must raise ``typer.Exit`` instead."""
    found = []
    for path in sorted((PROJECT_ROOT / "renkei" / "app" / "cli").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            decorators = [ast.unparse(d) for d in node.decorator_list]
            if not any(".command" in d for d in decorators) or "run_async" in decorators:
                continue
            if node.returns is not None and ast.unparse(node.returns) != "None":
                found.append(f"{path.name}:{node.lineno} {node.name}")
    assert found == []
