"""The settings are documented from the model: the README's table and ``renkei up --help``."""

from __future__ import annotations

from typer.testing import CliRunner

from renkei.app.cli import app
from renkei.kernel.settings import Settings, markdown_table, variables, with_table
from tests.paths import PROJECT_ROOT

README = PROJECT_ROOT / "README.md"


def test_every_setting_says_what_it_is_for() -> None:
    assert [n for n, f in Settings.model_fields.items() if not f.description] == []


def test_the_readme_table_is_the_models() -> None:
    text = README.read_text(encoding="utf-8")
    assert with_table(text) == text, (
        "README.md's settings table differs from the Settings model:"
        " run `python -m renkei.kernel.settings README.md`"
    )
    names = [v.name for v in variables()]
    assert len(names) == len(Settings.model_fields)
    assert all(f"| `{name}` |" in text for name in names)
    assert markdown_table() in text


def test_defaults_name_no_path_of_the_machine_they_were_generated_on() -> None:
    assert not [v for v in variables() if v.default.startswith("/")]
    assert {v.name: v.default for v in variables()}["RENKEI_DEFINITIONS_DIR"] == (
        "renkei/definitions"
    )


def test_up_help_lists_every_variable() -> None:
    result = CliRunner().invoke(app, ["up", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    missing = [v.name for v in variables() if v.name not in result.output]
    assert missing == []
    assert "--verbose" in result.output


def test_an_acts_least_time_is_no_more_than_its_most() -> None:
    import pytest
    from pydantic import ValidationError

    assert Settings(act_seconds_min=5, act_seconds_max=5).act_seconds_max == 5
    with pytest.raises(ValidationError, match="act_seconds_max is less than act_seconds_min"):
        Settings(act_seconds_min=10, act_seconds_max=5)
    with pytest.raises(ValidationError):
        Settings(act_seconds_min=0)
