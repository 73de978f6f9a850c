"""Scenario sets: what the kit runs a BPF version through, and how they are loaded.

A scenario set (``definitions/conformance/<bpf>.yaml``, or ``--scenarios DIR``) gives, for each
scenario of a BPF, the executor, symbolic subjects, inputs, each provider's behaviour (an answer,
no match, a failure, a delay), the respondent's answers to the flow's waits, and the expected
outcome and linkages.

Symbolic subjects: ``"@name"`` in inputs stands for that subject's code at the executor; in a stub
answer, for its code at the answering provider.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from renkei.bpf.models import Duration
from renkei.kernel.settings import PACKAGE_DIR
from renkei.kernel.yaml_limits import read_file

SCENARIOS_DIR = PACKAGE_DIR / "definitions" / "conformance"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Behaviour(_Strict):
    """What a stub provider does for one info item."""

    respond: dict[str, Any] | None = None
    no_match: bool = Field(default=False, alias="no-match")
    fail: Literal["always"] | int | None = Field(
        default=None, description="'always', or fail this many times and then respond"
    )
    delay: Duration | None = None


class ExpectedLinkage(_Strict):
    step: str
    provider: str
    info: str
    outcome: Literal["provided", "denied", "failed", "cancelled"]


class Expectation(_Strict):
    outcome: Literal["completed", "rejected", "denied", "failed"]
    result: dict[str, Any] = Field(default_factory=dict, description="these keys, these values")
    reason_contains: str | None = Field(default=None, alias="reason-contains")
    linkages: list[ExpectedLinkage] = Field(default_factory=list)


class ScriptedResponse(_Strict):
    """What the respondent answers when the flow waits at ``step`` (none: the wait times out)."""

    step: str
    payload: dict[str, Any] = Field(default_factory=dict)
    refused: str | None = Field(
        default=None, description="expect the flow to refuse this payload, saying this"
    )
    by: Literal["agency", "citizen"] = Field(
        default="agency",
        description="who answers: the executing agency, or the citizen in their own portal"
        " session (a wait `by: citizen`, e.g. their consent to a partner's act)",
    )


class Scenario(_Strict):
    name: str
    executor: str
    subjects: list[str] = Field(default_factory=lambda: ["applicant"], min_length=1)
    inputs: dict[str, Any] = Field(default_factory=dict)
    providers: dict[str, dict[str, Behaviour]] = Field(default_factory=dict)
    responses: list[ScriptedResponse] = Field(default_factory=list)
    expect: Expectation


class ScenarioSet(_Strict):
    bpf: str
    scenarios: list[Scenario] = Field(min_length=1)


def load_scenarios(path: Path) -> ScenarioSet:
    try:
        return ScenarioSet.model_validate(read_file(path))
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors()
        )
        raise ValueError(f"{path}: {problems}") from None


def scenarios_for(bpf: str, directory: Path | None = None) -> ScenarioSet:
    path = (directory or SCENARIOS_DIR) / f"{bpf}.yaml"
    if not path.exists():
        raise FileNotFoundError(f"no scenario set for {bpf} at {path}")
    found = load_scenarios(path)
    if found.bpf != bpf:
        raise ValueError(f"{path} is the scenario set of {found.bpf}, not {bpf}")
    return found
