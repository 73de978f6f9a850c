"""Payload schemas of the info items (the contract between requester and provider).

A provider returns exactly one of these per linkage; the interpreter exposes it to expressions as
a typed CEL message, so a BPF that reads a field the schema does not have is rejected when it is
validated. Fields typed :data:`SubjectCode` hold a subject's agency-specific code: the hub
translates them from the provider's codes into the requester's before the requester sees them.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field


class SubjectRef:
    """Marker: the annotated field is a subject's agency-specific code."""


SubjectCode = Annotated[str, SubjectRef()]


class _Payload(BaseModel):
    model_config = ConfigDict(extra="forbid")


class HouseholdMember(_Payload):
    code: SubjectCode
    relationship: str = Field(description="続柄: relationship to the head of household")


class ResidentRecord(_Payload):
    """住民票関係情報: the items of 住民基本台帳法 第7条第4号 — household and relationships."""

    household_id: str
    relationship: str = Field(description="the subject's relationship to the head of household")
    moved_in: dt.date
    members: list[HouseholdMember] = Field(description="everyone in the subject's household")


class LocalTax(_Payload):
    """地方税関係情報: tax amounts and the basis of their calculation, for one fiscal year."""

    fiscal_year: int
    taxable_income: int
    municipal_tax: int
    dependents: int


class MedicalPayment(_Payload):
    month: str = Field(pattern=r"^\d{4}-\d{2}$")
    amount: int
    kind: str


class MedicalBenefit(_Payload):
    """医療に関する給付の支給に関する情報: medical benefit payments made to the subject."""

    insured: bool
    payments: list[MedicalPayment]
    total: int


class PensionBenefit(_Payload):
    """年金給付関係情報: public pension benefits paid to the subject."""

    receives_pension: bool
    kind: str
    annual_amount: int


class GenericRecord(_Payload):
    """Named attributes as text: the payload of info items whose schema is not written yet."""

    attributes: dict[str, str] = Field(default_factory=dict)


class ResidentCohort(_Payload):
    """Residents of the register who reach a life event in a period: their codes only."""

    age: int
    on: str = Field(description="birthday, school-year-start or fiscal-year-start")
    period_start: dt.date
    period_end: dt.date = Field(description="exclusive")
    codes: list[SubjectCode]


class MoveNotice(_Payload):
    """What a move notice to an electricity retailer carries (an act step's request): the
    customer's number with the company, the day of the move and the new address; nothing else."""

    customer_number: str = Field(min_length=1, description="the customer's number with the company")
    moved_on: dt.date
    new_address: str = Field(min_length=1)


class ActionReceipt(_Payload):
    """A partner's signed receipt for an act: whether it carried the action out, and its own
    reference for it."""

    done: bool
    reference: str = Field(description="the partner's own reference for what it did")


SCHEMAS: dict[str, type[BaseModel]] = {
    m.__name__: m
    for m in (
        ResidentRecord,
        LocalTax,
        MedicalBenefit,
        PensionBenefit,
        ResidentCohort,
        GenericRecord,
        MoveNotice,
        ActionReceipt,
    )
}


def subject_fields(model: type[BaseModel]) -> list[tuple[str, ...]]:
    """Paths of every :data:`SubjectCode` field in ``model`` (``*`` marks a list element)."""
    paths: list[tuple[str, ...]] = []
    for name, field in model.model_fields.items():
        if any(isinstance(m, SubjectRef) for m in field.metadata):
            paths.append((name,))
            continue
        ann = field.annotation
        inner = getattr(ann, "__args__", (None,))[0] if getattr(ann, "__origin__", None) else None
        target = inner if inner is not None else ann
        if isinstance(target, type) and issubclass(target, BaseModel):
            prefix = (name, "*") if inner is not None else (name,)
            paths.extend(prefix + sub for sub in subject_fields(target))
    return paths


# The type an act step's ``send`` expression must give each field of a request (BPF input types).
_FIELD_KINDS: dict[object, str] = {
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
    dt.date: "date",
}


def field_kinds(model: type[BaseModel]) -> dict[str, tuple[str, bool]]:
    """``{field: (kind, required)}`` of a flat request model (an action's request)."""
    out: dict[str, tuple[str, bool]] = {}
    for name, field in model.model_fields.items():
        out[name] = (_FIELD_KINDS.get(field.annotation, "string"), field.is_required())
    return out
