"""Checking a flow's start inputs against the definition's ``inputs`` declaration.

Error messages name the input and the rule it broke, never the value given (a value may be
personal data).

Types are strict: a value is taken only in its own JSON type (``"12"`` is not an integer,
``"true"`` not a boolean), and only if the expressions' type can hold it, so nothing admitted
fails later inside a run: an ``integer`` is a CEL ``int`` (signed 64 bits), a ``number`` a CEL
``double`` (finite), a string at most :data:`MAX_TEXT` characters, a ``date`` an ISO date
(``YYYY-MM-DD``) between years 1 and 9999. ``pattern`` is matched by RE2, in linear time
(:mod:`renkei.bpf.patterns`).
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Mapping
from typing import Any

from renkei.bpf.models import BpfDefinition, InputSpec
from renkei.bpf.patterns import full_match
from whitelist.models import Catalog

SUBJECT_CODE = re.compile(r"^[A-Z2-7]{20}$")

# What a CEL ``int`` holds (an ``integer`` input).
INT_MIN, INT_MAX = -(2**63), 2**63 - 1
# The longest string input (or ``wait`` field), in characters.
MAX_TEXT = 10_000
ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class _OutOfRange(ValueError):
    """A value of the right type that the expressions' type cannot hold; says the range."""


class InputError(ValueError):
    """Start inputs that do not fit the definition; ``problems`` lists each one."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


def check_subject_code(code: str) -> None:
    if not isinstance(code, str) or not SUBJECT_CODE.match(code):
        raise InputError(["subject: not an agency-specific code (20 characters A-Z, 2-7)"])


def validate_inputs(
    definition: BpfDefinition, inputs: dict[str, Any], catalog: Catalog
) -> dict[str, Any]:
    """The inputs, normalised to JSON types; raises :class:`InputError`."""
    return validate_values(definition.inputs, inputs, catalog, f"an input of {definition.bpf}")


def validate_values(
    specs: Mapping[str, InputSpec],
    inputs: Mapping[str, Any],
    catalog: Catalog | None,
    what: str = "expected",
) -> dict[str, Any]:
    """``inputs`` checked against ``specs`` (start inputs, or a wait step's response)."""
    problems: list[str] = []
    out: dict[str, Any] = {}
    for name in inputs:
        if name not in specs:
            problems.append(f"{name}: not {what}")
    for name, spec in specs.items():
        if name not in inputs or inputs[name] is None:
            if spec.required:
                problems.append(f"{name}: required")
            continue
        value = inputs[name]
        try:
            out[name] = _coerce(spec.type, value)
        except _OutOfRange as err:
            problems.append(f"{name}: {err}")
            continue
        except (TypeError, ValueError):
            numeric = spec.type in ("integer", "number", "boolean")
            given = " (given as text)" if numeric and isinstance(value, str) else ""
            problems.append(f"{name}: must be of type {spec.type}{given}")
            continue
        v = out[name]
        if spec.type == "subject" and not SUBJECT_CODE.match(v):
            problems.append(f"{name}: not an agency-specific code (20 characters A-Z, 2-7)")
        if spec.type == "org" and catalog is not None:
            if v not in catalog.orgs:
                problems.append(f"{name}: unknown org")
            elif spec.role is not None and spec.role not in catalog.orgs[v].roles:
                problems.append(f"{name}: the org does not hold role {spec.role}")
        if spec.min is not None and v < spec.min:
            problems.append(f"{name}: below the minimum {spec.min:g}")
        if spec.max is not None and v > spec.max:
            problems.append(f"{name}: above the maximum {spec.max:g}")
        if spec.pattern is not None and not full_match(spec.pattern, v):
            problems.append(f"{name}: does not match the required pattern")
        if spec.enum is not None and v not in spec.enum:
            problems.append(f"{name}: not one of the allowed values")
    if problems:
        raise InputError(problems)
    return out


def _coerce(kind: str, value: Any) -> Any:
    """``value`` as input type ``kind``: its own JSON type only, within what CEL holds."""
    if kind in ("string", "subject", "org"):
        if not isinstance(value, str):
            raise TypeError(kind)
        if len(value) > MAX_TEXT:
            raise _OutOfRange(f"longer than {MAX_TEXT} characters")
        return value
    if kind == "integer":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(kind)
        if isinstance(value, float):
            if not value.is_integer():  # also NaN and the infinities
                raise ValueError(kind)
            value = int(value)
        if not INT_MIN <= value <= INT_MAX:
            raise _OutOfRange("out of range for an integer (signed 64 bits: -2**63 to 2**63-1)")
        return value
    if kind == "number":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(kind)
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if not math.isfinite(number):
            raise _OutOfRange("out of range for a number (a finite double)")
        return number
    if kind == "boolean":
        if isinstance(value, bool):
            return value
        raise TypeError(kind)
    if kind == "date":
        if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
            return value.isoformat()  # a date read from YAML
        if not isinstance(value, str):
            raise TypeError(kind)
        if not ISO_DATE.match(value):
            raise ValueError(kind)
        try:
            return dt.date.fromisoformat(value).isoformat()
        except ValueError:
            raise _OutOfRange("not a calendar date (YYYY-MM-DD)") from None
    raise TypeError(kind)
