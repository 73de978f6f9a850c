"""Subject-code slots of a payload schema: the fields the hub translates into the requester's codes."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from whitelist.payloads import (
    SCHEMAS,
    GenericRecord,
    LocalTax,
    MedicalBenefit,
    PensionBenefit,
    ResidentCohort,
    ResidentRecord,
    SubjectCode,
    subject_fields,
)


class Holder(BaseModel):
    code: SubjectCode
    name: str


class Account(BaseModel):
    holder: Holder
    number: str


class Named(BaseModel):
    code: str  # a code by name only, not a subject's


def test_a_subject_code_field_is_a_slot() -> None:
    assert subject_fields(Holder) == [("code",)]


def test_a_field_is_a_slot_by_its_type_not_its_name() -> None:
    assert subject_fields(Named) == []


def test_a_nested_models_slot_is_under_the_field_holding_it() -> None:
    assert subject_fields(Account) == [("holder", "code")]


def test_a_list_of_models_marks_each_element_with_a_star() -> None:
    assert subject_fields(ResidentRecord) == [("members", "*", "code")]


@pytest.mark.parametrize("schema", [LocalTax, MedicalBenefit, PensionBenefit, GenericRecord])
def test_a_schema_without_subject_codes_has_no_slots(schema: type[BaseModel]) -> None:
    assert subject_fields(schema) == []


@pytest.mark.xfail(
    strict=True,
    reason="subject_fields does not look inside list[SubjectCode] (the marker is on the element"
    " type, not the field), though the interpreter's slot walker handles a path ending in '*'",
)
def test_a_list_of_subject_codes_marks_each_code_with_a_star() -> None:
    assert subject_fields(ResidentCohort) == [("codes", "*")]


def test_the_schemas_are_named_by_their_class() -> None:
    assert all(name == model.__name__ for name, model in SCHEMAS.items())
    assert {ResidentRecord, ResidentCohort, LocalTax, GenericRecord} <= set(SCHEMAS.values())
