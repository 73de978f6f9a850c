"""CEL expressions of a BPF: typed compilation at validation time, evaluation in the workflow.

Expressions are compiled by ``cel-expr-python`` (the CEL C++ runtime) against declared types:
every info item's payload schema becomes a protobuf message, so ``own_income.taxable_income`` is
checked against the ``local-tax`` schema and ``household.lives_with(inputs.spouse)`` against the
``resident-record`` extension function, before anything runs. Each expression sees only the names
in scope at its position: ``inputs``, ``subject``, ``trigger``, ``now``, ``steps`` (a map of every
output so far, for ``has(steps.x)``) and the ids of earlier steps.

This module is imported by the interpreter workflow and passed through the sandbox; compiled
programs are cached by content hash, so a worker compiles each definition once.
"""

from __future__ import annotations

import datetime as dt
import re
import threading
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cel_expr_python import cel
from google.protobuf import (
    descriptor_pb2,
    descriptor_pool,
    json_format,
    message_factory,
    struct_pb2,
    timestamp_pb2,
)
from google.protobuf.message import Message
from pydantic import BaseModel

from renkei.bpf.models import (
    AnyStep,
    BpfDefinition,
    BranchStep,
    CallStep,
    FailStep,
    ParallelStep,
    QueryStep,
    SetStep,
    SleepStep,
    WaitStep,
    WhenArm,
)
from whitelist.payloads import SCHEMAS, GenericRecord

_EMBEDDED = re.compile(r"^\s*\$\{(.*)\}\s*$", re.DOTALL)
FDP = descriptor_pb2.FieldDescriptorProto
INFO_PACKAGE = "renkei.info"


class ExpressionError(Exception):
    """An expression that does not compile or does not evaluate. Carries no personal data."""

    def __init__(self, key: tuple[str | int, ...], message: str) -> None:
        self.key = key
        self.message = message
        super().__init__(f"{'/'.join(map(str, key))}: {message}")


def embedded(text: str | None) -> str | None:
    """The expression inside ``${ … }``, or ``None`` if ``text`` is a literal."""
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


def _add_model(
    fdp: descriptor_pb2.FileDescriptorProto, model: type[BaseModel], done: set[str]
) -> str:
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
            fld.type_name = "." + _add_model(fdp, tp, done)
        else:
            raise TypeError(f"{name}.{fname}: no CEL mapping for {tp!r}")
    return full


def _cel_type_to_field(t: cel.Type, fld: descriptor_pb2.FieldDescriptorProto) -> None:
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


# -- extension functions --------------------------------------------------------------------------


def _lives_with(record: Message, code: str) -> bool:
    return any(m.code == code for m in record.members)  # type: ignore[attr-defined]


def _member_of_household(record: Message, code: str, relationship: str) -> bool:
    return any(
        m.code == code and m.relationship == relationship
        for m in record.members  # type: ignore[attr-defined]
    )


@dataclass(frozen=True)
class MemberFunction:
    """A CEL member function on an info item's payload type."""

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


def _function_decls() -> list[cel.FunctionDecl]:
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


# -- compilation ----------------------------------------------------------------------------------

Key = tuple[str | int, ...]
INPUT_FIELD = {
    "string": FDP.TYPE_STRING,
    "date": FDP.TYPE_STRING,
    "subject": FDP.TYPE_STRING,
    "org": FDP.TYPE_STRING,
    "integer": FDP.TYPE_INT64,
    "number": FDP.TYPE_DOUBLE,
    "boolean": FDP.TYPE_BOOL,
}


@dataclass
class CompiledBpf:
    """Every expression of one definition, compiled, with the message types it needs."""

    pool: descriptor_pool.DescriptorPool
    classes: dict[str, type[Message]] = field(default_factory=dict)
    exprs: dict[Key, cel.Expression] = field(default_factory=dict)
    sources: dict[Key, str] = field(default_factory=dict)
    step_types: dict[str, str] = field(default_factory=dict)
    inputs_type: str = ""
    errors: list[ExpressionError] = field(default_factory=list)

    def message(self, full_name: str, data: Mapping[str, Any]) -> Message:
        """A message of ``full_name`` built from JSON-shaped ``data``."""
        return json_format.ParseDict(
            dict(data), self.classes[full_name](), ignore_unknown_fields=False
        )

    def evaluate(self, key: Key, bindings: Mapping[str, Any]) -> Any:
        """Evaluate one expression; the result as plain JSON-shaped Python."""
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
    """CEL/protobuf values as JSON-shaped Python (ints stay ints)."""
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


