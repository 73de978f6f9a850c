"""CEL extension functions: member functions on info items' payload types.

Each is declared to the CEL environment with its types, so ``household.lives_with(inputs.spouse)``
is type-checked against the ``resident-record`` schema before anything runs, and carries its
Python implementation, which the CEL runtime calls at evaluation.

Domain code: imports no ``temporalio``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cel_expr_python import cel
from google.protobuf.message import Message

from renkei.bpf.cel.types import INFO_PACKAGE


def _lives_with(record: Message, code: str) -> bool:
    return any(m.code == code for m in record.members)  # type: ignore[attr-defined]


def _member_of_household(record: Message, code: str, relationship: str) -> bool:
    return any(
        m.code == code and m.relationship == relationship
        for m in record.members  # type: ignore[attr-defined]
    )


@dataclass(frozen=True)
class MemberFunction:
    """A CEL member function on an info item's payload type.

    Attributes:
        name: The function's name in CEL.
        schema: The payload schema it is a member of (a message of the info package).
        params: The CEL types of its arguments after the receiver.
        result: The CEL type it returns.
        impl: Its implementation: the receiver message, then the arguments.
        doc: What it means, in one line with its call form.
    """

    name: str
    schema: str
    params: tuple[cel.Type, ...]
    result: cel.Type
    impl: Callable[..., Any]
    doc: str


EXTENSIONS = (
    MemberFunction(
        "lives_with",
        "ResidentRecord",
        (cel.Type.STRING,),
        cel.Type.BOOL,
        _lives_with,
        "record.lives_with(code): the subject with this code is in the record's household",
    ),
    MemberFunction(
        "has_member",
        "ResidentRecord",
        (cel.Type.STRING, cel.Type.STRING),
        cel.Type.BOOL,
        _member_of_household,
        "record.has_member(code, relationship): that subject is in the household in that role",
    ),
)


def function_decls() -> list[cel.FunctionDecl]:
    """The CEL declarations of :data:`EXTENSIONS`, with their implementations.

    Returns:
        One declaration per function, a member overload on its schema's message.
    """
    return [
        cel.FunctionDecl(
            f.name,
            [
                cel.Overload(
                    f"{f.schema}_{f.name}",
                    f.result,
                    [cel.Type(f"{INFO_PACKAGE}.{f.schema}"), *f.params],
                    is_member=True,
                    impl=f.impl,
                )
            ],
        )
        for f in EXTENSIONS
    ]
