"""Checking a flow's start inputs against the definition's ``inputs`` declaration.

Error messages name the input and the rule it broke, never the value given (a value may be
personal data).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from typing import Any

from renkei.bpf.models import BpfDefinition, InputSpec
from whitelist.models import Catalog

SUBJECT_CODE = re.compile(r"^[A-Z2-7]{20}$")


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
        except (TypeError, ValueError):
            problems.append(f"{name}: must be of type {spec.type}")
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
        if spec.pattern is not None and not re.fullmatch(spec.pattern, v):
            problems.append(f"{name}: does not match the required pattern")
        if spec.enum is not None and v not in spec.enum:
            problems.append(f"{name}: not one of the allowed values")
    if problems:
        raise InputError(problems)
    return out


def _coerce(kind: str, value: Any) -> Any:
    if kind in ("string", "subject", "org"):
        if not isinstance(value, str):
            raise TypeError(kind)
        return value
    if kind == "integer":
        if isinstance(value, bool):
            raise TypeError(kind)
        if isinstance(value, str):
            return int(value)
        if isinstance(value, float) and not value.is_integer():
            raise ValueError(kind)
        return int(value)
    if kind == "number":
        if isinstance(value, bool):
            raise TypeError(kind)
        return float(value)
    if kind == "boolean":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise TypeError(kind)
    if kind == "date":
        return dt.date.fromisoformat(str(value)).isoformat()
    raise TypeError(kind)
