"""A compiled BPF: its message types and type-checked expressions, ready to evaluate.

:class:`CompiledBpf` is what :mod:`.compiler` yields and what the interpreter evaluates at run
time: it builds the messages the expressions see (the inputs, each step's output) and evaluates
one expression on the names bound at its position, returning JSON-shaped Python
(:func:`to_json`). An evaluation error names the expression's position and never a value.

Domain code: imports no ``temporalio``.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cel_expr_python import cel
from google.protobuf import descriptor_pool, json_format, struct_pb2, timestamp_pb2
from google.protobuf.message import Message

from renkei.bpf.cel.types import ExpressionError, Key, ValueDoesNotFit

_PARSE_FIELD = re.compile(r"Failed to parse (\w+) field")


@dataclass
class CompiledBpf:
    """Every expression of one definition, compiled, with the message types it needs.

    Attributes:
        pool: The protobuf descriptors of the definition's message types.
        classes: The message class of each type a step output or the inputs are built as.
        exprs: The compiled expressions by where they are in the definition.
        sources: The source of each compiled expression.
        step_types: The message type of each step's output, by step id.
        inputs_type: The message type of the inputs.
        errors: The expressions that did not compile or type-check (not in ``exprs``).
    """

    pool: descriptor_pool.DescriptorPool
    classes: dict[str, type[Message]] = field(default_factory=dict)
    exprs: dict[Key, cel.Expression] = field(default_factory=dict)
    sources: dict[Key, str] = field(default_factory=dict)
    step_types: dict[str, str] = field(default_factory=dict)
    inputs_type: str = ""
    errors: list[ExpressionError] = field(default_factory=list)

    def message(self, full_name: str, data: Mapping[str, Any]) -> Message:
        """A message of ``full_name`` built from JSON-shaped ``data``.

        Args:
            full_name: One of the definition's message types (see ``classes``).
            data: The fields, as JSON-shaped Python.

        Returns:
            The message, to bind to a name the expressions see.

        Raises:
            ValueDoesNotFit: ``data`` has a field the type lacks or a value the field's type
                cannot hold; the message names the field, never the value.
        """
        try:
            return json_format.ParseDict(
                dict(data), self.classes[full_name](), ignore_unknown_fields=False
            )
        except (json_format.ParseError, TypeError, ValueError) as err:
            # protobuf's message quotes the value ("Value out of range: 9223372036854775808"):
            # only the field's name is kept.
            field = _PARSE_FIELD.search(str(err))
            where = f"{full_name.rsplit('.', 1)[-1]}.{field.group(1)}" if field else full_name
            raise ValueDoesNotFit(
                f"{where}: a value does not fit its declared type (e.g. an integer past 64 bits)"
            ) from None

    def evaluate(self, key: Key, bindings: Mapping[str, Any]) -> Any:
        """Evaluate one expression; the result as plain JSON-shaped Python.

        Args:
            key: Where the expression is in the definition.
            bindings: The names in scope at that position and their values.

        Returns:
            What the expression returned, as :func:`to_json` gives it.

        Raises:
            ExpressionError: No expression was compiled at ``key``, or it failed to evaluate.
        """
        expr = self.exprs.get(key)
        if expr is None:
            raise ExpressionError(key, "no compiled expression")
        try:
            value = expr.eval(data=dict(bindings))
        except Exception as err:  # the CEL runtime raises plain RuntimeErrors
            raise ExpressionError(key, _clean(str(err))) from None
        if value.type().name() == "ERROR":
            raise ExpressionError(key, _clean(str(value.value())))
        return to_json(value.plain_value())


def _clean(message: str) -> str:
    # CEL runtime errors quote the expression, never the values; keep only the first line.
    return message.strip().splitlines()[0] if message.strip() else "evaluation failed"


def to_json(value: Any) -> Any:
    """CEL/protobuf values as JSON-shaped Python (ints stay ints).

    Args:
        value: What an expression returned (a message, a container or a scalar).

    Returns:
        Dicts, lists and scalars; timestamps as ISO 8601 text, durations as ``"<seconds>s"``.
    """
    if isinstance(value, Message):
        if isinstance(value, timestamp_pb2.Timestamp):
            return value.ToDatetime(tzinfo=dt.UTC).isoformat()
        if isinstance(value, struct_pb2.Value):
            return json_format.MessageToDict(value)
        out: dict[str, Any] = {}
        for fd, v in value.ListFields():
            if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
                out[fd.name] = {k: to_json(x) for k, x in v.items()}
            elif fd.label == fd.LABEL_REPEATED:  # type: ignore[attr-defined]
                out[fd.name] = [to_json(x) for x in v]
            else:
                out[fd.name] = to_json(v)
        return out
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return f"{value.total_seconds():g}s"
    return value
