"""CEL types of a BPF: the protobuf messages its expressions are checked against.

Every info item's payload schema (a pydantic model) becomes a protobuf message
(:func:`add_model`), so CEL checks ``own_income.taxable_income`` against the ``local-tax``
schema before anything runs; a ``set`` step's outputs become fields typed by what their
expressions return (:func:`cel_type_to_field`); inputs and ``wait`` fields map by their
declared type (:data:`INPUT_FIELD`). Also the vocabulary every CEL module shares: :data:`Key`,
:class:`ExpressionError` and :func:`embedded`.

Domain code: imports no ``temporalio``.
"""

from __future__ import annotations

import datetime as dt
import re
import types
import typing
from typing import Any

from cel_expr_python import cel
from google.protobuf import descriptor_pb2
from pydantic import BaseModel

FDP = descriptor_pb2.FieldDescriptorProto
INFO_PACKAGE = "renkei.info"

Key = tuple[str | int, ...]
"""Where an expression is in its definition: a step id and the field path under it."""

# An input's or a ``wait`` field's declared type, as a protobuf field type.
INPUT_FIELD = {
    "string": FDP.TYPE_STRING,
    "date": FDP.TYPE_STRING,
    "subject": FDP.TYPE_STRING,
    "org": FDP.TYPE_STRING,
    "integer": FDP.TYPE_INT64,
    "number": FDP.TYPE_DOUBLE,
    "boolean": FDP.TYPE_BOOL,
}

_EMBEDDED = re.compile(r"^\s*\$\{(.*)\}\s*$", re.DOTALL)


class ExpressionError(Exception):
    """An expression that does not compile or does not evaluate. Carries no personal data.

    Attributes:
        key: Where the expression is in its definition.
        message: What is wrong, without any value it was evaluated on.
    """

    def __init__(self, key: tuple[str | int, ...], message: str) -> None:
        self.key = key
        self.message = message
        super().__init__(f"{'/'.join(map(str, key))}: {message}")


class DeterministicFailure(Exception):
    """A failure that every retry of the same history would meet again, so the run fails with
    it instead of retrying its workflow task for ever (the interpreter lists this type in its
    ``failure_exception_types``). The message carries no personal data: it names a place and a
    rule, never a value."""


class ValueDoesNotFit(DeterministicFailure):
    """A value (a provider's answer, an input of a run admitted before the checks) that the
    field's declared type cannot hold, such as an integer past 64 bits."""


def embedded(text: str | None) -> str | None:
    """The expression inside ``${ … }``, or ``None`` if ``text`` is a literal.

    Args:
        text: A field that may hold a literal or an embedded expression.

    Returns:
        The expression's source, stripped; ``None`` for a literal or no text.
    """
    if text is None:
        return None
    m = _EMBEDDED.match(text)
    return m.group(1).strip() if m else None


# -- protobuf types from pydantic schemas ------------------------------------------------------


def _scalar(tp: Any) -> int | None:
    if tp is bool:
        return FDP.TYPE_BOOL
    if tp is int:
        return FDP.TYPE_INT64
    if tp is float:
        return FDP.TYPE_DOUBLE
    if tp in (str, dt.date, dt.datetime):
        return FDP.TYPE_STRING
    return None


def _unwrap(tp: Any) -> Any:
    while typing.get_origin(tp) is typing.Annotated:
        tp = typing.get_args(tp)[0]
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return _unwrap(args[0])
    return tp


def add_model(
    fdp: descriptor_pb2.FileDescriptorProto, model: type[BaseModel], done: set[str]
) -> str:
    """Declare ``model`` (and the models its fields hold) as messages of ``fdp``.

    Args:
        fdp: The file the messages are added to; its package prefixes their names.
        model: A payload schema.
        done: Names of the models already declared in ``fdp``; updated.

    Returns:
        The message's full name.

    Raises:
        TypeError: A field's type has no CEL mapping.
    """
    name = model.__name__
    full = f"{fdp.package}.{name}"
    if name in done:
        return full
    done.add(name)
    msg = fdp.message_type.add(name=name)
    for number, (fname, finfo) in enumerate(model.model_fields.items(), start=1):
        tp = _unwrap(finfo.annotation)
        origin = typing.get_origin(tp)
        fld = msg.field.add(name=fname, number=number, label=FDP.LABEL_OPTIONAL)
        if origin is list:
            fld.label = FDP.LABEL_REPEATED
            tp = _unwrap(typing.get_args(tp)[0])
        if origin is dict:
            entry = msg.nested_type.add(name=f"{fname.title().replace('_', '')}Entry")
            entry.options.map_entry = True
            entry.field.add(name="key", number=1, type=FDP.TYPE_STRING, label=FDP.LABEL_OPTIONAL)
            entry.field.add(name="value", number=2, type=FDP.TYPE_STRING, label=FDP.LABEL_OPTIONAL)
            fld.label = FDP.LABEL_REPEATED
            fld.type = FDP.TYPE_MESSAGE
            fld.type_name = f".{full}.{entry.name}"
            continue
        scalar = _scalar(tp)
        if scalar is not None:
            fld.type = scalar  # type: ignore[assignment]
        elif isinstance(tp, type) and issubclass(tp, BaseModel):
            fld.type = FDP.TYPE_MESSAGE
            fld.type_name = "." + add_model(fdp, tp, done)
        else:
            raise TypeError(f"{name}.{fname}: no CEL mapping for {tp!r}")
    return full


def cel_type_to_field(t: cel.Type, fld: descriptor_pb2.FieldDescriptorProto) -> None:
    """Type ``fld`` to hold a value of CEL type ``t``.

    Args:
        t: What an expression returns.
        fld: The field that will hold it; its type (and type name) are set.
    """
    name = t.name()
    if t.is_message():
        fld.type = FDP.TYPE_MESSAGE
        fld.type_name = "." + name
        return
    scalar = {
        "BOOL": FDP.TYPE_BOOL,
        "INT": FDP.TYPE_INT64,
        "UINT": FDP.TYPE_UINT64,
        "DOUBLE": FDP.TYPE_DOUBLE,
        "STRING": FDP.TYPE_STRING,
        "BYTES": FDP.TYPE_BYTES,
    }.get(name)
    if scalar is not None:
        fld.type = scalar
    elif name == "TIMESTAMP":
        fld.type = FDP.TYPE_MESSAGE
        fld.type_name = ".google.protobuf.Timestamp"
    else:  # lists, maps, dyn, null: carried as a JSON value
        fld.type = FDP.TYPE_MESSAGE
        fld.type_name = ".google.protobuf.Value"
