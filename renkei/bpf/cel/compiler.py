"""Compiling a BPF's CEL expressions: each type-checked in the scope of its position.

Expressions are compiled by ``cel-expr-python`` (the CEL C++ runtime) against declared types
(:mod:`.types`) and the extension functions (:mod:`.functions`), before anything runs. Each
expression sees only the names in scope at its position: ``inputs``, ``subject``, ``executor``,
``trigger``, ``now``, ``steps`` (a map of every output so far, for ``has(steps.x)``) and the
ids of earlier steps; a lane's or an arm's outputs are visible after its ``parallel`` or
``branch`` step. The result is a :class:`CompiledBpf`: the definition's message types and its
compiled expressions, which evaluate at run time.

Validation compiles a definition to report its errors, with what it knows of the flows the
definition calls (:class:`CallShape`: a child's inputs are type-checked, a read of a result field
the child does not return is an error); the interpreter gets its compiled definition through
:mod:`.program`, where a child's result is a map read at run time. Domain code: imports no
``temporalio``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from cel_expr_python import cel
from google.protobuf import (
    descriptor_pb2,
    descriptor_pool,
    message_factory,
    struct_pb2,
    timestamp_pb2,
)

from renkei.bpf.cel.compiled import CompiledBpf
from renkei.bpf.cel.functions import function_decls
from renkei.bpf.cel.types import (
    FDP,
    INFO_PACKAGE,
    INPUT_FIELD,
    ExpressionError,
    Key,
    add_model,
    cel_type_to_field,
    embedded,
)
from renkei.bpf.models import (
    ActStep,
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
    did_you_mean,
)
from whitelist.payloads import SCHEMAS, GenericRecord

# The CEL types an expression may have to give a child flow's input of each declared type (an
# integer is a number too); ``DYN`` is always accepted and checked when the child starts.
CALL_INPUT_TYPES: dict[str, tuple[str, ...]] = {
    "string": ("STRING",),
    "date": ("STRING",),
    "subject": ("STRING",),
    "org": ("STRING",),
    "integer": ("INT", "UINT"),
    "number": ("DOUBLE", "INT", "UINT"),
    "boolean": ("BOOL",),
}
CALL_PACKAGE = "renkei.call"


@dataclass(frozen=True)
class CallShape:
    """What validation knows of the flow a ``call`` step runs.

    Attributes:
        bpf: The child's BPF id.
        inputs: The declared type of each of the child's inputs, by name.
        result: The names of the child's result fields.
    """

    bpf: str
    inputs: Mapping[str, str] = field(default_factory=dict)
    result: tuple[str, ...] = ()


class _Scope:
    """Declared names at one position of the definition; builds CEL environments lazily."""

    def __init__(
        self,
        compiled: CompiledBpf,
        base: dict[str, cel.Type],
        children: dict[str, str] | None = None,
    ) -> None:
        self.compiled = compiled
        self.vars = dict(base)
        # The called BPF of each call step's result message, by message name (for messages).
        self.children: dict[str, str] = {} if children is None else children
        self._env: cel.Env | None = None

    def child(self) -> _Scope:
        return _Scope(self.compiled, self.vars, self.children)

    def declare(self, name: str, t: cel.Type) -> None:
        self.vars[name] = t
        self._env = None

    def env(self) -> cel.Env:
        if self._env is None:
            self._env = cel.NewEnv(
                self.compiled.pool, variables=self.vars, functions=function_decls()
            )
        return self._env

    def compile(
        self, key: Key, source: str, want: str | tuple[str, ...] | None = None, what: str = ""
    ) -> cel.Type | None:
        try:
            expr = self.env().compile(source)
        except Exception as err:
            message = self._explain(_compile_message(str(err)))
            self.compiled.errors.append(ExpressionError(key, message))
            return None
        rt = expr.return_type()
        wanted = (want,) if isinstance(want, str) else want
        if wanted is not None and rt.name() not in (*wanted, "DYN"):
            self.compiled.errors.append(
                ExpressionError(
                    key,
                    f"{what}must be of type {' or '.join(w.lower() for w in wanted)},"
                    f" is {rt.name().lower()}",
                )
            )
            return None
        self.compiled.exprs[key] = expr
        self.compiled.sources[key] = source
        return rt

    def _explain(self, message: str) -> str:
        """``message``, with what the author probably meant: a name in scope, a field the
        message has, the result a child flow returns."""
        ref = re.search(r"undeclared reference to '([^'.]+)", message)
        if ref:
            return message + did_you_mean(ref.group(1), self.vars)
        undefined = re.search(r"undefined field '([^']+)' not found in struct '([^']+)'", message)
        if undefined:
            name, struct = undefined.groups()
            try:
                fields = [f.name for f in self.compiled.pool.FindMessageTypeByName(struct).fields]
            except KeyError:
                return message
            bpf = self.children.get(struct)
            if bpf is None:
                return message + did_you_mean(name, fields)
            step = struct.removeprefix(f"{CALL_PACKAGE}.Call_")
            return (
                f"{message[: undefined.start()]}{step} (a call of {bpf}) has no field {name!r}"
                f"{did_you_mean(name, fields)}: {bpf} returns {', '.join(fields) or 'nothing'}"
            )
        if f"({CALL_PACKAGE}." in message:
            return message + " (a child's result is read field by field: `step.field`)"
        return message


def _compile_message(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    head = lines[0] if lines else text
    head = re.sub(r"^INVALID_ARGUMENT: ", "", head)
    head = re.sub(r"^ERROR: <input>:", "at ", head)
    return head.removesuffix(" [INVALID_ARGUMENT]")


def compile_definition(
    definition: BpfDefinition,
    info_schemas: Mapping[str, str],
    calls: Mapping[str, CallShape] | None = None,
    act_requests: Mapping[str, Mapping[str, str]] | None = None,
) -> CompiledBpf:
    """Compile every expression of ``definition``; problems are collected in ``errors``.

    Args:
        definition: The definition.
        info_schemas: The schema class name of each info item the definition queries.
        calls: What validation knows of called flows, by call step id: their inputs are
            type-checked and their results typed by the result's names. Without it (at run time)
            a child's result is a map.
        act_requests: The declared type of each request field, by action (validation): an act
            step's ``send`` expressions are type-checked against them. ``info_schemas`` holds
            the schema of each action's receipt, the act step's output.

    Returns:
        The compiled definition; an expression that does not compile or type-check is in its
        ``errors`` (located by its key), not in its ``exprs``.
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
        add_model(info, SCHEMAS.get(schema, GenericRecord), done)
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
    _compile_steps(definition.steps, scope, info_schemas, calls or {}, act_requests or {})
    for name, source in definition.result.items():
        scope.compile(("result", name), source)
    return compiled


