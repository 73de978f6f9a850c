"""The BPF description format, version 1, as pydantic models (see docs/bpf-format.md).

The top-level keys and step kinds are fixed by the format; every model forbids unknown keys so a
typo is an error, never a silently ignored line.
"""

from __future__ import annotations

import datetime as dt
import re
from difflib import get_close_matches
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    PlainSerializer,
    SerializerFunctionWrapHandler,
    Tag,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic_core import PydanticCustomError

from renkei.bpf.patterns import compiled

BPF_ID = r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$"
IDENT = r"^[A-Za-z_][A-Za-z0-9_]*$"
IDENT_LIMIT = 200  # a step, field or input name: it goes into linkage requests and records
RESERVED = frozenset({"inputs", "subject", "executor", "trigger", "now", "steps", "result"})
TRIGGER_KINDS = ("counter", "portal", "life-event", "notification")
INPUT_TYPES = ("string", "integer", "number", "boolean", "date", "subject", "org")

_DURATION = re.compile(r"^(\d+)(ms|s|m|h|d)$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def _parse_duration(value: Any) -> Any:
    if isinstance(value, str):
        m = _DURATION.match(value.strip())
        if not m:
            raise ValueError("a duration is a number and a unit: 500ms, 30s, 5m, 2h or 30d")
        return dt.timedelta(seconds=int(m.group(1)) * _UNITS[m.group(2)])
    if isinstance(value, int | float) and not isinstance(value, bool):
        return dt.timedelta(seconds=value)
    return value


def _format_duration(value: dt.timedelta) -> str:
    seconds = value.total_seconds()
    if seconds != int(seconds):
        return f"{int(seconds * 1000)}ms"
    return f"{int(seconds)}s"


Duration = Annotated[
    dt.timedelta,
    BeforeValidator(_parse_duration),
    PlainSerializer(_format_duration, return_type=str),
]
Ident = Annotated[str, Field(pattern=IDENT, max_length=IDENT_LIMIT)]


def _org_named(value: str) -> str:
    """An org named as it is (not by an expression) is a name a request carries: bounded."""
    if "${" not in value and len(value) > IDENT_LIMIT:
        raise ValueError(f"an org's id has at most {IDENT_LIMIT} characters")
    return value


OrgOrExpression = Annotated[str, AfterValidator(_org_named)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def did_you_mean(word: str, choices: Any) -> str:
    """`` (did you mean `x`?)`` for the choice closest to ``word``, or nothing."""
    close = get_close_matches(word, [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean `{close[0]}`?)" if close else ""


class Text(_Strict):
    """A text in Japanese and English. A plain string is taken for both (validation notes it)."""

    ja: str = Field(min_length=1)
    en: str = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _one_for_both(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"ja": value, "en": value}
        if not isinstance(value, dict | Text):
            raise PydanticCustomError(
                "text", "a text is `{ja: …, en: …}` (one string is taken for both languages)"
            )
        return value


class Owners(_Strict):
    definer: str
    co_definers: list[str] = Field(
        default_factory=list,
        alias="co-definers",
        description="orgs defining it with the definer (a procedure under several ministries):"
        " each must submit and retire it too",
    )
    executors: list[str] = Field(min_length=1)
    entrusted_by: dict[str, str] = Field(
        default_factory=dict,
        alias="entrusted-by",
        description="事務委託: executor → the body whose task it carries out on that body's"
        " behalf (recorded when it puts a version into operation)",
    )

    @model_serializer(mode="wrap")
    def _without_empty(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Left out when empty, so the content hash of a definition without them is unchanged.
        out: dict[str, Any] = handler(self)
        for key in ("co_definers", "co-definers", "entrusted_by", "entrusted-by"):
            if key in out and not out[key]:
                del out[key]
        return out


class LifeEventRule(_Strict):
    age: int | None = Field(default=None, ge=0, le=150)
    on: Literal["birthday", "fiscal-year-start", "school-year-start"] = "birthday"


class LifeEventTrigger(_Strict):
    life_event: LifeEventRule = Field(alias="life-event")


class NotificationRule(_Strict):
    event: Literal["death", "move", "birth"]
    source: str = Field(
        default="role:municipal-mayor",
        description="who publishes the change: an org id or role:<id>",
    )


class NotificationTrigger(_Strict):
    notification: NotificationRule


TRIGGER_RULES = ("life-event", "notification")


def _trigger_kind(value: Any) -> str | None:
    if isinstance(value, str):
        return "trigger-kind"
    if isinstance(value, LifeEventTrigger):
        return "life-event"
    if isinstance(value, NotificationTrigger):
        return "notification"
    if isinstance(value, dict):
        found = [k for k in TRIGGER_RULES if k in value]
        return found[0] if len(found) == 1 else None
    return None


_TRIGGER_SHAPES = (
    "a trigger is `counter`, `portal`, `{life-event: {age, on}}` or `{notification: {event,"
    " source}}`"
)


def _trigger_shape(value: Any) -> Any:
    """One error that names what is wrong with a trigger, before the union is tried."""
    if isinstance(value, str) and value not in TRIGGER_KINDS:
        raise PydanticCustomError(
            "trigger_kind",
            "unknown trigger `{given}`{hint}: {shapes}",
            {"given": value, "hint": did_you_mean(value, TRIGGER_KINDS), "shapes": _TRIGGER_SHAPES},
        )
    if isinstance(value, dict) and _trigger_kind(value) is None:
        keys = [str(k) for k in value]
        if len(keys) == 1:
            message = f"unknown trigger `{keys[0]}`{did_you_mean(keys[0], TRIGGER_RULES)}"
        else:
            message = f"a trigger has one key; this one has {', '.join(f'`{k}`' for k in keys)}"
        raise PydanticCustomError(
            "trigger_kind", "{message}: {shapes}", {"message": message, "shapes": _TRIGGER_SHAPES}
        )
    if not isinstance(value, str | dict | LifeEventTrigger | NotificationTrigger):
        raise PydanticCustomError("trigger_kind", _TRIGGER_SHAPES)
    return value


Trigger = Annotated[
    Annotated[
        Annotated[Literal["counter", "portal", "life-event", "notification"], Tag("trigger-kind")]
        | Annotated[LifeEventTrigger, Tag("life-event")]
        | Annotated[NotificationTrigger, Tag("notification")],
        Discriminator(_trigger_kind),
    ],
    BeforeValidator(_trigger_shape),
]


class InputSpec(_Strict):
    """A named input supplied at start."""

    type: Literal["string", "integer", "number", "boolean", "date", "subject", "org"]
    required: bool = True
    description: Text | None = None
    role: str | None = Field(default=None, description="org inputs: the role the org must hold")
    min: float | None = None
    max: float | None = None
    pattern: str | None = None
    enum: list[str | int] | None = None

    @model_validator(mode="after")
    def _constraints_fit_type(self) -> InputSpec:
        if self.role is not None and self.type != "org":
            raise ValueError("`role` applies only to inputs of type org")
        if (self.min is not None or self.max is not None) and self.type not in (
            "integer",
            "number",
        ):
            raise ValueError("`min`/`max` apply only to integer and number inputs")
        if self.pattern is not None:
            if self.type != "string":
                raise ValueError("`pattern` applies only to string inputs")
            compiled(self.pattern)  # RE2: matched in linear time, or refused here
        return self


class RetrySpec(_Strict):
    max_attempts: int = Field(default=5, ge=1, le=100)
    initial_interval: Duration = dt.timedelta(seconds=1)
    maximum_interval: Duration = dt.timedelta(minutes=1)
    backoff: float = Field(default=2.0, ge=1.0, le=10.0)


class QuerySpec(_Strict):
    info: str = Field(max_length=IDENT_LIMIT)
    sub_task: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9]+(-[a-z0-9]+)*$",
        description="the ordinance-level task (主務省令で定める事務) under the flow's task the"
        " query is asked for: only a whitelist row naming it, or one of the whole task, permits"
        " it; none: the task as a whole",
    )
    about: str | None = Field(default=None, description="default: the flow's subject")
    provider: OrgOrExpression
    timeout: Duration = dt.timedelta(seconds=60)
    retry: RetrySpec = RetrySpec()


class FailSpec(_Strict):
    reason: str


class _Step(_Strict):
    id: Ident

    @field_validator("id")
    @classmethod
    def _not_reserved(cls, v: str) -> str:
        if v in RESERVED:
            raise ValueError(f"{v!r} is a reserved name ({', '.join(sorted(RESERVED))})")
        return v


class QueryStep(_Step):
    kind: Literal["query"] = Field(default="query", exclude=True)
    query: QuerySpec


class SetStep(_Step):
    kind: Literal["set"] = Field(default="set", exclude=True)
    set: dict[Ident, str] = Field(min_length=1)


class FailStep(_Step):
    kind: Literal["fail"] = Field(default="fail", exclude=True)
    fail: FailSpec


class WaitSpec(_Strict):
    """Wait for a response (a Temporal update or signal) with a typed payload, until a deadline."""

    for_: str = Field(alias="for", pattern=r"^[a-z][a-z0-9_-]*$", description="what is awaited")
    fields: dict[Ident, InputSpec] = Field(default_factory=dict)
    timeout: Duration
    remind: Duration | None = Field(default=None, description="a reminder this long before")
    on_timeout: Literal["fail", "continue"] = Field(default="fail", alias="on-timeout")
    reason: str | None = Field(default=None, description="the rejection reason on timeout")
    show: list[str] = Field(default_factory=list, description="step outputs the respondent sees")
    by: Literal["citizen", "agency"] | None = Field(
        default=None,
        # Left out of the canonical form when absent: definitions without it keep their hash.
        exclude_if=lambda v: v is None,
        description="whose answer the step awaits: the citizen's own (from their portal session)"
        " or the executing agency's; absent: either",
    )

    @model_validator(mode="after")
    def _remind_before_deadline(self) -> WaitSpec:
        if self.remind is not None and self.remind >= self.timeout:
            raise ValueError("`remind` must be shorter than `timeout`")
        for name, spec in self.fields.items():
            if spec.type in ("subject", "org"):
                raise ValueError(f"field {name}: a response cannot carry a {spec.type}")
        return self


class WaitStep(_Step):
    kind: Literal["wait"] = Field(default="wait", exclude=True)
    wait: WaitSpec


class SleepSpec(_Strict):
    for_: Duration | None = Field(default=None, alias="for")
    until: str | None = Field(default=None, description="CEL expression giving a timestamp")

    @model_validator(mode="after")
    def _one_of(self) -> SleepSpec:
        if (self.for_ is None) == (self.until is None):
            raise ValueError("a sleep has exactly one of `for` and `until`")
        return self


class SleepStep(_Step):
    kind: Literal["sleep"] = Field(default="sleep", exclude=True)
    sleep: SleepSpec


class CallSpec(_Strict):
    bpf: str = Field(pattern=BPF_ID)
    version: int | None = Field(default=None, ge=1)
    inputs: dict[Ident, str] = Field(
        default_factory=dict, description="the child's inputs, as CEL expressions"
    )


class CallStep(_Step):
    kind: Literal["call"] = Field(default="call", exclude=True)
    call: CallSpec


class ActSpec(_Strict):
    """Ask a partner org to carry out an action of its own and wait for its signed receipt."""

    partner: OrgOrExpression = Field(description="the org that acts: an org id or ${expression}")
    action: str = Field(max_length=IDENT_LIMIT, description="the action's id in the catalog")
    send: dict[Ident, str] = Field(
        default_factory=dict,
        max_length=IDENT_LIMIT,
        description="what the partner receives, as CEL expressions: only the action's request"
        " fields",
    )
    consent: Ident | None = Field(
        default=None,
        exclude_if=lambda v: v is None,
        description="the id of an earlier wait step by: citizen whose answer is the citizen's"
        " consent to this act (a row of scope consent needs it)",
    )
    timeout: Duration = dt.timedelta(seconds=60)
    retry: RetrySpec = RetrySpec()


class ActStep(_Step):
    kind: Literal["act"] = Field(default="act", exclude=True)
    act: ActSpec


class ParallelStep(_Step):
    kind: Literal["parallel"] = Field(default="parallel", exclude=True)
    parallel: list[list[Step]] = Field(min_length=2)


class WhenArm(_Strict):
    when: str
    steps: list[Step] = Field(min_length=1)


class OtherwiseArm(_Strict):
    otherwise: list[Step] = Field(min_length=1)


def _arm_kind(value: Any) -> str | None:
    if isinstance(value, dict):
        return "otherwise" if "otherwise" in value else "when"
    if isinstance(value, OtherwiseArm):
        return "otherwise"
    return "when"


Arm = Annotated[
    Annotated[WhenArm, Tag("when")] | Annotated[OtherwiseArm, Tag("otherwise")],
    Discriminator(_arm_kind),
]


class BranchStep(_Step):
    kind: Literal["branch"] = Field(default="branch", exclude=True)
    branch: list[Arm] = Field(min_length=1)

    @field_validator("branch")
    @classmethod
    def _otherwise_last(cls, arms: list[WhenArm | OtherwiseArm]) -> list[WhenArm | OtherwiseArm]:
        for i, arm in enumerate(arms):
            if isinstance(arm, OtherwiseArm) and i != len(arms) - 1:
                raise ValueError("`otherwise` must be the last arm")
        return arms


STEP_KINDS = ("query", "parallel", "branch", "set", "fail", "wait", "sleep", "call", "act")


def _step_kind(value: Any) -> str | None:
    if isinstance(value, BaseModel):
        return getattr(value, "kind", None)
    if not isinstance(value, dict):
        return None
    found = [k for k in STEP_KINDS if k in value]
    if len(found) != 1:
        return None
    return found[0]


_STEP_SHAPE = "a step has an `id` and exactly one kind key: " + ", ".join(STEP_KINDS)


def _step_shape(value: Any) -> Any:
    """One error that names the key a step got wrong (``qeury:``: did you mean ``query``?)."""
    if not isinstance(value, dict) or _step_kind(value) is not None:
        return value
    kinds = [k for k in STEP_KINDS if k in value]
    others = [str(k) for k in value if k != "id" and k not in STEP_KINDS]
    if len(kinds) > 1:
        message = f"this step has {len(kinds)} kind keys ({', '.join(f'`{k}`' for k in kinds)})"
    elif len(others) == 1:
        message = f"unknown step kind `{others[0]}`{did_you_mean(others[0], STEP_KINDS)}"
    elif others:
        guesses = "".join(did_you_mean(k, STEP_KINDS) for k in others)
        message = f"no kind key among {', '.join(f'`{k}`' for k in others)}{guesses}"
    else:
        message = "this step has no kind key"
    raise PydanticCustomError(
        "step_kind", "{message}: {shape}", {"message": message, "shape": _STEP_SHAPE}
    )


Step = Annotated[
    Annotated[QueryStep, Tag("query")]
    | Annotated[ParallelStep, Tag("parallel")]
    | Annotated[BranchStep, Tag("branch")]
    | Annotated[SetStep, Tag("set")]
    | Annotated[FailStep, Tag("fail")]
    | Annotated[WaitStep, Tag("wait")]
    | Annotated[SleepStep, Tag("sleep")]
    | Annotated[CallStep, Tag("call")]
    | Annotated[ActStep, Tag("act")],
    Discriminator(_step_kind, custom_error_type="step_kind", custom_error_message=_STEP_SHAPE),
    BeforeValidator(_step_shape),
]

STEP_TAGS = frozenset(STEP_KINDS) | {"when", "otherwise"}
# The tags pydantic puts in an error's location after a list index (a step's kind, an arm's, a
# trigger's), which the loader drops so a location reads as the YAML does.
UNION_TAGS = STEP_TAGS | {"trigger-kind", *TRIGGER_RULES}


class BpfDefinition(_Strict):
    """One version of one BPF."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    bpf: str = Field(pattern=BPF_ID, max_length=80)
    version: int = Field(ge=1)
    title: Text
    description: Text | None = None
    task: str = Field(max_length=IDENT_LIMIT)
    owners: Owners
    triggers: list[Trigger] = Field(min_length=1)
    inputs: dict[Ident, InputSpec] = Field(default_factory=dict)
    steps: list[Step] = Field(min_length=1)
    result: dict[Ident, str] = Field(default_factory=dict)

    def trigger_kinds(self) -> list[str]:
        return [
            t
            if isinstance(t, str)
            else "life-event"
            if isinstance(t, LifeEventTrigger)
            else "notification"
            for t in self.triggers
        ]

    def life_events(self) -> list[LifeEventRule]:
        return [t.life_event for t in self.triggers if isinstance(t, LifeEventTrigger)]

    def notifications(self) -> list[NotificationRule]:
        return [t.notification for t in self.triggers if isinstance(t, NotificationTrigger)]


ParallelStep.model_rebuild()
WhenArm.model_rebuild()
OtherwiseArm.model_rebuild()
BranchStep.model_rebuild()
BpfDefinition.model_rebuild()

AnyStep = (
    QueryStep
    | ParallelStep
    | BranchStep
    | SetStep
    | FailStep
    | WaitStep
    | SleepStep
    | CallStep
    | ActStep
)


def walk(steps: list[AnyStep]) -> list[AnyStep]:
    """Every step, depth first, in document order."""
    out: list[AnyStep] = []
    for s in steps:
        out.append(s)
        if isinstance(s, ParallelStep):
            for lane in s.parallel:
                out.extend(walk(lane))
        elif isinstance(s, BranchStep):
            for arm in s.branch:
                out.extend(walk(arm.steps if isinstance(arm, WhenArm) else arm.otherwise))
    return out
