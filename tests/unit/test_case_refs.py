"""A caller's case reference goes into the workflow id, in clear: nothing like a person's id."""

from __future__ import annotations

import uuid

import pytest

from renkei.contracts.messages import check_case_ref, personal_in_case_ref
from renkei.kernel.pseudonyms import derive_code, synthetic_number


def test_an_individual_number_or_a_subject_code_is_refused_in_a_case_reference() -> None:
    number = synthetic_number(uuid.uuid4())
    written = f"{number[:4]}-{number[4:8]}-{number[8:]}"  # as it is usually written
    for ref in (
        number,
        f"case-{number}",
        f"{number[:4]}{number[4:]}x",
        written,
        f"case-{written}",
        written.replace("-", "."),
        written.replace("-", "_"),
    ):
        assert personal_in_case_ref(ref) == "an individual number (個人番号)", ref
    code = derive_code("k", "city-minato", uuid.uuid4())
    assert personal_in_case_ref(code) == "a subject code"
    assert personal_in_case_ref(f"ref-{code}") == "a subject code"
    with pytest.raises(ValueError, match="must name no one"):
        check_case_ref(number)


def test_case_numbers_as_agencies_write_them_pass() -> None:
    wrong_digit = synthetic_number(uuid.uuid4())
    wrong_digit = wrong_digit[:11] + str((int(wrong_digit[11]) + 1) % 10)
    for ref in (
        "2026-000123",
        "CASE-2026-0001",
        f"case-{uuid.uuid4().hex[:10]}",
        "123456789012345",  # fifteen digits: no individual number
        wrong_digit,  # twelve digits, but not a number's check digit
        "le20270401-3f9a0c2b7d1e5a6b4c8d",
        f"{wrong_digit[:4]}-{wrong_digit[4:8]}-{wrong_digit[8:]}",  # written, wrong check digit
        "2026-0001-0002-0003",  # four groups: no number's written form
    ):
        assert personal_in_case_ref(ref) is None, ref
        assert check_case_ref(ref) == ref
