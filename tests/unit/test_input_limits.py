"""Start inputs are admitted only in their own type and only if the expressions can hold them;
patterns are matched in linear time or refused when the definition is validated."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from renkei.bpf.inputs import INT_MAX, INT_MIN, MAX_TEXT, InputError, validate_values
from renkei.bpf.loader import BpfFileError, parse_text
from renkei.bpf.models import InputSpec


def check(kind: str, value: object, **spec: object) -> object:
    return validate_values({"x": InputSpec(type=kind, **spec)}, {"x": value}, None)["x"]  # type: ignore[arg-type]


def refused(kind: str, value: object, **spec: object) -> str:
    with pytest.raises(InputError) as err:
        check(kind, value, **spec)
    return str(err.value)


def test_an_integer_beyond_signed_64_bits_is_refused_naming_the_range_not_the_value() -> None:
    assert check("integer", INT_MAX) == INT_MAX
    assert check("integer", INT_MIN) == INT_MIN
    for value in (INT_MAX + 1, INT_MIN - 1, 10**40, 1e20):
        message = refused("integer", value)
        assert "out of range for an integer" in message
        assert str(value) not in message


def test_text_is_not_silently_taken_for_a_number_or_a_boolean() -> None:
    assert "must be of type integer (given as text)" in refused("integer", "12")
    assert "must be of type number (given as text)" in refused("number", "1.5")
    assert "must be of type boolean (given as text)" in refused("boolean", "true")
    assert check("integer", 12) == 12
    assert check("integer", 12.0) == 12  # an integral JSON number
    assert check("number", 12) == 12.0
    assert check("boolean", True) is True


def test_a_number_must_be_a_finite_double() -> None:
    for value in (float("nan"), float("inf"), -float("inf"), 10**400):
        assert "finite" in refused("number", value)
    assert "must be of type integer" in refused("integer", float("nan"))


def test_strings_and_dates_are_bounded() -> None:
    assert check("string", "a" * MAX_TEXT) == "a" * MAX_TEXT
    assert f"longer than {MAX_TEXT} characters" in refused("string", "a" * (MAX_TEXT + 1))
    assert check("date", "2026-02-28") == "2026-02-28"
    assert "must be of type date" in refused("date", 20260228)
    assert "must be of type date" in refused("date", "20260228")
    assert "not a calendar date" in refused("date", "2026-02-30")
    assert "must be of type date" in refused("date", "10000-01-01")


def test_a_backtracking_pattern_is_matched_in_linear_time() -> None:
    # In a process of its own: Python's re would take hours here, and could not be stopped.
    code = textwrap.dedent(
        """
        from renkei.bpf.inputs import InputError, validate_values
        from renkei.bpf.models import InputSpec
        spec = {"x": InputSpec(type="string", pattern="^(a+)+$")}
        try:
            validate_values(spec, {"x": "a" * 5000 + "!"}, None)
        except InputError as err:
            print(err)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=20, check=True
    )
    assert "does not match the required pattern" in done.stdout


def test_a_pattern_re2_cannot_match_is_refused_when_the_definition_is_validated() -> None:
    text = textwrap.dedent(
        """\
        bpf: pattern-probe
        version: 1
        title: {ja: 試験, en: Probe}
        task: child-allowance
        owners: {definer: mhlw, executors: [city-minato]}
        triggers: [counter]
        inputs:
          ref: {type: string, pattern: '^(a)\\1$'}
        steps:
          - id: done
            set: {ok: "true"}
        """
    )
    with pytest.raises(BpfFileError) as err:
        parse_text(text, "probe.yaml")
    [issue] = err.value.issues
    assert issue.line == 8 and issue.path == "inputs.ref"
    assert "linear time" in issue.message and "back-references" in issue.message