def _compile_steps(
    steps: list[AnyStep],
    scope: _Scope,
    info_schemas: Mapping[str, str],
    calls: Mapping[str, CallShape],
    act_requests: Mapping[str, Mapping[str, str]] | None = None,
) -> None:
    compiled = scope.compiled
    requests = act_requests or {}
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
        elif isinstance(step, ActStep):
            src = embedded(step.act.partner)
            if src is not None:
                scope.compile((step.id, "partner"), src, want="STRING")
            kinds = requests.get(step.act.action, {})
            for name, source in step.act.send.items():
                kind = kinds.get(name)
                scope.compile(
                    (step.id, "send", name),
                    source,
                    want=CALL_INPUT_TYPES[kind] if kind else None,
                    what=f"{step.act.action}'s field {name} is of type {kind}: ",
                )
            schema = info_schemas.get(step.act.action, "ActionReceipt")
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
                    cel_type_to_field(rt, fld)
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
            shape = calls.get(step.id)
            for name, source in step.call.inputs.items():
                kind = shape.inputs.get(name) if shape else None
                if shape is None or kind is None:
                    scope.compile((step.id, "inputs", name), source)
                else:
                    scope.compile(
                        (step.id, "inputs", name),
                        source,
                        want=CALL_INPUT_TYPES[kind],
                        what=f"{shape.bpf}'s input {name} is of type {kind}: ",
                    )
            if shape is not None:  # validation: a field the child does not return is an error
                scope.declare(step.id, cel.Type(_call_result(compiled, step.id, shape)))
                scope.children[f"{CALL_PACKAGE}.Call_{step.id}"] = shape.bpf
                continue
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
                _compile_steps(lane, child, info_schemas, calls, requests)
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
                _compile_steps(body, child, info_schemas, calls, requests)
                arms.append(child)
            # Outputs of an arm may be absent after the branch: read them with has(steps.x).
            for child in arms:
                for name, t in child.vars.items():
                    if name not in scope.vars:
                        scope.declare(name, t)


def _call_result(compiled: CompiledBpf, step_id: str, shape: CallShape) -> str:
    """A message with the child's result fields, each of any type (as a map read at run time)."""
    fdp = descriptor_pb2.FileDescriptorProto(
        name=f"renkei/call/{step_id}.proto",
        package=CALL_PACKAGE,
        syntax="proto2",
        dependency=["google/protobuf/struct.proto"],
    )
    msg = fdp.message_type.add(name=f"Call_{step_id}")
    for number, name in enumerate(shape.result, start=1):
        msg.field.add(
            name=name,
            number=number,
            type=FDP.TYPE_MESSAGE,
            type_name=".google.protobuf.Value",
            label=FDP.LABEL_OPTIONAL,
        )
    compiled.pool.Add(fdp)
    return f"{CALL_PACKAGE}.Call_{step_id}"