class _Scope:
    """Declared names at one position of the definition; builds CEL environments lazily."""

    def __init__(self, compiled: CompiledBpf, base: dict[str, cel.Type]) -> None:
        self.compiled = compiled
        self.vars = dict(base)
        self._env: cel.Env | None = None

    def child(self) -> _Scope:
        s = _Scope(self.compiled, self.vars)
        return s

    def declare(self, name: str, t: cel.Type) -> None:
        self.vars[name] = t
        self._env = None

    def env(self) -> cel.Env:
        if self._env is None:
            self._env = cel.NewEnv(
                self.compiled.pool, variables=self.vars, functions=_function_decls()
            )
        return self._env

    def compile(self, key: Key, source: str, want: str | None = None) -> cel.Type | None:
        try:
            expr = self.env().compile(source)
        except Exception as err:
            self.compiled.errors.append(ExpressionError(key, _compile_message(str(err))))
            return None
        rt = expr.return_type()
        if want is not None and rt.name() not in (want, "DYN"):
            self.compiled.errors.append(
                ExpressionError(key, f"must be of type {want.lower()}, is {rt.name().lower()}")
            )
            return None
        self.compiled.exprs[key] = expr
        self.compiled.sources[key] = source
        return rt


def _compile_message(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    head = lines[0] if lines else text
    head = re.sub(r"^INVALID_ARGUMENT: ", "", head)
    head = re.sub(r"^ERROR: <input>:", "at ", head)
    return head.removesuffix(" [INVALID_ARGUMENT]")


def compile_definition(definition: BpfDefinition, info_schemas: Mapping[str, str]) -> CompiledBpf:
    """Compile every expression of ``definition``; problems are collected in ``errors``.

    ``info_schemas`` maps each info item the definition queries to its schema class name.
    """
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(struct_pb2.DESCRIPTOR.serialized_pb)
    pool.AddSerializedFile(timestamp_pb2.DESCRIPTOR.serialized_pb)
    compiled = CompiledBpf(pool=pool)

    info = descriptor_pb2.FileDescriptorProto(
        name="renkei/info.proto", package=INFO_PACKAGE, syntax="proto2"
    )
    done: set[str] = set()
    for schema in sorted({*info_schemas.values(), "ResidentRecord"}):
        _add_model(info, SCHEMAS.get(schema, GenericRecord), done)
    pool.Add(info)

    flow = descriptor_pb2.FileDescriptorProto(
        name="renkei/flow.proto", package="renkei.flow", syntax="proto2"
    )
    inputs = flow.message_type.add(name="Inputs")
    for number, (name, spec) in enumerate(definition.inputs.items(), start=1):
        inputs.field.add(
            name=name, number=number, type=INPUT_FIELD[spec.type], label=FDP.LABEL_OPTIONAL
        )
    pool.Add(flow)
    compiled.inputs_type = "renkei.flow.Inputs"

    def register(full: str) -> None:
        compiled.classes[full] = message_factory.GetMessageClass(pool.FindMessageTypeByName(full))

    for m in info.message_type:
        register(f"{INFO_PACKAGE}.{m.name}")
    register(compiled.inputs_type)

    scope = _Scope(
        compiled,
        {
            "inputs": cel.Type(compiled.inputs_type),
            "subject": cel.Type.STRING,
            "executor": cel.Type.STRING,
            "trigger": cel.Type.STRING,
            "now": cel.Type.TIMESTAMP,
            "steps": cel.Type.Map(cel.Type.STRING, cel.Type.DYN),
        },
    )
    _compile_steps(definition.steps, scope, info_schemas)
    for name, source in definition.result.items():
        scope.compile(("result", name), source)
    return compiled


def _compile_steps(steps: list[AnyStep], scope: _Scope, info_schemas: Mapping[str, str]) -> None:
    compiled = scope.compiled
    for step in steps:
        if isinstance(step, QueryStep):
            for fname in ("provider", "about"):
                src = embedded(getattr(step.query, fname))
                if src is not None:
                    scope.compile((step.id, fname), src, want="STRING")
            schema = info_schemas.get(step.query.info, "GenericRecord")
            full = f"{INFO_PACKAGE}.{SCHEMAS.get(schema, GenericRecord).__name__}"
            compiled.step_types[step.id] = full
            scope.declare(step.id, cel.Type(full))
        elif isinstance(step, SetStep):
            fdp = descriptor_pb2.FileDescriptorProto(
                name=f"renkei/set/{step.id}.proto",
                package="renkei.set",
                syntax="proto2",
                dependency=[
                    "google/protobuf/struct.proto",
                    "google/protobuf/timestamp.proto",
                    "renkei/info.proto",
                    "renkei/flow.proto",
                ],
            )
            msg = fdp.message_type.add(name=f"Set_{step.id}")
            for number, (name, source) in enumerate(step.set.items(), start=1):
                rt = scope.compile((step.id, "set", name), source)
                fld = msg.field.add(name=name, number=number, label=FDP.LABEL_OPTIONAL)
                if rt is None:
                    fld.type = FDP.TYPE_MESSAGE
                    fld.type_name = ".google.protobuf.Value"
                else:
                    _cel_type_to_field(rt, fld)
            compiled.pool.Add(fdp)
            full = f"renkei.set.Set_{step.id}"
            compiled.classes[full] = message_factory.GetMessageClass(
                compiled.pool.FindMessageTypeByName(full)
            )
            compiled.step_types[step.id] = full
            scope.declare(step.id, cel.Type(full))
        elif isinstance(step, WaitStep):
            fdp = descriptor_pb2.FileDescriptorProto(
                name=f"renkei/wait/{step.id}.proto", package="renkei.wait", syntax="proto2"
            )
            msg = fdp.message_type.add(name=f"Wait_{step.id}")
            fields = list(step.wait.fields.items())
            for number, (name, spec) in enumerate(fields, start=1):
                msg.field.add(
                    name=name, number=number, type=INPUT_FIELD[spec.type], label=FDP.LABEL_OPTIONAL
                )
            msg.field.add(
                name="timed_out",
                number=len(fields) + 1,
                type=FDP.TYPE_BOOL,
                label=FDP.LABEL_OPTIONAL,
            )
            compiled.pool.Add(fdp)
            full = f"renkei.wait.Wait_{step.id}"
            compiled.classes[full] = message_factory.GetMessageClass(
                compiled.pool.FindMessageTypeByName(full)
            )
            compiled.step_types[step.id] = full
            scope.declare(step.id, cel.Type(full))
        elif isinstance(step, SleepStep):
            if step.sleep.until is not None:
                scope.compile((step.id, "until"), step.sleep.until, want="TIMESTAMP")
        elif isinstance(step, CallStep):
            for name, source in step.call.inputs.items():
                scope.compile((step.id, "inputs", name), source)
            full = "google.protobuf.Struct"
            compiled.classes[full] = struct_pb2.Struct
            compiled.step_types[step.id] = full
            scope.declare(step.id, cel.Type.Map(cel.Type.STRING, cel.Type.DYN))
        elif isinstance(step, FailStep):
            src = embedded(step.fail.reason)
            if src is not None:
                scope.compile((step.id, "reason"), src, want="STRING")
        elif isinstance(step, ParallelStep):
            lanes = []
            for lane in step.parallel:
                child = scope.child()
                _compile_steps(lane, child, info_schemas)
                lanes.append(child)
            for child in lanes:  # a lane's outputs are visible after the parallel step ends
                for name, t in child.vars.items():
                    if name not in scope.vars:
                        scope.declare(name, t)
        elif isinstance(step, BranchStep):
            arms = []
            for index, arm in enumerate(step.branch):
                if isinstance(arm, WhenArm):
                    scope.compile((step.id, "when", index), arm.when, want="BOOL")
                    body = arm.steps
                else:
                    body = arm.otherwise
                child = scope.child()
                _compile_steps(body, child, info_schemas)
                arms.append(child)
            # Outputs of an arm may be absent after the branch: read them with has(steps.x).
            for child in arms:
                for name, t in child.vars.items():
                    if name not in scope.vars:
                        scope.declare(name, t)


_CACHE: dict[str, CompiledBpf] = {}
_LOCK = threading.Lock()


def compiled_for(
    content_hash: str, definition: BpfDefinition, info_schemas: Mapping[str, str]
) -> CompiledBpf:
    """The compiled program of a pinned definition, compiled once per process."""
    with _LOCK:
        found = _CACHE.get(content_hash)
        if found is None:
            found = compile_definition(definition, info_schemas)
            if len(_CACHE) > 256:
                _CACHE.clear()
            _CACHE[content_hash] = found
        return found
